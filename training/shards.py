"""Pretokenized shards and the batches drawn from them.

* :func:`pretokenize` writes uint16 shards (BOS before every story) in parallel worker
  processes; :func:`load_shards` finds a complete split made with a given vocabulary.
* :class:`TokenStream` views the shards as windows of ``seq_len + 1`` tokens;
  :class:`BatchSampler` draws training batch ``i`` as a pure function of (seed, i), which
  is what makes a resumed run repeat an uninterrupted one exactly; :class:`Prefetcher`
  builds the next batches on a background thread.

Needs sentencepiece to pretokenize; none of it needs torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..formats.constants import BOS
from ..formats.corpus import DataError
from ..hub.download import progress_bar

TOKEN_DTYPE = np.uint16


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
        tokens[pos] = BOS
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
    with progress_bar(len(docs), 0, f"pretokenize {split}", progress, unit="story") as bar:
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

    def step_batches(self, step: int, micro_steps: Sequence[int] = (0,)) -> list[np.ndarray]:
        """The batches of training step ``step``, one per gradient accumulation step in
        ``micro_steps`` (a distributed process draws only its share of them)."""
        return [self.batch(step, micro) for micro in micro_steps]


def eval_batches(stream: TokenStream, batch_size: int, n_batches: int, seed: int) -> list:
    """A fixed set of evaluation batches (the same at every evaluation)."""
    rng = np.random.default_rng((seed, 0xE7A1))
    return [stream.random_batch(rng, batch_size) for _ in range(n_batches)]


class Prefetcher:
    """Builds the next batches on a background thread, off the training critical path."""

    def __init__(
        self, make_batch: Callable[[int], object], first_step: int, last_step: int, depth: int = 3
    ):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(make_batch, first_step, last_step), daemon=True
        )
        self._thread.start()

    def _run(self, make_batch, first_step: int, last_step: int) -> None:
        try:
            for step in range(first_step, last_step):
                item = make_batch(step)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as err:  # surfaced to the consumer
            self._queue.put(err)

    def get(self):
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
