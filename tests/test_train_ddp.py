"""torchrun: 2 processes on CPU (gloo) train the batches one process trains, so the loss
curve matches a single-process run within 1e-4 in fp32, and --resume works with another
number of processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sentencepiece")

from support.training import TINY_FLAGS, quiet_env, write_corpus  # noqa: E402
from tinystories.cli.train import build_parser, config_kwargs  # noqa: E402
from tinystories.training.config import TrainConfig  # noqa: E402
from tinystories.training.loop import train  # noqa: E402
from tinystories.training.runlog import read_metrics  # noqa: E402

# --grad-accum 3 over 2 processes: the uneven split (2 micro-batches and 1).
RUN = [*TINY_FLAGS, "--grad-accum", "3", "--max-iters", "8", "--eval-interval", "4"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun(*flags: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [*TORCHRUN, "-m", "tinystories.train", *flags],
        capture_output=True,
        text=True,
        timeout=300,
        env=quiet_env(),  # OMP_NUM_THREADS=1 in each process
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    return done


def config(*flags: str) -> TrainConfig:
    return TrainConfig(**config_kwargs(build_parser().parse_args([*RUN, *flags])))


def largest_difference(rows: list[dict], reference: list[dict]) -> float:
    assert [r["iter"] for r in rows] == [r["iter"] for r in reference]
    assert [r["lr"] for r in rows] == [r["lr"] for r in reference]
    assert [r["tokens"] for r in rows] == [r["tokens"] for r in reference]
    assert ["val_loss" in r for r in rows] == ["val_loss" in r for r in reference]
    return max(
        abs(row[key] - ref[key])
        for row, ref in zip(rows, reference, strict=True)
        for key in ("loss", "val_loss")
        if key in ref
    )


def test_two_processes_match_one(tmp_path):
    corpus = str(write_corpus(tmp_path / "stories.txt"))
    data = ["--data", corpus, "--data-dir", str(tmp_path / "data"), "--no-progress"]
    one = train(config(*data, "--out", str(tmp_path / "one")), log=lambda *a: None)

    two = torchrun(*RUN, *data, "--out", str(tmp_path / "two"))
    rows = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert largest_difference(rows, one.metrics) < 1e-4
    assert two.stdout.count("done: 8 iterations") == 1  # the main process reports
    assert "2 processes" in two.stdout and (tmp_path / "two" / "model.bin").is_file()


def test_resume_with_another_number_of_processes(tmp_path):
    corpus = str(write_corpus(tmp_path / "stories.txt"))
    data = ["--data", corpus, "--data-dir", str(tmp_path / "data"), "--no-progress"]
    one = train(config(*data, "--out", str(tmp_path / "one")), log=lambda *a: None)
    half = config(*data, "--out", str(tmp_path / "resumed"))
    half.stop_iter = 4  # one process to iteration 4, then two processes to the end
    train(half, log=lambda *a: None)

    done = torchrun(*RUN, *data, "--out", str(tmp_path / "resumed"), "--resume")
    assert "resuming from" in done.stdout and "at iteration 4" in done.stdout
    rows = read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert largest_difference(rows, one.metrics) < 1e-4
