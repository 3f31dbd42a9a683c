"""Modal: the app, image, volume and remote functions behind the ``--modal`` commands.

Everything that knows about Modal lives in this module; the rest of tinystories does not
import it. :func:`build_app` defines

* the **image**: Debian slim with the local Python version, build tools, torch, then this
  project's own wheel built inside the image from the local checkout (copied in with
  ``copy=True``), so the remote code is exactly the local code and the C engine is compiled
  for the remote machine;
* the **volume** (default ``tinystories-volume``, created if missing) mounted at ``/data``;
* three **functions**, each a thin wrapper over a body in this module that calls the same
  entry points as the local commands:

  - ``prepare`` (CPU): fetch a corpus URL into the volume (resumable), then
    :func:`tinystories.training.train.prepare_data` (vocabulary and shards, each skipped when
    already on the volume);
  - ``train`` (GPU, default T4): :func:`tinystories.training.train.train`, committing the
    volume after every checkpoint;
  - ``sample`` (CPU): :meth:`tinystories.Generator.stream`, streamed back piece by piece.

The bodies take the volume's root as an argument (the functions pass ``$TINYSTORIES_VOLUME_ROOT``,
default ``/data``), so tests run them through Modal's ``.local()`` against a temporary folder.
Paths handed to the functions are relative to the volume root.

Client side: :func:`run_training` and :func:`run_sampling` (the ``--modal`` paths of the two
CLIs), :func:`describe_plan` (``--dry-run``), and the volume tools behind
``python -m tinystories.volume`` (:func:`list_entries`, :func:`upload`, :func:`download`,
:func:`remove`, :func:`clean`), which take any object with Modal's ``Volume`` methods
``listdir``, ``read_file_into_fileobj``, ``batch_upload`` and ``remove_file``.

The functions are defined inside :func:`build_app` (the GPU, volume and timeouts are
per-command settings), so they are ``serialized=True``: the image runs the local Python
version, which cloudpickle needs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import modal
from modal.types import FileEntry, FileEntryType

APP_NAME = "tinystories"
DEFAULT_GPU = "T4"
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
    "csrc",
    "bindings",
    "python",
    "training",
)
MAX_TIMEOUT = 24 * 3600  # Modal's limit for one function call
# Files written by the model runs that downloads bring back to --out.
RESULT_FILES = ("model.bin", "tokenizer.bin", "metrics.jsonl")


class SourceNotFound(FileNotFoundError):
    """The project checkout the image is built from cannot be found."""


@dataclass(frozen=True)
class Settings:
    """Per-command choices: where the functions run and how long they may take (seconds)."""

    gpu: str = DEFAULT_GPU
    volume: str = DEFAULT_VOLUME
    source: Path | None = None
    train_timeout: int = 6 * 3600
    prepare_timeout: int = 2 * 3600
    sample_timeout: int = 10 * 60
    prepare_cpu: float = 4.0
    prepare_memory: int = 16 * 1024  # MiB: the full TinyStories is ~2 GB of text in memory
    python_version: str = f"{sys.version_info.major}.{sys.version_info.minor}"
    torch: str = TORCH_SPEC

    def __post_init__(self) -> None:
        for name in ("train_timeout", "prepare_timeout", "sample_timeout"):
            value = getattr(self, name)
            if not 10 <= value <= MAX_TIMEOUT:
                raise ValueError(f"{name} must be between 10 s and 24 h, not {value} s")


# --- the project source for the image ------------------------------------------------


def _is_checkout(path: Path) -> bool:
    pyproject = path / "pyproject.toml"
    if not pyproject.is_file():
        return False
    text = pyproject.read_text(encoding="utf-8", errors="replace")
    return 'name = "tinystories"' in text


def find_source(explicit: str | Path | None = None, cwd: Path | None = None) -> Path:
    """The tinystories checkout to build the image's wheel from.

    In order: ``explicit`` (``--source``), ``$TINYSTORIES_SOURCE``, then the current
    directory and its parents. The installed package is not enough: the image compiles the
    engine from the C sources, which wheels do not carry.
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
    where = candidates[0] if explicit is not None else f"{candidates[0]} or its parents"
    raise SourceNotFound(
        f"no tinystories checkout at {where}. The Modal image builds this project's wheel "
        "from its source: run the command from a checkout, or pass --source DIR "
        f"(or set {SOURCE_ENV}=DIR)."
    )


def _ignore_outside_sources(path: Path) -> bool:
    """add_local_dir's filter (``path`` relative to the checkout): only SOURCE_ITEMS go in."""
    parts = path.parts
    return (
        not parts
        or parts[0] not in SOURCE_ITEMS
        or "__pycache__" in parts
        or path.suffix in (".pyc", ".so", ".o")
    )


# --- the app ---------------------------------------------------------------------------


@dataclass
class ModalApp:
    """The Modal objects for one command, and what :func:`describe_plan` prints about them."""

    settings: Settings
    app: modal.App
    image: modal.Image
    volume: modal.Volume
    prepare: modal.Function
    train: modal.Function
    sample: modal.Function
    image_steps: list[str] = field(default_factory=list)


BUILD_WHEEL = f"python -m pip wheel --no-deps --wheel-dir {REMOTE_WHEELS} {REMOTE_SOURCE}"
INSTALL_WHEEL = f'python -m pip install "$(ls {REMOTE_WHEELS}/tinystories-*.whl)[train]"'
CHECK_WHEEL = "python -c 'import tinystories, tinystories._core; print(tinystories.__file__)'"


def build_image(settings: Settings) -> tuple[modal.Image, list[str]]:
    """The image and a line per step. Lazy: nothing is uploaded or built until a run."""
    if settings.source is None:
        raise SourceNotFound("Settings.source is not set (see find_source)")
    source = Path(settings.source)
    steps = [f"Debian slim with Python {settings.python_version} (the local version)"]
    image = modal.Image.debian_slim(python_version=settings.python_version)
    steps.append(
        f"apt-get install {' '.join(APT_PACKAGES)} (compilers for the C engine, torch.compile)"
    )
    image = image.apt_install(*APT_PACKAGES)
    steps.append(f"pip install {settings.torch} (CUDA build)")
    image = image.pip_install(settings.torch)
    steps.append(f"copy {source} ({', '.join(SOURCE_ITEMS)}) to {REMOTE_SOURCE}")
    image = image.add_local_dir(source, REMOTE_SOURCE, copy=True, ignore=_ignore_outside_sources)
    steps.append(f"build this project's wheel: {BUILD_WHEEL}")
    steps.append(f"install it with the train extra: {INSTALL_WHEEL}")
    image = image.run_commands(BUILD_WHEEL, INSTALL_WHEEL, CHECK_WHEEL)
    steps.append(f"{ROOT_ENV}={MOUNT}")
    image = image.env({ROOT_ENV: MOUNT})
    return image, steps


def build_app(settings: Settings) -> ModalApp:
    """Defines the app, image, volume and functions for ``settings``; contacts nothing."""
    image, steps = build_image(settings)
    app = modal.App(APP_NAME, include_source=False)  # the code comes with the wheel
    volume = modal.Volume.from_name(settings.volume, create_if_missing=True)
    mounts = {MOUNT: volume}
    volume_name = settings.volume

    @app.function(
        image=image,
        volumes=mounts,
        cpu=settings.prepare_cpu,
        memory=settings.prepare_memory,
        timeout=settings.prepare_timeout,
        serialized=True,
        name="prepare",
    )
    def prepare(config: dict, fetch: list[dict]) -> dict:
        return prepare_body(config, fetch, root=volume_root(), commit=committer(volume_name))

    @app.function(
        image=image,
        volumes=mounts,
        gpu=settings.gpu,
        timeout=settings.train_timeout,
        serialized=True,
        name="train",
    )
    def train(config: dict) -> dict:
        root = volume_root()
        config = resume_if_rescheduled(config, root)
        return train_body(config, root=root, commit=committer(volume_name))

    @app.function(
        image=image,
        volumes=mounts,
        timeout=settings.sample_timeout,
        serialized=True,
        name="sample",
    )
    def sample(model: str, tokenizer: str, prompt: str, options: dict) -> Iterator[str]:
        yield from sample_body(model, tokenizer, prompt, options, root=volume_root())

    return ModalApp(settings, app, image, volume, prepare, train, sample, steps)


# --- the function bodies (run in the container, or locally through .local()) ------------


def volume_root() -> Path:
    """Where the volume is mounted: ``$TINYSTORIES_VOLUME_ROOT``, default ``/data``."""
    return Path(os.environ.get(ROOT_ENV, MOUNT))


def committer(volume_name: str) -> Callable[[], None]:
    """Commits the volume when running in a Modal container; does nothing elsewhere
    (``.local()`` has no volume to commit)."""

    def commit() -> None:
        if not modal.is_local():
            modal.Volume.from_name(volume_name).commit()

    return commit


def volume_path(path: str, what: str = "path") -> str:
    """``path`` as a normalized path relative to the volume root; refuses ``..``."""
    parts = [p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("/", ".")]
    if ".." in parts:
        raise ValueError(f"{what} {path!r}: '..' is not allowed on the volume")
    return "/".join(parts)


PATH_FIELDS = ("data", "val_data", "out_dir", "data_dir")


def resolve_paths(config: dict, root: Path) -> dict:
    """TrainConfig keyword arguments with their volume-relative paths made absolute."""
    resolved = dict(config)
    for name in PATH_FIELDS:
        value = resolved.get(name)
        if value:
            resolved[name] = str(root / volume_path(value, name))
    return resolved


def prepare_body(
    config: dict,
    fetch: Sequence[dict],
    *,
    root: Path,
    commit: Callable[[], None] = lambda: None,
    log: Callable[[str], None] = print,
) -> dict:
    """Fetches corpus URLs into the volume (skipped when there, resumed when partial), then
    trains the vocabulary and pretokenizes when they are missing; commits after each step."""
    from .download import download
    from .training.train import TrainConfig, prepare_data

    for item in fetch:
        dest = root / volume_path(item["dest"], "download")
        if dest.exists():
            log(f"have {dest}")
            continue
        log(f"downloading {item['url']} to {dest}")
        download(item["url"], dest, progress=bool(config.get("progress", True)))
        commit()
    train_config = TrainConfig(**resolve_paths(config, root))
    vocab_model, vocab_bin, train_shards, val_shards = prepare_data(train_config, log)
    commit()
    log(
        f"data ready: {vocab_bin.relative_to(root)}, {train_shards.n_tokens:,} train and "
        f"{val_shards.n_tokens:,} val tokens"
    )
    return {
        "tokenizer": str(vocab_bin.relative_to(root)),
        "train_tokens": int(train_shards.n_tokens),
        "val_tokens": int(val_shards.n_tokens),
    }


def train_body(
    config: dict,
    *,
    root: Path,
    commit: Callable[[], None] = lambda: None,
    log: Callable[[str], None] = print,
) -> dict:
    """:func:`tinystories.training.train.train` with the volume committed after every
    checkpoint and after the export; returns a summary with volume-relative paths."""
    from .training.train import TrainConfig, train

    result = train(
        TrainConfig(**resolve_paths(config, root)), log=log, on_checkpoint=lambda path: commit()
    )
    return {
        "iters": result.iters,
        "final_loss": result.final_loss,
        "final_val_loss": result.final_val_loss,
        "tokens_per_sec": result.tokens_per_sec,
        "out_dir": str(result.out_dir.relative_to(root)),
        "model": str(result.model_path.relative_to(root)),
        "tokenizer": str(result.tokenizer_path.relative_to(root)),
    }


def resume_if_rescheduled(config: dict, root: Path) -> dict:
    """A call that Modal restarts (preemption) resumes from its own checkpoint instead of
    starting over: the first attempt writes its call id beside the checkpoint."""
    call_id = modal.current_function_call_id()
    if not call_id or config.get("resume"):
        return config
    out = root / volume_path(config.get("out_dir") or "out", "out_dir")
    marker = out / ".modal-call"
    if marker.is_file() and marker.read_text() == call_id and (out / "ckpt.pt").is_file():
        print(f"restarted call {call_id}: resuming from {out / 'ckpt.pt'}")
        return {**config, "resume": True}
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(call_id)
    return config


def sample_body(
    model: str, tokenizer: str, prompt: str, options: dict, *, root: Path
) -> Iterator[str]:
    """:meth:`Generator.stream` on files of the volume (arguments checked before the first
    piece). Imports neither torch nor modal's runtime beyond this module."""
    from .generator import Generator

    generator = Generator(
        root / volume_path(model, "model"), root / volume_path(tokenizer, "tokenizer")
    )
    yield from generator.stream(prompt, **options)


# --- the client side: plans, training and sampling runs ------------------------------


@dataclass
class DataPlan:
    """Where one ``--data``/``--val-data`` value comes from and where it lands on the volume."""

    flag: str
    value: str
    dest: str  # relative to the volume root; what the remote TrainConfig gets
    upload: Path | None = None
    url: str | None = None

    def describe(self) -> str:
        where = f"{MOUNT}/{self.dest}"
        if self.upload is not None:
            size = _tree_size(self.upload)
            return (
                f"{self.flag}: upload {self.upload} ({_human(size)}) to {where}, skipped "
                "when already there (the folder name is a hash of the content)"
            )
        if self.url is not None:
            return (
                f"{self.flag}: the prepare function downloads {self.url} to {where} "
                "(skipped when there, resumed when partial)"
            )
        return f"{self.flag}: {where}, already on the volume"


def content_digest(path: Path) -> str:
    """A short sha256 of a file, or of a folder's file names and contents."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() if file != path else b"")
        digest.update(b"\0")
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def plan_data(flag: str, value: str | None) -> DataPlan | None:
    """``value`` is ``volume:PATH`` (already on the volume), a named source of
    ``python -m tinystories.data download`` (e.g. ``tinystories``) or a URL (fetched
    remotely), or a local corpus (uploaded)."""
    if not value:
        return None
    if value.startswith("volume:"):
        return DataPlan(flag, value, volume_path(value[len("volume:") :], flag))
    from .training.data import SOURCES

    url = SOURCES.get(value, value)
    if "://" in url:
        name = url.rsplit("/", 1)[-1].split("?")[0] or "corpus"
        return DataPlan(flag, value, f"downloads/{name}", url=url)
    path = Path(value).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"{flag} {value}: no such local file or folder (give a local corpus, a named "
            f"source ({', '.join(SOURCES)}), a URL, or volume:PATH)"
        )
    return DataPlan(flag, value, f"corpus/{content_digest(path)}/{path.name}", upload=path)


def remote_dir(local: str) -> str:
    """The volume folder for a local ``--out``/``--data-dir``: the same relative path, or the
    last component of an absolute one."""
    path = PurePosixPath(local.replace("\\", "/"))
    if path.is_absolute():
        path = PurePosixPath(path.name)
    return volume_path(str(path), "output folder") or "out"


@dataclass
class TrainingPlan:
    config: dict  # TrainConfig keyword arguments, paths relative to the volume root
    data: list[DataPlan]
    local_out: Path
    download: bool

    @property
    def fetch(self) -> list[dict]:
        return [{"url": d.url, "dest": d.dest} for d in self.data if d.url is not None]


def plan_training(
    train_kwargs: dict, *, out: str, data_dir: str | None, download: bool = True
) -> TrainingPlan:
    """Maps the local command's TrainConfig arguments onto the volume."""
    config = dict(train_kwargs)
    plans = []
    for name, flag in (("data", "--data"), ("val_data", "--val-data")):
        plan = plan_data(flag, config.get(name))
        config[name] = plan.dest if plan else (config.get(name) or ("" if name == "data" else None))
        if plan:
            plans.append(plan)
    config["out_dir"] = remote_dir(out)
    config["data_dir"] = remote_dir(data_dir) if data_dir else None
    return TrainingPlan(config, plans, Path(out), download)


def _fmt_time(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def describe_plan(ma: ModalApp, training: TrainingPlan | None = None) -> str:
    """What a run will do: image steps, volume, functions with GPU and timeouts, this run."""
    s = ma.settings
    lines = [
        "Modal plan (dry run: nothing is built, uploaded or started; no credentials needed)",
        f"app:      {APP_NAME} (ephemeral: it exists for the duration of the command)",
        f"volume:   {s.volume} (created if missing), mounted at {MOUNT}",
        "image:",
    ]
    lines += [f"  {i}. {step}" for i, step in enumerate(ma.image_steps, 1)]
    lines += [
        "functions:",
        f"  prepare  no GPU, {s.prepare_cpu:g} CPUs, {s.prepare_memory // 1024} GiB, "
        f"timeout {_fmt_time(s.prepare_timeout)}: "
        "download a corpus URL into the volume, train the vocabulary and pretokenize when "
        "missing (tinystories.training.train.prepare_data); commits the volume",
        f"  train    GPU {s.gpu}, timeout {_fmt_time(s.train_timeout)}: "
        "tinystories.training.train.train(TrainConfig) on the volume, committing after every "
        "checkpoint; a restarted (preempted) call resumes from its checkpoint",
        f"  sample   no GPU, timeout {_fmt_time(s.sample_timeout)}: "
        "tinystories.Generator(model, tokenizer).stream(prompt) on the volume, piece by piece",
    ]
    if training is not None:
        c = training.config
        out = f"{MOUNT}/{c['out_dir']}"
        lines.append("this run:")
        lines += [f"  {d.describe()}" for d in training.data]
        if not training.data:
            lines.append(
                f"  data: vocabulary and shards already on the volume "
                f"({MOUNT}/{c['data_dir'] or c['out_dir'] + '/data'})"
            )
        lines.append(
            f"  1. prepare: vocabulary and shards in "
            f"{MOUNT}/{c['data_dir'] or c['out_dir'] + '/data'}"
        )
        resume = f"resume from {out}/ckpt.pt" if c.get("resume") else "start from scratch"
        lines.append(
            f"  2. train on {s.gpu}: {c.get('max_iters')} iterations, {resume}; "
            f"ckpt.pt, metrics.jsonl, model.bin, tokenizer.bin in {out}"
        )
        if training.download:
            lines.append(
                f"  3. download {', '.join(RESULT_FILES)} from {out} to {training.local_out}"
            )
        else:
            lines.append(f"  3. no download (--no-download): the files stay in {out}")
        settings = ", ".join(
            f"{k}={v}" for k, v in sorted(c.items()) if v not in (None, "") and k not in PATH_FIELDS
        )
        lines.append(f"  config: {settings}")
    return "\n".join(lines)


def run_training(
    train_kwargs: dict,
    settings: Settings,
    *,
    out: str,
    data_dir: str | None = None,
    download: bool = True,
    dry_run: bool = False,
    log: Callable[[str], None] = print,
) -> int:
    """``python -m tinystories.train --modal``: upload or plan the data, run prepare and
    train remotely with logs streamed here, then download the results to ``out``."""
    plan = plan_training(train_kwargs, out=out, data_dir=data_dir, download=download)
    ma = build_app(settings)
    if dry_run:
        log(describe_plan(ma, plan))
        return 0
    try:
        for data in plan.data:
            if data.upload is not None:
                upload(ma.volume, data.upload, data.dest, skip_existing=True, log=log)
        with modal.enable_output(), ma.app.run():
            ma.prepare.remote(plan.config, plan.fetch)
            result = ma.train.remote(plan.config)
        val = result["final_val_loss"]
        log(
            f"done on Modal: {result['iters']} iterations"
            + (f", val loss {val:.4f}" if val is not None else "")
            + f"; {MOUNT}/{result['model']} on volume {settings.volume}"
        )
        if download:
            for name in RESULT_FILES:
                remote = f"{result['out_dir']}/{name}"
                download_file(ma.volume, remote, plan.local_out / name, log=log)
            log(f"wrote {plan.local_out / 'model.bin'} and {plan.local_out / 'tokenizer.bin'}")
    except modal.exception.Error as err:
        print(f"error: Modal: {err}", file=sys.stderr)
        return 1
    return 0


def run_sampling(
    settings: Settings,
    model: str,
    tokenizer: str | None,
    prompt: str,
    options: dict,
    out=None,
) -> int:
    """``python -m tinystories generate --modal``: streams a story from the volume's model.
    As locally, nothing is printed before the remote side has checked its arguments."""
    out = out or sys.stdout
    model = volume_path(model, "--model-path")
    if tokenizer:
        tokenizer = volume_path(tokenizer, "--tokenizer")
    else:
        tokenizer = str(PurePosixPath(model).with_name("tokenizer.bin"))
    ma = build_app(settings)
    try:
        with modal.enable_output(), ma.app.run():
            pieces = iter(ma.sample.remote_gen(model, tokenizer, prompt, options))
            first = next(pieces, "")
            out.write(prompt + first)
            out.flush()
            for piece in pieces:
                out.write(piece)
                out.flush()
    except modal.exception.Error as err:
        print(f"error: Modal: {err}", file=sys.stderr)
        return 1
    out.write("\n")
    return 0


# --- volume tools ---------------------------------------------------------------------


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _not_found(volume, path: str) -> bool:
    try:
        volume.listdir(path)
    except (modal.exception.NotFoundError, FileNotFoundError):
        return True
    return False


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return nullcontext(None)
    try:
        from tqdm import tqdm
    except ImportError:
        return nullcontext(None)
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024)


def list_entries(volume, path: str = "", recursive: bool = False) -> list[FileEntry]:
    """The entries under ``path`` (a file: that file), sorted by path."""
    entries = volume.listdir(volume_path(path) or "/", recursive=recursive)
    return sorted(entries, key=lambda e: e.path)


def format_entries(entries: Sequence[FileEntry]) -> str:
    rows = []
    for e in entries:
        kind = "/" if e.type == FileEntryType.DIRECTORY else ""
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.mtime)) if e.mtime else ""
        size = _human(e.size) if e.type == FileEntryType.FILE else "-"
        rows.append(f"{size:>10}  {when:16}  {e.path.lstrip('/')}{kind}")
    return "\n".join(rows)


def upload(
    volume,
    local: str | Path,
    remote: str,
    *,
    force: bool = False,
    skip_existing: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> bool:
    """Uploads a file or a folder to ``remote``, one batch per file with a byte-count bar.
    Returns False when ``skip_existing`` and ``remote`` is already there."""
    local = Path(local)
    if not local.exists():
        raise FileNotFoundError(f"no such file or folder: {local}")
    remote = volume_path(remote, "remote path")
    if not remote:
        raise ValueError("give a remote path for the upload")
    if skip_existing and not _not_found(volume, remote):
        log(f"have {MOUNT}/{remote} on the volume; not uploading {local}")
        return False
    if local.is_file():
        files = [(local, remote)]
    else:
        files = [
            (p, f"{remote}/{p.relative_to(local).as_posix()}")
            for p in sorted(local.rglob("*"))
            if p.is_file()
        ]
    total = sum(p.stat().st_size for p, _ in files)
    log(f"uploading {local} ({_human(total)}, {len(files)} file(s)) to {MOUNT}/{remote}")
    start = time.perf_counter()
    with _progress_bar(total, "upload", progress) as bar:
        for path, dest in files:
            with volume.batch_upload(force=force) as batch:
                batch.put_file(path, dest)
            if bar is not None:
                bar.update(path.stat().st_size)
    seconds = max(time.perf_counter() - start, 1e-6)
    log(f"uploaded {_human(total)} in {seconds:.1f} s ({_human(total / seconds)}/s)")
    return True


class _CountingWriter:
    """A file object that advances a progress bar as bytes are written to it."""

    def __init__(self, file, bar) -> None:
        self._file, self._bar = file, bar

    def write(self, data: bytes) -> int:
        n = self._file.write(data)
        if self._bar is not None:
            self._bar.update(len(data))
        return n

    def flush(self) -> None:
        self._file.flush()


def download_file(
    volume,
    remote: str,
    local: str | Path,
    *,
    size: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """One file from the volume, written to ``local + '.part'`` then renamed."""
    remote = volume_path(remote, "remote path")
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    if size is None:
        entries = [e for e in volume.listdir(remote) if e.type == FileEntryType.FILE]
        size = entries[0].size if len(entries) == 1 else 0
    part = local.with_name(local.name + ".part")
    with open(part, "wb") as f, _progress_bar(size, local.name, progress) as bar:
        volume.read_file_into_fileobj(remote, _CountingWriter(f, bar))
    os.replace(part, local)
    log(f"downloaded {MOUNT}/{remote} to {local}")
    return local


def download(
    volume,
    remote: str,
    local: str | Path = ".",
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """A file or a folder from the volume. A file goes to ``local`` (or into it when it is a
    folder); a folder's files go under ``local`` keeping their relative paths."""
    remote = volume_path(remote, "remote path")
    local = Path(local)
    entries = [
        e for e in volume.listdir(remote or "/", recursive=True) if e.type == FileEntryType.FILE
    ]
    if len(entries) == 1 and entries[0].path.strip("/") == remote:
        target = local / PurePosixPath(remote).name if local.is_dir() else local
        return [
            download_file(volume, remote, target, size=entries[0].size, progress=progress, log=log)
        ]
    written = []
    for e in entries:
        path = e.path.strip("/")
        relative = PurePosixPath(path).relative_to(remote) if remote else PurePosixPath(path)
        written.append(
            download_file(volume, path, local / relative, size=e.size, progress=progress, log=log)
        )
    return written


def remove(
    volume, path: str, *, recursive: bool = False, log: Callable[[str], None] = print
) -> None:
    path = volume_path(path, "path")
    if not path:
        raise ValueError("refusing to remove the volume root; use `clean --all`")
    volume.remove_file(path, recursive=recursive)
    log(f"removed {MOUNT}/{path}")


CLEAN_PARTIAL = ("*.part", "*.tmp")  # interrupted downloads and checkpoint writes
CLEAN_CHECKPOINTS = ("ckpt.pt", ".modal-call")


def clean_candidates(
    volume, *, checkpoints: bool = False, everything: bool = False
) -> list[FileEntry]:
    """What :func:`clean` would remove: partial files, plus checkpoints, or everything
    (then the top-level entries)."""
    entries = volume.listdir("/", recursive=True)
    if everything:
        return [e for e in entries if "/" not in e.path.strip("/")]
    patterns = CLEAN_PARTIAL + (CLEAN_CHECKPOINTS if checkpoints else ())
    return [
        e
        for e in entries
        if e.type == FileEntryType.FILE
        and any(fnmatch.fnmatch(PurePosixPath(e.path).name, p) for p in patterns)
    ]


def clean(
    volume,
    *,
    checkpoints: bool = False,
    everything: bool = False,
    yes: bool = False,
    confirm: Callable[[str], str] | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Removes leftovers (``*.part``, ``*.tmp``), with ``checkpoints`` the ``ckpt.pt`` files
    too, with ``everything`` all of the volume; lists them and asks unless ``yes``."""
    doomed = clean_candidates(volume, checkpoints=checkpoints, everything=everything)
    if not doomed:
        log("nothing to clean")
        return 0
    log(format_entries(doomed))
    question = f"remove these {len(doomed)} entries from {MOUNT}? [y/N] "
    if not yes and (confirm or input)(question).strip().lower() not in ("y", "yes"):
        log("nothing removed")
        return 1
    for e in doomed:
        volume.remove_file(e.path.strip("/"), recursive=e.type == FileEntryType.DIRECTORY)
    log(f"removed {len(doomed)} entries")
    return 0
