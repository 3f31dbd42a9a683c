"""TinyStories corpus files: the stories of a ``.txt``, JSON shard, archive or folder.

* the official ``.txt`` format: stories separated by ``<|endoftext|>`` lines;
* the JSON shards of ``TinyStories_all_data.tar.gz``: lists of ``{"story": ...}``;
* the archive itself (``.tar.gz``), or a directory of any of those.

Standard library only: the torch-free evaluation (:mod:`tinystories.metrics`) and the
training side (:mod:`tinystories.training`) read corpora the same way.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

END_OF_TEXT = "<|endoftext|>"


class DataError(ValueError):
    """Input data that cannot be used, with a message saying why."""


def unpack(archive: str | Path, dest_dir: str | Path) -> Path:
    """Extracts a .tar.gz into ``dest_dir`` (refusing members that would land outside it)."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    root = dest_dir.resolve()
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            target = (root / member.name).resolve()
            if root != target and root not in target.parents:
                raise DataError(f"{archive}: member {member.name!r} escapes {dest_dir}")
            if member.issym() or member.islnk():
                raise DataError(f"{archive}: member {member.name!r} is a link")
        tar.extractall(dest_dir, members=members)
    return dest_dir


# --- reading stories ---------------------------------------------------------------


def _txt_documents(lines: Iterable[str]) -> Iterator[str]:
    buffer: list[str] = []
    for line in lines:
        if line.strip() == END_OF_TEXT:
            yield "".join(buffer)
            buffer = []
        else:
            buffer.append(line)
    yield "".join(buffer)


def _json_documents(text: str, name: str) -> Iterator[str]:
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{name}: not valid JSON ({err})") from err
    if not isinstance(records, list):
        raise DataError(f"{name}: expected a JSON list of stories")
    for record in records:
        yield record["story"] if isinstance(record, dict) else str(record)


def _corpus_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".txt", ".json"))
        files += sorted(p for p in path.rglob("*.tar.gz"))
        return files
    return [path]


def read_documents(path: str | Path) -> Iterator[str]:
    """The stories of a corpus, each stripped of surrounding whitespace; empty ones skipped."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data not found: {path}")
    for file in _corpus_files(path):
        for doc in _raw_documents(file):
            doc = doc.strip()
            if doc:
                yield doc


def _raw_documents(file: Path) -> Iterator[str]:
    name = file.name
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(file, "r:*") as tar:
            for member in sorted(tar.getmembers(), key=lambda m: m.name):
                if member.isfile() and member.name.endswith((".json", ".txt")):
                    text = tar.extractfile(member).read().decode("utf-8")
                    yield from _documents_of_text(text, f"{file}:{member.name}")
    else:
        yield from _documents_of_text(file.read_text(encoding="utf-8"), str(file))


def _documents_of_text(text: str, name: str) -> Iterator[str]:
    if name.endswith(".json"):
        yield from _json_documents(text, name)
    else:
        yield from _txt_documents(text.splitlines(keepends=True))


def load_documents(path: str | Path) -> list[str]:
    """All stories of a corpus; a :class:`DataError` if there are none."""
    docs = list(read_documents(path))
    if not docs:
        raise DataError(
            f"no stories in {path}: expected .txt (stories separated by {END_OF_TEXT} lines), "
            "TinyStories JSON shards, or a .tar.gz of them"
        )
    return docs
