"""What a training run records: one row per logged iteration in ``metrics.jsonl`` and,
with ``--tensorboard DIR``, the same numbers as TensorBoard events.

A row has ``iter``, ``tokens`` (seen so far), ``loss`` (train), ``lr``,
``tokens_per_sec``, and ``val_loss`` at an evaluation. Imports no torch, so
``tinystories plot`` reads the rows without the ``train`` extra's heavy parts.
"""

from __future__ import annotations

import json
from pathlib import Path

# The TensorBoard tag of each number in a row.
TENSORBOARD_TAGS = {
    "loss": "loss/train",
    "val_loss": "loss/val",
    "lr": "learning_rate",
    "tokens_per_sec": "tokens_per_sec",
}


def read_metrics(path: str | Path, up_to: int | None = None) -> list[dict]:
    """The rows of a ``metrics.jsonl``, those up to iteration ``up_to`` when given."""
    path = Path(path)
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not a JSON row ({err.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("iter"), int):
            raise ValueError(f"{path}:{number}: not a metrics row (no 'iter')")
        rows.append(row)
    return [row for row in rows if up_to is None or row["iter"] <= up_to]


class RunLog:
    """Appends rows to ``metrics.jsonl`` (rewritten first with the rows up to
    ``start_iter``: a resumed run drops what came after its checkpoint) and mirrors them
    to TensorBoard when ``tensorboard_dir`` is given."""

    def __init__(self, path: Path, start_iter: int, tensorboard_dir: str | None = None):
        self.rows = read_metrics(path, up_to=start_iter) if path.exists() else []
        path.write_text("".join(json.dumps(row) + "\n" for row in self.rows))
        self._file = open(path, "a")
        self._tensorboard = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides the events of an earlier attempt past the checkpoint
            self._tensorboard = SummaryWriter(tensorboard_dir, purge_step=start_iter + 1)

    def write(self, row: dict) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        self.rows.append(row)
        if self._tensorboard is not None:
            for key, tag in TENSORBOARD_TAGS.items():
                if key in row:
                    self._tensorboard.add_scalar(tag, row[key], row["iter"])

    def flush(self) -> None:
        """Everything written so far is on disk (called with each checkpoint)."""
        if self._tensorboard is not None:
            self._tensorboard.flush()

    def close(self) -> None:
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
