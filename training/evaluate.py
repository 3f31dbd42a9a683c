"""Mean loss per token of a torch :class:`~.model.Transformer`, defined as in
:mod:`tinystories.metrics` (the C engine's evaluation), so the two can be compared.

torch is imported when :func:`evaluate_torch` runs, not at import.
"""

from __future__ import annotations

import numpy as np

from ..metrics import EvalResult, windows


def evaluate_torch(model, stream: np.ndarray, n_docs: int = 0, batch_size: int = 16) -> EvalResult:
    """The same loss with a torch :class:`~.model.Transformer` (batches full windows)."""
    import torch

    seq_len = model.args.seq_len
    device = next(model.parameters()).device
    model.eval()
    total, count, n_windows = 0.0, 0, 0
    pending: list[tuple[np.ndarray, np.ndarray]] = []

    def flush() -> None:
        nonlocal total, count, n_windows
        if not pending:
            return
        x = torch.from_numpy(np.stack([p[0] for p in pending])).to(device)
        y = torch.from_numpy(np.stack([p[1] for p in pending])).to(device)
        with torch.no_grad():
            logits = model(x).double()
        total += float(
            torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
        )
        count += y.numel()
        n_windows += len(pending)
        pending.clear()

    for inputs, targets in windows(stream, seq_len):
        if len(inputs) < seq_len:  # the short last window goes alone
            flush()
            pending.append((inputs, targets))
            flush()
            continue
        pending.append((inputs, targets))
        if len(pending) == batch_size:
            flush()
    flush()
    return EvalResult(total / count, count, n_windows, n_docs)


_MOVED_TO_METRICS = ("EvalResult", "evaluate_engine", "evaluate_stream", "nll_sum", "token_stream")


def __getattr__(name: str):
    # The engine-side evaluation moved to tinystories.metrics; old imports keep working.
    if name in _MOVED_TO_METRICS:
        from .._deprecated import moved

        moved(f"{__name__}.{name}", "tinystories.metrics")
        from .. import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
