"""Modal settings and their defaults, importable without the ``modal`` package.

The command line (``--gpu``, ``--volume``, ``--timeout-hours``), ``python -m
tinystories.volume`` and the Modal modules all read the defaults from here, so each is
written once. Also here: where the project checkout is (:func:`find_source`) and paths on
the volume (:func:`volume_path`), which need nothing of Modal either.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

APP_NAME = "tinystories"
DEFAULT_GPU = "T4"
# Modal's GPU types (any case); "T4:2" asks for two.
GPU_TYPES = ("T4", "L4", "A10G", "A100", "A100-80GB", "L40S", "H100", "H200", "B200")
MAX_GPU_COUNT = 8
DEFAULT_VOLUME = "tinystories-volume"
MOUNT = "/data"
ROOT_ENV = "TINYSTORIES_VOLUME_ROOT"  # where the bodies find the volume (tests: a temp dir)
SOURCE_ENV = "TINYSTORIES_SOURCE"  # the checkout the image is built from
REMOTE_SOURCE = "/root/tinystories"
REMOTE_WHEELS = "/root/wheels"
# The torch the tests run with; from PyPI on Linux this is the CUDA build (T4 = sm_75).
TORCH_SPEC = "torch==2.13.0"
APT_PACKAGES = ("build-essential", "cmake")
# What the wheel is built from: everything else in the checkout (.git, .venv, build/, out/,
# data) stays local.
SOURCE_ITEMS = (
    "pyproject.toml",
    "CMakeLists.txt",
    "cmake",
    "README.md",
    "LICENSE",
    "csrc",
    "bindings",
    "python",
    "training",
)
MAX_TIMEOUT = 24 * 3600  # Modal's limit for one function call
DEFAULT_TRAIN_TIMEOUT = 6 * 3600  # seconds; --timeout-hours
# Files written by the model runs that downloads bring back to --out.
RESULT_FILES = ("model.bin", "tokenizer.bin", "metrics.jsonl")
# The TrainConfig fields that are paths: relative to the volume root on the client side.
PATH_FIELDS = ("data", "val_data", "out_dir", "data_dir", "tensorboard_dir")


class SourceNotFound(FileNotFoundError):
    """The project checkout the image is built from cannot be found."""


@dataclass(frozen=True)
class Settings:
    """Per-command choices: where the functions run and how long they may take (seconds)."""

    gpu: str = DEFAULT_GPU
    volume: str = DEFAULT_VOLUME
    source: Path | None = None
    train_timeout: int = DEFAULT_TRAIN_TIMEOUT
    prepare_timeout: int = 2 * 3600
    sample_timeout: int = 10 * 60
    prepare_cpu: float = 4.0
    prepare_memory: int = 16 * 1024  # MiB: the full TinyStories is ~2 GB of text in memory
    python_version: str = f"{sys.version_info.major}.{sys.version_info.minor}"
    torch: str = TORCH_SPEC

    def __post_init__(self) -> None:
        check_gpu(self.gpu)
        for name in ("train_timeout", "prepare_timeout", "sample_timeout"):
            value = getattr(self, name)
            if not 10 <= value <= MAX_TIMEOUT:
                raise ValueError(f"{name} must be between 10 s and 24 h, not {value} s")


SERVE_APP_NAME = "tinystories-serve"  # serve --modal deploys an app of its own


@dataclass(frozen=True)
class ServeSettings:
    """What ``tinystories serve --modal`` deploys."""

    model: str | None = None  # on the volume; None: the bundled model
    tokenizer: str | None = None  # None: tokenizer.bin beside the model
    name: str | None = None  # the model id clients pass
    parallel: int = 32  # sequences batched together in a container
    concurrent: int = 64  # requests a container takes at once (@modal.concurrent)
    min_containers: int = 0
    max_containers: int = 4
    scaledown_window: int = 300  # seconds idle before a container stops

    def __post_init__(self) -> None:
        for field_name in ("parallel", "concurrent", "max_containers"):
            if getattr(self, field_name) < 1:
                raise ValueError(f"{field_name} must be >= 1, got {getattr(self, field_name)}")
        if not 0 <= self.min_containers <= self.max_containers:
            raise ValueError(
                f"min_containers must be in [0, max_containers = {self.max_containers}], "
                f"got {self.min_containers}"
            )
        if not 2 <= self.scaledown_window <= 3600:
            raise ValueError(f"scaledown_window must be 2 s to 1 h, got {self.scaledown_window}")


def check_gpu(spec: str) -> None:
    """Raises ValueError unless ``spec`` is one of GPU_TYPES, optionally with ``:N`` GPUs
    (1 to MAX_GPU_COUNT)."""
    name, colon, count = spec.partition(":")
    if name.upper() not in GPU_TYPES:
        raise ValueError(f"--gpu {spec!r}: the GPU types are {', '.join(GPU_TYPES)}")
    if colon and not (count.isdigit() and 1 <= int(count) <= MAX_GPU_COUNT):
        raise ValueError(f"--gpu {spec!r}: the count after ':' must be 1 to {MAX_GPU_COUNT}")


def _is_checkout(path: Path) -> bool:
    pyproject = path / "pyproject.toml"
    if not pyproject.is_file():
        return False
    text = pyproject.read_text(encoding="utf-8", errors="replace")
    return 'name = "tinystories"' in text


def shipped_source() -> Path | None:
    """The sources the installed wheel carries (``tinystories/_source``), when complete."""
    path = Path(__file__).resolve().parents[1] / "_source"
    if _is_checkout(path) and all((path / item).exists() for item in SOURCE_ITEMS):
        return path
    return None


def is_shipped_source(path: Path) -> bool:
    shipped = shipped_source()
    return shipped is not None and Path(path).resolve() == shipped


def find_source(explicit: str | Path | None = None, cwd: Path | None = None) -> Path:
    """The tinystories sources to build the image's wheel from.

    In order: ``explicit`` (``--source``), ``$TINYSTORIES_SOURCE``, the current directory
    and its parents when one is a checkout, else the sources the installed wheel carries
    (:func:`shipped_source`). The image compiles the engine from the C sources.
    """
    if explicit is None:
        explicit = os.environ.get(SOURCE_ENV) or None
    if explicit is not None:
        candidates = [Path(explicit).expanduser().resolve()]
    else:
        start = (cwd or Path.cwd()).resolve()
        candidates = [start, *start.parents]
    for path in candidates:
        if _is_checkout(path):
            missing = [item for item in SOURCE_ITEMS if not (path / item).exists()]
            if missing:
                raise SourceNotFound(f"{path} is not a complete checkout: no {', '.join(missing)}")
            return path
    if explicit is None and (shipped := shipped_source()) is not None:
        return shipped
    where = candidates[0] if explicit is not None else f"{candidates[0]} or its parents"
    raise SourceNotFound(
        f"no tinystories checkout at {where}, and the installed package carries no sources. "
        "The Modal image builds this project's wheel from its source: run the command from "
        f"a checkout, or pass --source DIR (or set {SOURCE_ENV}=DIR)."
    )


def volume_path(path: str, what: str = "path") -> str:
    """``path`` as a normalized path relative to the volume root; refuses ``..``."""
    parts = [p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("/", ".")]
    if ".." in parts:
        raise ValueError(f"{what} {path!r}: '..' is not allowed on the volume")
    return "/".join(parts)
