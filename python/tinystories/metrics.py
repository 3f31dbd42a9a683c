"""Mean loss per token of a model file on a corpus, with the C engine (no torch).

``python -m tinystories.eval`` runs :func:`evaluate_engine`; the training side scores a
torch model the same way (:func:`tinystories.training.evaluate.evaluate_torch`). The
definition, shared by both: every story is encoded as BOS + its
ids and the stories are concatenated into one stream. The stream is cut into
non-overlapping inputs of ``seq_len`` tokens (the last one shorter); each
input predicts the ``seq_len`` tokens that follow each of its positions, so
window ``i`` covers tokens ``[i*seq_len, (i+1)*seq_len + 1)`` and every token
after the first is predicted exactly once, with up to ``seq_len`` tokens of
context. The loss is the mean negative log-likelihood over those tokens.

With llama2.c's tok105 model (``model5000.bin``) this gives 0.8861 on
``valid-sample.txt`` and 0.9064 on ``train-sample.txt``.

Imports neither torch nor sentencepiece.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .formats.constants import BOS
from .formats.corpus import load_documents
from .hub.download import progress_bar
from .inference import Generator


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean negative log-likelihood per predicted token (nats)
    n_tokens: int  # predicted tokens
    n_windows: int
    n_docs: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    def summary(self) -> str:
        return f"loss: {self.loss:.4f} perplexity: {self.perplexity:.2f}"


def token_stream(docs: Iterable[str], encode: Callable[[str], Sequence[int]]) -> np.ndarray:
    """BOS + ids of every story, concatenated. ``encode`` must not add BOS itself."""
    parts = []
    for doc in docs:
        parts.append([BOS])
        parts.append(list(encode(doc)))
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])


def windows(stream: np.ndarray, seq_len: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(inputs, targets)`` pairs covering every token after the first exactly once."""
    for start in range(0, max(0, len(stream) - 1), seq_len):
        chunk = stream[start : start + seq_len + 1]
        yield chunk[:-1], chunk[1:]


def nll_sum(logits: np.ndarray, targets: np.ndarray) -> float:
    """Sum of -log softmax(logits)[target], computed in float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=-1))
    return float((log_norm - z[np.arange(len(targets)), targets]).sum())


def evaluate_stream(
    stream: np.ndarray,
    seq_len: int,
    logits_fn: Callable[[np.ndarray], np.ndarray],
    n_docs: int = 0,
    progress: bool = False,
) -> EvalResult:
    """Loss over ``stream`` with ``logits_fn(inputs) -> (len(inputs), vocab)``."""
    if len(stream) < 2:
        raise ValueError("need at least two tokens to evaluate")
    total, count, n_windows = 0.0, 0, 0
    n_total = math.ceil((len(stream) - 1) / seq_len)
    with progress_bar(n_total, 0, "eval", progress, unit="window") as bar:
        for inputs, targets in windows(stream, seq_len):
            total += nll_sum(np.asarray(logits_fn(inputs)), targets)
            count += len(targets)
            n_windows += 1
            bar.update(1)
    return EvalResult(total / count, count, n_windows, n_docs)


def evaluate_engine(
    model_path: str | Path,
    tokenizer_path: str | Path,
    data: str | Path,
    *,
    n_threads: int | None = None,
    progress: bool = False,
) -> EvalResult:
    """Loss of a model file on a corpus with the C engine (``tinystories.Generator``)."""
    generator = Generator(model_path, tokenizer_path, n_threads=n_threads)
    docs = load_documents(data)
    stream = token_stream(docs, lambda text: generator.encode(text, bos=False))
    return evaluate_stream(
        stream, generator.config.seq_len, generator.logits, len(docs), progress=progress
    )
