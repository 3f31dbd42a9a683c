"""Tiny training runs for the tests: a corpus of our own and the flags of a model small
enough to train a few iterations in a second on one CPU thread."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .stories import make_corpus, write_txt

# --dim 32, 2 layers, GQA (4 heads on 2 kv heads), a 32-token context, fp32, eager.
TINY_FLAGS = [
    "--vocab-size", "80", "--dim", "32", "--n-layers", "2", "--n-heads", "4",
    "--n-kv-heads", "2", "--seq-len", "32", "--batch-size", "4", "--eval-iters", "2",
    "--dtype", "float32", "--no-compile", "--seed", "7", "--threads", "1",
]  # fmt: skip
TRAIN = [sys.executable, "-m", "tinystories.train"]
# The same for train(TrainConfig(...)) in-process: the shape, and how to run it.
TINY_SHAPE = dict(vocab_size=80, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, seq_len=32)
TINY_RUN = dict(batch_size=4, eval_iters=2, dtype="float32", compile=False, progress=False)
TINY_CONFIG = {**TINY_SHAPE, **TINY_RUN}


def write_corpus(path: Path, n_stories: int = 200) -> Path:
    write_txt(path, make_corpus(n_stories, seed=3))
    return path


def quiet_env() -> dict[str, str]:
    """This environment for a training subprocess: one thread, outside any torchrun."""
    drop = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["OMP_NUM_THREADS"] = "1"
    return env


def train_command(*flags: str) -> subprocess.CompletedProcess:
    """``python -m tinystories.train FLAGS`` to the end: status and text output."""
    return subprocess.run(
        [*TRAIN, *flags],
        capture_output=True,
        text=True,
        timeout=300,
        env=quiet_env(),
        stdin=subprocess.DEVNULL,
    )
