"""The volume tools behind ``python -m tinystories.volume`` (and the uploads and downloads
of ``--modal`` runs).

They take any object with Modal's ``Volume`` methods ``listdir``,
``read_file_into_fileobj``, ``batch_upload`` and ``remove_file`` (the tests pass a local
stand-in).
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

import modal
from modal.types import FileEntry, FileEntryType

from ..hub.download import progress_bar
from .settings import MOUNT, volume_path


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _not_found(volume, path: str) -> bool:
    try:
        volume.listdir(path)
    except (modal.exception.NotFoundError, FileNotFoundError):
        return True
    return False


def list_entries(volume, path: str = "", recursive: bool = False) -> list[FileEntry]:
    """The entries under ``path`` (a file: that file), sorted by path."""
    entries = volume.listdir(volume_path(path) or "/", recursive=recursive)
    return sorted(entries, key=lambda e: e.path)


def format_entries(entries: Sequence[FileEntry]) -> str:
    rows = []
    for e in entries:
        kind = "/" if e.type == FileEntryType.DIRECTORY else ""
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.mtime)) if e.mtime else ""
        size = human_size(e.size) if e.type == FileEntryType.FILE else "-"
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
    log(f"uploading {local} ({human_size(total)}, {len(files)} file(s)) to {MOUNT}/{remote}")
    start = time.perf_counter()
    with progress_bar(total, 0, "upload", progress) as bar:
        for path, dest in files:
            with volume.batch_upload(force=force) as batch:
                batch.put_file(path, dest)
            bar.update(path.stat().st_size)
    seconds = max(time.perf_counter() - start, 1e-6)
    log(f"uploaded {human_size(total)} in {seconds:.1f} s ({human_size(total / seconds)}/s)")
    return True


class _CountingWriter:
    """A file object that advances a progress bar as bytes are written to it."""

    def __init__(self, file, bar) -> None:
        self._file, self._bar = file, bar

    def write(self, data: bytes) -> int:
        n = self._file.write(data)
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
    with open(part, "wb") as f, progress_bar(size, 0, local.name, progress) as bar:
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
