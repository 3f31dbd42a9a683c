"""Pretrained llama2.c checkpoints: the bundled default model and a download cache.

``Generator()`` uses the model bundled in the wheel (no network);
``Generator.from_pretrained(NAME)`` and ``tinystories download NAME`` fetch one
of :data:`REGISTRY` into the cache:

* the cache is ``~/.cache/tinystories`` (``$TINYSTORIES_CACHE`` or ``cache_dir``
  overrides it); files keep their :attr:`RemoteFile.path` there, so a tokenizer
  shared by several models is downloaded once;
* a download shows a progress bar, resumes a partial ``.part`` file with an HTTP
  Range request, is checked against the recorded byte size and then by the C
  engine (loading validates the header against the file size), and only then
  renamed into place;
* a cached file is checked the same way before every use; ``offline=True`` reads
  only the cache and says which files are missing;
* ``$TINYSTORIES_MIRROR`` (a base URL) replaces every file's URL by
  ``MIRROR/PATH``: a local mirror, or the loopback server of the tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from . import _core
from .download import DownloadError, download

__all__ = [
    "REGISTRY",
    "Pretrained",
    "PretrainedError",
    "RemoteFile",
    "cache_root",
    "default_model",
    "fetch",
    "fetch_model",
]

_HF = "https://huggingface.co/karpathy/tinyllamas/resolve/main"
_LLAMA2C = "https://github.com/karpathy/llama2.c/raw/master"
_TOK105 = "https://huggingface.co/datasets/enio/TinyStories/resolve/main/tok105"


class PretrainedError(OSError):
    """A pretrained model that cannot be used: unknown, missing offline, or corrupt."""


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file."""

    path: str  # where it lives in the cache (and under $TINYSTORIES_MIRROR)
    url: str
    size: int | None  # exact bytes where confirmed; None: the engine's header check alone
    kind: str  # "model" | "tokenizer" | "sentencepiece"


@dataclass(frozen=True)
class Pretrained:
    """A registry entry: a model file and its tokenizer (or a vocabulary alone)."""

    name: str
    description: str
    tokenizer: RemoteFile
    model: RemoteFile | None = None
    extra: tuple[RemoteFile, ...] = ()

    @property
    def files(self) -> tuple[RemoteFile, ...]:
        return ((self.model,) if self.model else ()) + (self.tokenizer,) + self.extra


_TOKENIZER_32000 = RemoteFile(
    "llama2.c/tokenizer.bin", f"{_LLAMA2C}/tokenizer.bin", None, "tokenizer"
)

# Sizes: the Git LFS pointers of karpathy/tinyllamas ("size ..." in the commits that
# added the files); None where only a rounded size is published (the C engine still
# checks the header against the file size).
REGISTRY: dict[str, Pretrained] = {
    p.name: p
    for p in [
        Pretrained(
            "stories260K",
            "260K parameters, vocab 512 (karpathy/tinyllamas), ~1 MB",
            model=RemoteFile(
                "tinyllamas/stories260K/stories260K.bin",
                f"{_HF}/stories260K/stories260K.bin",
                None,
                "model",
            ),
            tokenizer=RemoteFile(
                "tinyllamas/stories260K/tok512.bin",
                f"{_HF}/stories260K/tok512.bin",
                None,
                "tokenizer",
            ),
        ),
        Pretrained(
            "stories15M",
            "15M parameters, Llama 2 vocab 32000 (karpathy/tinyllamas), 61 MB",
            model=RemoteFile(
                "tinyllamas/stories15M.bin", f"{_HF}/stories15M.bin", 60_816_028, "model"
            ),
            tokenizer=_TOKENIZER_32000,
        ),
        Pretrained(
            "stories42M",
            "42M parameters, Llama 2 vocab 32000 (karpathy/tinyllamas), 167 MB",
            model=RemoteFile(
                "tinyllamas/stories42M.bin", f"{_HF}/stories42M.bin", 167_020_572, "model"
            ),
            tokenizer=_TOKENIZER_32000,
        ),
        Pretrained(
            "stories110M",
            "110M parameters, Llama 2 vocab 32000 (karpathy/tinyllamas), 438 MB",
            model=RemoteFile(
                "tinyllamas/stories110M.bin", f"{_HF}/stories110M.bin", 438_381_596, "model"
            ),
            tokenizer=_TOKENIZER_32000,
        ),
        Pretrained(
            "tok105",
            "the seed's 105-piece vocabulary (enio/TinyStories); a vocabulary, no model",
            tokenizer=RemoteFile("tok105/tok105.bin", f"{_TOK105}/tok105.bin", 986, "tokenizer"),
            extra=(
                RemoteFile("tok105/tok105.model", f"{_TOK105}/tok105.model", None, "sentencepiece"),
            ),
        ),
    ]
}

DEFAULT_NAME = "default"


def default_model() -> tuple[Path, Path]:
    """``(model.bin, tokenizer.bin)`` of the default model bundled in the wheel."""
    base = resources.files("tinystories") / "models" / "default"
    model, tokenizer = Path(str(base / "model.bin")), Path(str(base / "tokenizer.bin"))
    if not (model.is_file() and tokenizer.is_file()):
        raise PretrainedError(
            f"the bundled default model is missing from {base} (a broken install?); "
            "reinstall tinystories or pass a model and tokenizer"
        )
    return model, tokenizer


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$TINYSTORIES_CACHE``, else ``~/.cache/tinystories``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("TINYSTORIES_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tinystories"


def lookup(name: str) -> Pretrained:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join([DEFAULT_NAME, *REGISTRY])
        raise PretrainedError(f"unknown pretrained model {name!r}; known: {known}") from None


def _url(file: RemoteFile) -> str:
    mirror = os.environ.get("TINYSTORIES_MIRROR")
    return f"{mirror.rstrip('/')}/{file.path}" if mirror else file.url


def _validate(file: RemoteFile, path: Path) -> None:
    """Raises ValueError/OSError when ``path`` is not a usable copy of ``file``."""
    size = path.stat().st_size
    if file.size is not None and size != file.size:
        raise ValueError(f"{path.name} is {size} bytes, expected {file.size}")
    if file.kind == "model":
        _core.Model(str(path), "", 0)  # maps and checks the header against the size
    elif file.kind == "tokenizer":
        _core.Tokenizer(str(path))


def fetch_file(
    file: RemoteFile,
    *,
    cache_dir: str | os.PathLike | None = None,
    offline: bool = False,
    progress: bool = True,
) -> Path:
    """The cached copy of ``file``, downloaded first unless it is there and valid."""
    dest = cache_root(cache_dir) / file.path
    if dest.exists():
        try:
            _validate(file, dest)
            return dest
        except (OSError, ValueError) as err:
            if offline:
                raise PretrainedError(
                    f"cached file {dest} is corrupt ({err}); run without offline mode "
                    "to download it again"
                ) from err
            dest.unlink()  # corrupt: download it again
    if offline:
        raise PretrainedError(f"offline mode: {dest} is not in the cache")
    try:
        return download(
            _url(file),
            dest,
            expected_size=file.size,
            progress=progress,
            check=lambda part: _validate(file, part),
        )
    except DownloadError as err:
        raise PretrainedError(str(err)) from err


def fetch(
    name: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    offline: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Every file of registry entry ``name``, from the cache or downloaded into it.

    Offline, all missing files are named in one error.
    """
    entry = lookup(name)
    if offline:
        root = cache_root(cache_dir)
        missing = [str(root / f.path) for f in entry.files if not (root / f.path).exists()]
        if missing:
            raise PretrainedError(
                f"offline mode: {name} is not in the cache; missing: {', '.join(missing)} "
                f"(run `tinystories download {name}` with network access first)"
            )
    return [
        fetch_file(f, cache_dir=cache_dir, offline=offline, progress=progress) for f in entry.files
    ]


def fetch_model(
    name: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    offline: bool = False,
    progress: bool = True,
) -> tuple[Path, Path]:
    """``(model, tokenizer)`` paths of ``name``: ``"default"`` (bundled) or a registry entry."""
    if name == DEFAULT_NAME:
        return default_model()
    entry = lookup(name)
    if entry.model is None:
        raise PretrainedError(
            f"{name} is a vocabulary without a model; `tinystories download {name}` fetches it"
        )
    paths = fetch(name, cache_dir=cache_dir, offline=offline, progress=progress)
    return paths[0], paths[1]
