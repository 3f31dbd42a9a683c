"""Offline stand-ins for the Modal side of the tests: a folder that behaves like a
modal.Volume for the calls our volume tools make, a socket guard, and introspection of
what modal keeps about a Function and an Image (modal 1.x internals, read-only)."""

from __future__ import annotations

import shutil
import socket
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import modal
from modal.types import FileEntry, FileEntryType


class LocalVolume:
    """``listdir``, ``read_file_into_fileobj``, ``batch_upload`` and ``remove_file`` with
    modal.Volume's signatures and behaviour, on a local folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.uploads: list[str] = []

    def _path(self, path: str) -> Path:
        parts = [p for p in PurePosixPath(path).parts if p not in ("/", ".")]
        assert ".." not in parts
        return self.root.joinpath(*parts)

    def _entry(self, path: Path) -> FileEntry:
        stat = path.stat()
        kind = FileEntryType.DIRECTORY if path.is_dir() else FileEntryType.FILE
        size = 0 if path.is_dir() else stat.st_size
        return FileEntry(path.relative_to(self.root).as_posix(), kind, int(stat.st_mtime), size)

    def listdir(self, path: str, *, recursive: bool = False) -> list[FileEntry]:
        target = self._path(path)
        if not target.exists():
            raise modal.exception.NotFoundError(f"No such file or directory: {path}")
        if target.is_file():
            return [self._entry(target)]
        children = target.rglob("*") if recursive else target.iterdir()
        return [self._entry(p) for p in sorted(children)]

    def read_file_into_fileobj(self, path: str, fileobj, progress_cb=None) -> int:
        target = self._path(path)
        if not target.is_file():
            raise FileNotFoundError(f"No such file: {path}")
        n = 0
        with open(target, "rb") as f:
            for chunk in iter(lambda: f.read(1000), b""):  # several writes per file
                fileobj.write(chunk)
                n += len(chunk)
        return n

    @contextmanager
    def batch_upload(self, force: bool = False):
        batch = _Batch()
        yield batch
        for local, remote in batch.files:
            dest = self._path(remote)
            if dest.exists() and not force:
                raise FileExistsError(f"{remote} exists")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, dest)
            self.uploads.append(PurePosixPath(remote).as_posix().lstrip("/"))

    def remove_file(self, path: str, recursive: bool = False) -> None:
        target = self._path(path)
        if not target.exists():
            raise modal.exception.NotFoundError(path)
        if target.is_dir():
            if not recursive:
                raise modal.exception.InvalidError(f"{path} is a directory")
            shutil.rmtree(target)
        else:
            target.unlink()


class _Batch:
    def __init__(self) -> None:
        self.files: list[tuple[Path, str]] = []

    def put_file(self, local_file, remote_path) -> None:
        self.files.append((Path(local_file), str(remote_path)))


@contextmanager
def no_network():
    """Any connection attempt or name lookup in the block fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] or kwargs}")

    saved = (
        socket.socket.connect,
        socket.socket.connect_ex,
        socket.getaddrinfo,
        socket.create_connection,
    )
    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.getaddrinfo = refuse
    socket.create_connection = refuse
    try:
        yield
    finally:
        (
            socket.socket.connect,
            socket.socket.connect_ex,
            socket.getaddrinfo,
            socket.create_connection,
        ) = saved


def impl(obj):
    """The object behind a synchronicity wrapper (modal.Image -> modal._image._Image)."""
    return _impl(obj)


def _impl(obj):
    from modal._utils.async_utils import synchronizer

    return synchronizer._translate_in(obj)


def _closure(fn) -> dict:
    cells = [c.cell_contents for c in fn.__closure__ or ()]
    return dict(zip(fn.__code__.co_freevars, cells, strict=True))


def function_options(function: modal.Function) -> dict:
    """gpu, timeout, cpu, volumes and image as the decorator recorded them."""
    impl = _impl(function)
    cells = _closure(impl._load)
    return {
        "gpu": impl._spec.gpus,
        "cpu": impl._spec.cpu,
        "memory": impl._spec.memory,
        "volumes": dict(impl._spec.volumes),
        "image": impl._spec.image,
        "timeout": cells["timeout"],
    }


def dockerfile_commands(image, builder_version: str = "2025.06") -> list[str]:
    """The Dockerfile lines of every layer of ``image``, base first."""
    image = _impl(image)
    cells = _closure(image._load)
    commands: list[str] = []
    for base in (cells.get("base_images") or {}).values():
        commands += dockerfile_commands(base, builder_version)
    make = cells.get("dockerfile_function")
    if make is not None:
        commands += make(builder_version).commands
    return commands


def volume_name(volume: modal.Volume) -> str:
    return _impl(volume)._name


def copied_files(image, builder_version: str = "2025.06") -> list[tuple[Path, str]]:
    """(local file, path in the image) for every file that ``copy=True`` layers bake in."""
    image = _impl(image)
    cells = _closure(image._load)
    files: list[tuple[Path, str]] = []
    for base in (cells.get("base_images") or {}).values():
        files += copied_files(base, builder_version)
    make_mount = cells.get("context_mount_function")
    mount = make_mount(builder_version) if make_mount is not None else None
    if mount is not None:
        for entry in mount.entries:
            files += [(Path(local), str(remote)) for local, remote in entry.get_files_to_upload()]
    return files


def serialized_function(function: modal.Function) -> bytes:
    """The bytes a ``serialized=True`` function is shipped to its container as."""
    return _closure(_impl(function)._load)["info"].serialized_function()
