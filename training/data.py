"""TinyStories data: download, read, vocabulary, pretokenized shards, batches.

Stages, each usable on its own (``python -m tinystories.data``):

* :func:`download` fetches a file over HTTP with a progress bar, resuming a
  partial ``.part`` file with a Range request and checking the final size.
* :func:`read_documents` yields the stories of a local corpus: the official
  ``.txt`` format (stories separated by ``<|endoftext|>`` lines), the JSON
  shards of ``TinyStories_all_data.tar.gz`` (lists of ``{"story": ...}``), the
  archive itself, or a directory of those.
* :func:`train_vocab` trains a sentencepiece BPE vocabulary as llama2.c does and
  writes ``tokN.model`` and the C engine's ``tokN.bin``.
* :func:`pretokenize` writes uint16 shards (BOS before every story) in parallel.
* :class:`BatchSampler` draws training batches; batch ``i`` depends only on
  (seed, i), which is what makes resumed runs repeat uninterrupted ones exactly.

Only this module's vocabulary and pretokenize stages need sentencepiece; none
of it needs torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# download() moved to tinystories.download; re-exported for the data stage's callers
from ..download import DownloadError as DownloadError
from ..download import download as download
from ..download import progress_bar
from ..tokenizer_file import sentencepiece_pieces, write_tokenizer

BOS_ID = 1
END_OF_TEXT = "<|endoftext|>"
TOKEN_DTYPE = np.uint16

# What `python -m tinystories.data download NAME` fetches.
SOURCES: dict[str, str] = {
    # The official JSON shards (about 1.5 GB compressed).
    "tinystories": "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/"
    "TinyStories_all_data.tar.gz",
    # The seed's vocabulary and pretokenized shards (EN10/BabyLlama).
    "tok105": "https://huggingface.co/datasets/enio/TinyStories/resolve/main/tok105/tok105.tar.gz",
    "tok105.model": "https://huggingface.co/datasets/enio/TinyStories/resolve/main/"
    "tok105/tok105.model",
}


class DataError(ValueError):
    """Input data that cannot be used, with a message saying why."""


# --- download: tinystories.download (re-exported here) ----------------------------


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


# --- vocabulary ----------------------------------------------------------------------

N_SPECIAL = 3  # <unk>, <s>, </s>


def vocab_paths(data_dir: str | Path, vocab_size: int) -> tuple[Path, Path]:
    """``(tokN.model, tokN.bin)`` in ``data_dir``."""
    data_dir = Path(data_dir)
    return data_dir / f"tok{vocab_size}.model", data_dir / f"tok{vocab_size}.bin"


def corpus_characters(docs: Iterable[str]) -> set[str]:
    chars: set[str] = set()
    for doc in docs:
        chars.update(doc)
    chars.discard("\n")  # sentencepiece trains on lines
    chars.discard("\r")
    return chars


def train_vocab(
    docs: Sequence[str],
    vocab_size: int,
    data_dir: str | Path,
    *,
    byte_fallback: bool | None = None,
    num_threads: int | None = None,
) -> tuple[Path, Path]:
    """Trains a sentencepiece BPE vocabulary of ``vocab_size`` pieces on ``docs``.

    The settings are llama2.c's (``tinystories.py train_vocab``): BPE, every
    character covered, digits split, identity normalization. ``byte_fallback``
    (None = automatic) adds the 256 ``<0xXX>`` byte pieces, which needs a
    vocabulary of at least 259 + the number of characters; small vocabularies
    such as tok105 go without, so unseen characters encode as ``<unk>``.
    Writes and returns ``(tokN.model, tokN.bin)``.
    """
    import sentencepiece as spm

    chars = corpus_characters(docs)
    needed = N_SPECIAL + len(chars)
    if byte_fallback is None:
        byte_fallback = vocab_size >= needed + 256
    if byte_fallback:
        needed += 256
    if vocab_size < needed:
        extra = " plus 256 byte pieces" if byte_fallback else ""
        raise DataError(
            f"vocab size {vocab_size} is too small for this corpus: its {len(chars)} distinct "
            f"characters, <unk>, <s> and </s>{extra} need at least {needed} pieces"
        )
    model_path, bin_path = vocab_paths(data_dir, vocab_size)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_path.parent) as tmp:
        text_file = Path(tmp) / "vocab_corpus.txt"
        with open(text_file, "w", encoding="utf-8") as out:
            for doc in docs:
                out.write(doc + "\n")
        spm.SentencePieceTrainer.train(
            input=str(text_file),
            model_prefix=str(Path(tmp) / "tok"),
            model_type="bpe",
            vocab_size=vocab_size,
            input_format="text",
            character_coverage=1.0,
            num_threads=num_threads or os.cpu_count() or 1,
            split_digits=True,
            allow_whitespace_only_pieces=True,
            byte_fallback=byte_fallback,
            unk_surface=r" \342\201\207 ",
            normalization_rule_name="identity",
            minloglevel=2,
        )
        shutil.move(str(Path(tmp) / "tok.model"), model_path)
    pieces, scores = sentencepiece_pieces(model_path)
    write_tokenizer(bin_path, pieces, scores)
    return model_path, bin_path


# --- pretokenized shards ------------------------------------------------------------


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _encode_chunk(args: tuple[str, list[str], str]) -> int:
    """Worker: encodes stories (BOS before each) and writes one uint16 shard."""
    import sentencepiece as spm

    model_path, docs, out_path = args
    sp = spm.SentencePieceProcessor(model_file=model_path)
    encoded = sp.encode(docs)
    count = sum(len(ids) + 1 for ids in encoded)
    tokens = np.empty(count, dtype=TOKEN_DTYPE)
    pos = 0
    for ids in encoded:
        tokens[pos] = BOS_ID
        tokens[pos + 1 : pos + 1 + len(ids)] = ids
        pos += len(ids) + 1
    tmp = out_path + ".tmp"
    tokens.tofile(tmp)
    os.replace(tmp, out_path)
    return len(docs)


@dataclass(frozen=True)
class ShardSet:
    """Pretokenized shards of one split, with the tokenizer that made them."""

    paths: list[Path]
    tokenizer_digest: str
    n_tokens: int


def pretokenize(
    docs: Sequence[str],
    tokenizer_model: str | Path,
    out_dir: str | Path,
    split: str,
    *,
    docs_per_shard: int = 50_000,
    workers: int | None = None,
    progress: bool = True,
) -> ShardSet:
    """Writes ``docs`` as ``out_dir/{split}_NNNN.bin`` uint16 shards (BOS before each story).

    Chunks are encoded in parallel worker processes; ``out_dir/{split}.json``
    is written last and marks the split complete.
    """
    import sentencepiece as spm

    tokenizer_model = Path(tokenizer_model)
    vocab = spm.SentencePieceProcessor(model_file=str(tokenizer_model)).vocab_size()
    if vocab > np.iinfo(TOKEN_DTYPE).max + 1:
        raise DataError(f"vocab size {vocab} does not fit uint16 shards")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"{split}_*.bin"):
        old.unlink()
    chunks = [docs[i : i + docs_per_shard] for i in range(0, len(docs), docs_per_shard)]
    jobs = [
        (str(tokenizer_model), list(chunk), str(out_dir / f"{split}_{i:04d}.bin"))
        for i, chunk in enumerate(chunks)
    ]
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    bar = progress_bar(len(docs), 0, f"pretokenize {split}", progress)
    bar.unit, bar.unit_scale = "story", False
    with bar:
        if workers <= 1:
            for job in jobs:
                bar.update(_encode_chunk(job))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for done in pool.map(_encode_chunk, jobs):
                    bar.update(done)
    paths = [Path(job[2]) for job in jobs]
    n_tokens = sum(p.stat().st_size // np.dtype(TOKEN_DTYPE).itemsize for p in paths)
    shards = ShardSet(paths, file_digest(tokenizer_model), n_tokens)
    meta = {
        "split": split,
        "shards": [p.name for p in paths],
        "tokenizer_digest": shards.tokenizer_digest,
        "n_docs": len(docs),
        "n_tokens": n_tokens,
    }
    (out_dir / f"{split}.json").write_text(json.dumps(meta, indent=1))
    return shards


def load_shards(out_dir: str | Path, split: str, tokenizer_model: str | Path | None = None):
    """The shards of a complete split, or None when missing or made with another tokenizer."""
    out_dir = Path(out_dir)
    meta_path = out_dir / f"{split}.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    paths = [out_dir / name for name in meta["shards"]]
    if not all(p.exists() for p in paths):
        return None
    if tokenizer_model is not None and meta["tokenizer_digest"] != file_digest(tokenizer_model):
        return None
    return ShardSet(paths, meta["tokenizer_digest"], meta["n_tokens"])


# --- batches -----------------------------------------------------------------------


class TokenStream:
    """Shards memory-mapped and viewed as windows of ``seq_len + 1`` tokens."""

    def __init__(self, paths: Sequence[str | Path], seq_len: int, vocab_size: int | None = None):
        self.seq_len = seq_len
        self.arrays = [np.memmap(p, dtype=TOKEN_DTYPE, mode="r") for p in paths]
        self.arrays = [a for a in self.arrays if len(a) > seq_len]
        if not self.arrays:
            raise DataError(
                f"the data has fewer than {seq_len + 1} tokens in every shard; "
                "add stories or lower seq_len"
            )
        # Number of window starting positions per shard, and their running total.
        self.starts = np.array([len(a) - seq_len for a in self.arrays], dtype=np.int64)
        self.cumulative = np.cumsum(self.starts)
        if vocab_size is not None:
            top = max(int(a.max()) for a in self.arrays)
            if top >= vocab_size:
                raise DataError(f"token id {top} in the shards exceeds vocab size {vocab_size}")

    @property
    def n_tokens(self) -> int:
        return int(sum(len(a) for a in self.arrays))

    def window(self, index: int) -> np.ndarray:
        """Window number ``index`` of all start positions, as int64 (seq_len + 1,)."""
        shard = int(np.searchsorted(self.cumulative, index, side="right"))
        offset = index - (int(self.cumulative[shard - 1]) if shard else 0)
        return np.asarray(self.arrays[shard][offset : offset + self.seq_len + 1], dtype=np.int64)

    def random_batch(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        """``batch_size`` windows at uniformly random positions, (B, seq_len + 1) int64."""
        indices = rng.integers(0, int(self.cumulative[-1]), size=batch_size)
        return np.stack([self.window(int(i)) for i in indices])


class BatchSampler:
    """Training batch number ``step`` is a pure function of ``(seed, step)``."""

    def __init__(self, stream: TokenStream, batch_size: int, seed: int):
        self.stream = stream
        self.batch_size = batch_size
        self.seed = seed

    def batch(self, step: int, micro_step: int = 0) -> np.ndarray:
        rng = np.random.default_rng((self.seed, step, micro_step))
        return self.stream.random_batch(rng, self.batch_size)


def eval_batches(stream: TokenStream, batch_size: int, n_batches: int, seed: int) -> list:
    """A fixed set of evaluation batches (the same at every evaluation)."""
    rng = np.random.default_rng((seed, 0xE7A1))
    return [stream.random_batch(rng, batch_size) for _ in range(n_batches)]
