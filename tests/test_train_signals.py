"""Never lose work: SIGINT and SIGTERM end training after the current iteration with a
checkpoint there and the command that resumes; a second signal exits at once; a SIGKILL
at any moment leaves the previous checkpoint whole; --checkpoint-interval."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sentencepiece")

from support.training import TINY_CONFIG, TINY_FLAGS, TRAIN, quiet_env, write_corpus  # noqa: E402
from tinystories.training.checkpoint import read_checkpoint, save_checkpoint  # noqa: E402
from tinystories.training.config import TrainConfig  # noqa: E402
from tinystories.training.loop import train  # noqa: E402
from tinystories.training.runlog import read_metrics  # noqa: E402

# A run far longer than any test: only a signal ends it. No checkpoint but the signal's.
ENDLESS = ["--max-iters", "1000000", "--eval-interval", "1000000", "--no-progress"]


def start(words: list[str], log_dir) -> subprocess.Popen:
    return subprocess.Popen(
        words,
        stdout=open(log_dir / "stdout.txt", "w"),
        stderr=open(log_dir / "stderr.txt", "w"),
        stdin=subprocess.DEVNULL,
        env=quiet_env(),
    )


def wait_for_rows(process: subprocess.Popen, metrics, count: int) -> None:
    """Until ``metrics`` has ``count`` rows (the run is training), or fail."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, "training ended early"
        if metrics.exists() and len(read_metrics(metrics)) >= count:
            return
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"{metrics} did not reach {count} rows")


def test_signals_checkpoint_print_the_resume_command_and_resuming_continues(tmp_path):
    corpus = write_corpus(tmp_path / "stories.txt")
    out = tmp_path / "out"
    flags = ["--data", str(corpus), "--out", str(out), "--checkpoint-interval", "1000000"]
    first = start([*TRAIN, *flags, *ENDLESS, *TINY_FLAGS], tmp_path)
    wait_for_rows(first, out / "metrics.jsonl", 3)
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=120) == 130
    err = (tmp_path / "stderr.txt").read_text()
    assert "SIGINT: stopping after this iteration with a checkpoint" in err
    stopped = re.search(r"SIGINT: stopped at iteration (\d+); checkpoint (\S+)", err)
    assert stopped and stopped.group(2) == str(out / "ckpt.pt"), err
    at = int(stopped.group(1))
    assert read_checkpoint(out / "ckpt.pt")["iter"] == at
    assert read_metrics(out / "metrics.jsonl")[-1]["iter"] == at
    command = re.search(r"^to resume: (.+)$", err, re.MULTILINE).group(1)
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "tinystories.train"] and words[-1] == "--resume"
    assert words[3:-1] == [*flags, *ENDLESS, *TINY_FLAGS]

    # the printed command continues from there; SIGTERM stops it the same way
    second = start([sys.executable, *words[1:]], tmp_path)
    wait_for_rows(second, out / "metrics.jsonl", at + 3)
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=120) == 143
    assert (
        f"resuming from {out / 'ckpt.pt'} at iteration {at}"
        in (tmp_path / "stdout.txt").read_text()
    )
    err = (tmp_path / "stderr.txt").read_text()
    again = int(re.search(r"SIGTERM: stopped at iteration (\d+)", err).group(1))
    assert again > at + 2 and read_checkpoint(out / "ckpt.pt")["iter"] == again
    rows = read_metrics(out / "metrics.jsonl")
    assert [row["iter"] for row in rows] == list(range(1, again + 1))


HANDLERS = """
import os, signal, sys, time
from tinystories.training.loop import StopSignals
with StopSignals(announce=False, under_torchrun={torchrun}) as signals:
    os.kill(os.getpid(), signal.SIGINT)  # the handler runs before the next line
    print("stop asked:", signals.received == signal.SIGINT, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    print("still here", flush=True)
    time.sleep(1.5)  # past the grace for a repeat under torchrun
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(1)
    print("not reached", flush=True)
"""


@pytest.mark.parametrize("torchrun", [False, True])
def test_a_second_signal_exits_at_once(torchrun):
    """Under torchrun a repeat within a second is the same request (a machine shutting
    down signals every worker, and torchrun forwards its own signal too)."""
    done = subprocess.run(
        [sys.executable, "-c", HANDLERS.format(torchrun=torchrun)],
        capture_output=True,
        text=True,
        timeout=60,
        env=quiet_env(),
    )
    assert done.returncode == 143, done.stderr
    expected = "stop asked: True\n" + ("still here\n" if torchrun else "")
    assert done.stdout == expected


def test_the_handlers_are_put_back(tmp_path):
    corpus = write_corpus(tmp_path / "stories.txt")
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    train(TrainConfig(data=str(corpus), out_dir=str(tmp_path), **TINY, max_iters=2), log=quiet)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_sigkill_leaves_the_previous_checkpoint_whole(tmp_path):
    corpus = write_corpus(tmp_path / "stories.txt")
    out = tmp_path / "out"
    flags = ["--data", str(corpus), "--out", str(out), "--checkpoint-interval", "1"]
    run = start([*TRAIN, *flags, *ENDLESS, *TINY_FLAGS], tmp_path)
    wait_for_rows(run, out / "metrics.jsonl", 8)  # a checkpoint every iteration meanwhile
    run.kill()
    run.wait(timeout=60)
    assert read_checkpoint(out / "ckpt.pt")["iter"] >= 7


def test_a_write_that_fails_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"iter": 1})

    def dies_half_way(state, file):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"iter": 2})
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"iter": 1}


TINY = {**TINY_CONFIG, "num_threads": 1}


def quiet(*args):
    pass


def test_checkpoint_interval_in_iterations(tmp_path):
    corpus = write_corpus(tmp_path / "stories.txt")
    saved = []

    def record(path):
        iteration = torch.load(path, weights_only=False)["iter"] if path.suffix == ".pt" else None
        saved.append((path.name, iteration))

    config = TrainConfig(
        data=str(corpus), out_dir=str(tmp_path), max_iters=10, eval_interval=5,
        checkpoint_interval="3", **TINY,
    )  # fmt: skip
    train(config, log=quiet, on_checkpoint=record)
    assert saved == [("ckpt.pt", i) for i in (3, 5, 6, 9, 10)] + [("model.bin", None)]
