"""torchrun: 2 processes on CPU (gloo) train the batches one process trains, so the loss
curve matches a single-process run within 1e-4 in fp32; --resume works with another
number of processes; a signal stops every process at the same iteration."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_signal_to_one_process_stops_every_process_at_one_iteration(tmp_path):
    """The two processes started as torchrun starts them (its environment), so that each
    one's exit status is seen; SIGTERM reaches rank 1 only."""
    corpus = str(write_corpus(tmp_path / "stories.txt"))
    out = tmp_path / "out"
    flags = [*TINY_FLAGS, "--grad-accum", "2", "--max-iters", "1000000", "--no-progress"]
    flags += ["--data", corpus, "--out", str(out), "--eval-interval", "1000000"]
    env = {**quiet_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    env.update(WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    ranks = [
        subprocess.Popen(
            [sys.executable, "-m", "tinystories.train", *flags],
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / f"rank{rank}.txt", "w"),
            stdin=subprocess.DEVNULL,
        )
        for rank in (0, 1)
    ]
    deadline = time.monotonic() + 240
    while not (out / "metrics.jsonl").exists() or len(read_metrics(out / "metrics.jsonl")) < 3:
        assert time.monotonic() < deadline and all(p.poll() is None for p in ranks)
        time.sleep(0.05)
    ranks[1].send_signal(signal.SIGTERM)
    assert [p.wait(timeout=120) for p in ranks] == [143, 143]
    err = (tmp_path / "rank0.txt").read_text()
    at = int(re.search(r"SIGTERM: stopped at iteration (\d+)", err).group(1))
    assert torch.load(out / "ckpt.pt", weights_only=False)["iter"] == at
    assert "to resume: torchrun --nproc_per_node=2 -m tinystories.train " in err
    assert "to resume" not in (tmp_path / "rank1.txt").read_text()  # rank 0 reports
