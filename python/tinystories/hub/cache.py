"""The local copies of pretrained models: the bundled default model and a download cache.

``Generator()`` uses the model bundled in the wheel (no network);
``Generator.from_pretrained(NAME)`` and ``tinystories download NAME`` fetch one
of :data:`REGISTRY` into the cache:

* the cache is ``~/.cache/tinystories`` (``$TINYSTORIES_CACHE`` or ``cache_dir``
  overrides it); files keep their :attr:`RemoteFile.path` there, so a tokenizer
  shared by several models is downloaded once;
* a download shows a progress bar, resumes a partial ``.part`` file with an HTTP
  Range request, is checked against the recorded byte size and then against its
  header (the size the header implies; a tokenizer is loaded by the engine), and
  only then renamed into place;
* a cached file is checked the same way before every use; ``offline=True`` reads
  only the cache and says which files are missing;
* ``$TINYSTORIES_MIRROR`` (a base URL) replaces every file's URL by
  ``MIRROR/PATH``: a local mirror, or the loopback server of the tests.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .. import _core
from ..formats.llama2c_header import check_header
from .download import DownloadError, download
from .registry import DEFAULT_NAME, REGISTRY, Pretrained, RemoteFile

__all__ = [
    "PretrainedError",
    "UnknownModelError",
    "cache_root",
    "default_model",
    "fetch",
    "fetch_file",
    "fetch_model",
    "lookup",
]


class PretrainedError(OSError):
    """A pretrained model that cannot be used: unknown, missing offline, corrupt, or its
    download failed."""


class UnknownModelError(PretrainedError, ValueError):
    """A name that is no pretrained model (not in the registry, or a vocabulary only).

    A bad argument rather than a failed download, so also a ``ValueError``.
    """


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
        raise UnknownModelError(f"unknown pretrained model {name!r}; known: {known}") from None


def _url(file: RemoteFile) -> str:
    mirror = os.environ.get("TINYSTORIES_MIRROR")
    return f"{mirror.rstrip('/')}/{file.path}" if mirror else file.url


def _validate(file: RemoteFile, path: Path) -> None:
    """Raises ValueError/OSError when ``path`` is not a usable copy of ``file``."""
    size = path.stat().st_size
    if file.size is not None and size != file.size:
        raise ValueError(f"{path.name} is {size} bytes, expected {file.size}")
    if file.kind == "model":
        check_header(path)  # the size the header implies; the engine checks the rest at load
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
    """Every file of registry entry ``name``, from the cache or downloaded into it
    (``"default"``: the bundled model's two files, nothing downloaded).

    Offline, all missing files are named in one error.
    """
    if name == DEFAULT_NAME:
        return list(default_model())
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
        raise UnknownModelError(
            f"{name} is a vocabulary without a model; `tinystories download {name}` fetches it"
        )
    paths = fetch(name, cache_dir=cache_dir, offline=offline, progress=progress)
    return paths[0], paths[1]
