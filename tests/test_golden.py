"""Byte-for-byte equality with llama2.c's run/runq (../shared/golden)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tinystories
from tinystories import Generator

# Every kernel set this CPU runs must reproduce llama2.c.
KERNEL_SETS = tinystories.kernels()


def run_binary() -> str:
    """The installed tinystories-run (next to this Python's scripts)."""
    candidate = Path(sysconfig.get_path("scripts")) / "tinystories-run"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("tinystories-run")
    assert found, "tinystories-run is not installed with the package"
    return found


def cli_arguments(entry: dict, models: Path) -> list[str]:
    """The golden `command`, pointed at ../shared and our binary."""
    words = shlex.split(entry["command"])
    assert words[0] in ("run", "runq")
    words[0] = run_binary()
    words[1] = str(models / words[1])
    words[words.index("-z") + 1] = str(models / words[words.index("-z") + 1])
    return words


def test_golden_has_six_entries(golden):
    assert len(golden) == 6
    assert {e["program"] for e in golden} == {"llama2.c run.c", "llama2.c runq.c"}


@pytest.mark.parametrize("kernels", KERNEL_SETS)
@pytest.mark.parametrize("index", range(6))
def test_cli_matches_llama2c(golden, tok105, index, kernels):
    entry = golden[index]
    models = tok105["model"].parent
    env = dict(os.environ, TINYSTORIES_KERNELS=kernels)
    result = subprocess.run(cli_arguments(entry, models), capture_output=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == entry["stdout"]
    assert result.stderr.decode().startswith("achieved tok/s: ")


@pytest.mark.parametrize("index", range(6))
def test_cli_exact_mode_matches_llama2c(golden, tok105, index):
    """``-k exact`` (the scalar kernels: run.c's rounding) wins over TINYSTORIES_KERNELS."""
    entry = golden[index]
    env = dict(os.environ, TINYSTORIES_KERNELS=KERNEL_SETS[0])
    command = [*cli_arguments(entry, tok105["model"].parent), "-k", "exact"]
    result = subprocess.run(command, capture_output=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == entry["stdout"]
    bad = subprocess.run([*command[:-1], "no-such-set"], capture_output=True, timeout=120)
    assert bad.returncode != 0 and b"unknown kernel set" in bad.stderr


@pytest.mark.parametrize("kernels", KERNEL_SETS)
@pytest.mark.parametrize("index", range(6))
def test_generator_matches_llama2c(golden, tok105, index, kernels):
    entry = golden[index]
    generator = Generator(
        tok105["model"].parent / entry["model"], tok105["tokenizer"], kernels=kernels
    )
    assert generator.kernels == kernels
    assert entry["steps"] == generator.config.seq_len
    kwargs = dict(
        temperature=entry["temperature"], top_p=entry["topp"], seed=entry["seed"] or None
    )  # run.c's seed 0 means "clock"; greedy ignores it
    completion = generator.generate(entry["prompt"], **kwargs)
    assert entry["prompt"] + completion + "\n" == entry["stdout"]
    assert "".join(generator.stream(entry["prompt"], **kwargs)) == completion


def test_python_module_cli_matches_llama2c(golden, tok105):
    entry = golden[1]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tinystories",
            "generate",
            "--raw",  # the golden stdout has run.c's literal <unk>
            "--no-context-shift",  # run.c stops at the end of the context
            entry["prompt"],
            "--model",
            str(tok105["model"]),
            "--tokenizer",
            str(tok105["tokenizer"]),
            "--temperature",
            str(entry["temperature"]),
            "--top-p",
            str(entry["topp"]),
            "--seed",
            str(entry["seed"]),
        ],
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == entry["stdout"]


def test_python_module_cli_errors_are_one_line(tok105, tmp_path):
    base = [sys.executable, "-m", "tinystories", "generate", "Hi", "--model", str(tok105["model"])]
    cases = [
        (["--tokenizer", str(tmp_path / "missing.bin")], "missing.bin"),
        (["--tokenizer", str(tok105["tokenizer"]), "--temperature", "nan"], "temperature"),
        (["--tokenizer", str(tok105["model"])], "model5000.bin"),
    ]
    for extra, reason in cases:
        result = subprocess.run(base + extra, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("tinystories: error: ") and reason in lines[0]


def test_run_binary_errors_are_one_line(tok105, tmp_path):
    cases = [
        ([str(tmp_path / "none.bin"), "-z", str(tok105["tokenizer"])], "none.bin"),
        ([str(tok105["model"]), "-z", str(tmp_path / "none.tok")], "none.tok"),
        ([str(tok105["model"]), "-z", str(tok105["tokenizer"]), "-m", "chat"], "chat"),
    ]
    for args, reason in cases:
        result = subprocess.run([run_binary(), *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tinystories-run: ") and reason in lines[0]


@pytest.mark.parametrize("kernels", KERNEL_SETS)
@pytest.mark.parametrize("index", [4, 5])
def test_quantized_on_load_matches_runq(golden, tok105, index, kernels):
    """An fp32 file quantized on load is the v2 file export.py writes: runq's outputs."""
    entry = golden[index]
    assert entry["model"] == "model5000_q80.bin"
    generator = Generator(tok105["model"], tok105["tokenizer"], quantize="q8_0", kernels=kernels)
    assert generator.config.version == 0  # the file's format; the weights are Q8_0
    kwargs = dict(temperature=entry["temperature"], top_p=entry["topp"], seed=entry["seed"] or None)
    assert entry["prompt"] + generator.generate(entry["prompt"], **kwargs) + "\n" == entry["stdout"]


@pytest.mark.parametrize("kernels", KERNEL_SETS)
def test_generate_batch_matches_llama2c(golden, tok105, kernels):
    """All fp32 golden prompts in one batch (two slots: slots are reused)."""
    entries = [e for e in golden if e["model"] == "model5000.bin" and e["seed"]]
    generator = Generator(tok105["model"], tok105["tokenizer"], kernels=kernels)
    for entry in entries:
        assert entry["temperature"] > 0
    completions = generator.generate_batch(
        [e["prompt"] for e in entries] * 2,
        temperature=entries[0]["temperature"],
        top_p=entries[0]["topp"],
        seed=[e["seed"] for e in entries] * 2,
        max_batch=2,
    )
    first = entries[0]
    assert first["prompt"] + completions[0] + "\n" == first["stdout"]
    assert completions[len(entries)] == completions[0]
