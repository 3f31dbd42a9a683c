"""The bad-input contract end to end: Python API, ``tinystories-run`` and ``python -m tinystories``.

tests/test_errors.py covers most cases through the Python API one by one; here
every bad file of the contract is built once and checked in the three front
ends: the Python exception type, the message naming the file and the reason,
and from each CLI exit status 1 with exactly one line on stderr
(``tinystories-run: <message>`` / ``tinystories: error: <message>``).
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.files import synthetic_vocab
from test_golden import run_binary
from tinystories import FormatError, Generator, Tokenizer
from tinystories.formats.llama2c import MAGIC, ModelConfig, random_weights, write_model
from tinystories.formats.tokenizer_bin import write_tokenizer

CONFIG = ModelConfig(
    dim=16, hidden_dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=40, seq_len=8
)
TIMEOUT = 60  # seconds per CLI run: generous, only to turn a hang into a failure


@dataclass(frozen=True)
class Case:
    """A bad model or tokenizer file: what Python raises and what the message says."""

    name: str
    which: str  # "model" or "tokenizer": the file that is bad
    error: type[BaseException]
    reason: str  # a regex the message must match, besides the path


def v1_header(**changes: int) -> bytes:
    fields = dict(
        dim=16, hidden_dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=40, seq_len=8
    )
    fields.update(changes)
    return struct.pack("<Ii7iB", MAGIC, 1, *fields.values(), 1).ljust(256, b"\0")


def v0_header(**changes: int) -> bytes:
    fields = dict(
        dim=16, hidden_dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=40, seq_len=8
    )
    fields.update(changes)
    return struct.pack("<7i", *fields.values())


def with_header(data: bytes, header: bytes) -> bytes:
    return header + data[len(header) :]


CASES = [
    Case("missing", "model", FileNotFoundError, "no such file"),
    Case("missing", "tokenizer", FileNotFoundError, "no such file"),
    Case("directory", "model", IsADirectoryError, "is a directory"),
    Case("directory", "tokenizer", IsADirectoryError, "is a directory"),
    Case("fifo", "model", OSError, "not a regular file"),
    Case("fifo", "tokenizer", OSError, "not a regular file"),
    Case("empty", "model", FormatError, "file is empty"),
    Case("empty", "tokenizer", FormatError, "file is empty"),
    Case("truncated", "model", FormatError, r"header implies \d+ \(truncated"),
    Case("truncated_header", "model", FormatError, "smaller than the 256-byte header"),
    Case("wrong_magic", "model", FormatError, r"as a v0 \(legacy, no 'ak42' magic\) file"),
    Case("unknown_version", "model", FormatError, "unsupported version 3"),
    Case("negative_dim", "model", FormatError, "dim is -16, must be positive"),
    Case("zero_layers", "model", FormatError, "n_layers is 0, must be positive"),
    Case("zero_vocab", "model", FormatError, "vocab_size is 0, must be positive"),
    Case("negative_seq_len", "model", FormatError, "seq_len is -8, must be positive"),
    Case("overflow", "model", FormatError, "overflow 64-bit sizes"),
    Case("heads_not_dividing", "model", FormatError, "dim 16 is not a multiple of n_heads 3"),
    Case("kv_heads_not_dividing", "model", FormatError, "n_heads 4 is not a multiple of n_kv"),
    Case("group_size_zero", "model", FormatError, "group_size is 0, must be positive"),
    Case("group_size_not_dividing", "model", FormatError, "group_size 6 does not divide dim 16"),
    Case("huge_seq_len", "model", FormatError, "seq_len 2147483647 needs .* KV cache"),
    Case("negative_length", "tokenizer", FormatError, "entry 2 has length -5"),
    Case("length_past_end", "tokenizer", FormatError, "entry 1 .* runs past the end"),
    Case("vocab_mismatch", "tokenizer", ValueError, "tokenizer has 30 tokens but .* vocab_size 40"),
    Case("vocab_larger", "tokenizer", ValueError, "tokenizer has 60 tokens but .* vocab_size 40"),
]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("contract_good")
    weights = random_weights(CONFIG)
    files = {
        f"v{v}": write_model(root / f"good_v{v}.bin", CONFIG, weights, version=v, group_size=8)
        for v in (0, 1, 2)
    }
    files["tokenizer"] = write_tokenizer(root / "good.tok", *synthetic_vocab(CONFIG.vocab_size))
    return files


def make_bad(case: Case, good: dict[str, Path], root: Path) -> Path:
    """Writes the bad file of ``case`` under ``root`` (a name that shows in messages)."""
    path = root / f"bad_{case.name}.{'bin' if case.which == 'model' else 'tok'}"
    v0, v1, v2 = (good[f"v{v}"].read_bytes() for v in (0, 1, 2))
    tok = good["tokenizer"].read_bytes()
    blobs = {
        "empty": b"",
        "truncated": v1[:-3],
        "truncated_header": v1[:100],
        "wrong_magic": b"ak43" + v1[4:],
        "unknown_version": v1[:4] + struct.pack("<i", 3) + v1[8:],
        "negative_dim": with_header(v0, v0_header(dim=-16)),
        "zero_layers": with_header(v1, v1_header(n_layers=0)),
        "zero_vocab": with_header(v0, v0_header(vocab_size=0)),
        "negative_seq_len": with_header(v1, v1_header(seq_len=-8)),
        "overflow": with_header(v1, v1_header(dim=2**30, hidden_dim=2**30, n_layers=2**30)),
        "heads_not_dividing": with_header(v1, v1_header(n_heads=3)),
        "kv_heads_not_dividing": with_header(v1, v1_header(n_heads=4, n_kv_heads=3)),
        "group_size_zero": v2[:37] + struct.pack("<i", 0) + v2[41:],
        "group_size_not_dividing": v2[:37] + struct.pack("<i", 6) + v2[41:],
        "huge_seq_len": with_header(v1, v1_header(seq_len=2**31 - 1)),
        # entries: <unk>, BOS, then a negative length
        "negative_length": tok[: 4 + 8 + 5 + 8 + 5] + struct.pack("<fi", 0.0, -5) + b"x" * 8,
        "length_past_end": tok[: 4 + 8 + 5] + struct.pack("<fi", 0.0, 5) + b"ab",
    }
    if case.name == "missing":
        return path
    if case.name == "directory":
        path.mkdir()
    elif case.name == "fifo":
        os.mkfifo(path)
    elif case.name.startswith("vocab_"):
        write_tokenizer(path, *synthetic_vocab(30 if case.name == "vocab_mismatch" else 60))
    else:
        path.write_bytes(blobs[case.name])
    return path


def arguments(case: Case, good: dict[str, Path], tmp_path: Path) -> tuple[Path, Path, Path]:
    """(model, tokenizer, the bad one) for ``case``; the other file is a good one."""
    bad = make_bad(case, good, tmp_path)
    if case.which == "model":
        return bad, good["tokenizer"], bad
    return good["v0"], bad, bad


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.which}-{c.name}")
def test_python_api(case: Case, good, tmp_path):
    model, tokenizer, bad = arguments(case, good, tmp_path)
    with pytest.raises(case.error, match=case.reason) as info:
        Generator(model, tokenizer)
    assert str(bad) in str(info.value), "the message names the file"
    if case.which == "tokenizer" and not case.name.startswith("vocab_"):
        with pytest.raises(case.error, match=case.reason):
            Tokenizer(bad)


def assert_one_line(result: subprocess.CompletedProcess, prefix: str, path: Path, reason: str):
    import re

    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 1, f"exit {result.returncode}, stderr: {stderr}"
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    assert lines[0].startswith(prefix), lines[0]
    assert str(path) in lines[0], lines[0]
    assert re.search(reason, lines[0]), f"{reason!r} not in {lines[0]!r}"


def run_cli(words: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(words, capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.which}-{c.name}")
def test_tinystories_run(case: Case, good, tmp_path):
    model, tokenizer, bad = arguments(case, good, tmp_path)
    result = run_cli([run_binary(), str(model), "-z", str(tokenizer), "-n", "4", "-s", "1"])
    assert_one_line(result, "tinystories-run: ", bad, case.reason)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.which}-{c.name}")
def test_python_cli(case: Case, good, tmp_path):
    model, tokenizer, bad = arguments(case, good, tmp_path)
    words = [sys.executable, "-m", "tinystories", "generate", "tea"]
    result = run_cli(words + ["--model", str(model), "--tokenizer", str(tokenizer), "-n", "4"])
    assert_one_line(result, "tinystories: error: ", bad, case.reason)


def test_python_cli_debug_shows_traceback(good, tmp_path):
    bad = make_bad(Case("empty", "model", FormatError, ""), good, tmp_path)
    words = [sys.executable, "-m", "tinystories", "--debug", "generate", "tea"]
    result = run_cli(words + ["--model", str(bad), "--tokenizer", str(good["tokenizer"])])
    assert result.returncode != 0
    assert b"Traceback" in result.stderr and b"FormatError" in result.stderr


# ------------------------------------------------------------- arguments

ARGUMENT_CASES = [
    # (Python CLI flags, regex)
    (["--temperature", "nan"], "temperature"),
    (["--temperature", "inf"], "temperature"),
    (["--temperature", "-1"], "temperature"),
    (["--top-p", "1.5"], "top_p"),
    (["--top-p", "-0.5"], "top_p"),
    (["--top-p", "nan"], "top_p"),
    (["--top-k", "-1"], "top_k"),
    (["--max-new-tokens", "-1"], "max_new_tokens"),
    (["--seed", "-1"], "seed"),
]


@pytest.mark.parametrize("flags, reason", ARGUMENT_CASES, ids=lambda v: str(v))
def test_python_cli_bad_arguments(flags, reason, good):
    words = [sys.executable, "-m", "tinystories", "generate", "tea", "--model", str(good["v1"])]
    result = run_cli(words + ["--tokenizer", str(good["tokenizer"])] + flags)
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert len(stderr.splitlines()) == 1 and stderr.startswith("tinystories: error: "), stderr
    assert reason in stderr


def test_python_cli_prompt_longer_than_context(good):
    words = [sys.executable, "-m", "tinystories", "generate", "tea toast " * 10]
    result = run_cli(words + ["--model", str(good["v2"]), "--tokenizer", str(good["tokenizer"])])
    stderr = result.stderr.decode()
    assert result.returncode == 1 and len(stderr.splitlines()) == 1, stderr
    assert "tinystories: error: the prompt is" in stderr and "context is 8" in stderr


@pytest.mark.parametrize("flags", [["-t", "nan"], ["-t", "inf"], ["-p", "nan"]])
def test_tinystories_run_non_finite_sampling(flags, good):
    words = [run_binary(), str(good["v0"]), "-z", str(good["tokenizer"]), "-s", "1", *flags]
    result = run_cli(words)
    stderr = result.stderr.decode()
    assert result.returncode == 1 and len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("tinystories-run: ") and ("temperature" in stderr or "top_p" in stderr)


def test_tinystories_run_keeps_run_c_clamps(good):
    """run.c's documented fallbacks stay: -t < 0 is greedy, -p outside [0, 1] is 0.9, -n < 0 all."""
    base = [run_binary(), str(good["v0"]), "-z", str(good["tokenizer"]), "-s", "7", "-i", "tea"]
    greedy = run_cli(base + ["-t", "0", "-n", "0"])
    assert greedy.returncode == 0, greedy.stderr
    assert run_cli(base + ["-t", "-1", "-n", "-5"]).stdout == greedy.stdout
    default_p = run_cli(base + ["-p", "0.9"])
    assert run_cli(base + ["-p", "1.5"]).stdout == default_p.stdout


def test_tinystories_run_prompt_longer_than_context(good):
    words = [run_binary(), str(good["v1"]), "-z", str(good["tokenizer"]), "-i", "tea toast " * 10]
    result = run_cli(words)
    stderr = result.stderr.decode()
    assert result.returncode == 1 and len(stderr.splitlines()) == 1, stderr
    assert "tinystories-run: the prompt is" in stderr and "context is 8" in stderr


# ------------------------------------------------- the session-memory bound


def test_seq_len_bound_policy(good, tmp_path):
    """seq_len is free in a v1/v2 header: the KV cache it implies (seq_len
    rounded up to whole key blocks of 16 positions) is bounded by max(1 GiB,
    4 x file size); below that a long context loads and runs."""
    v1 = good["v1"].read_bytes()
    per_position = 4 * (2 * CONFIG.n_layers * CONFIG.kv_dim + CONFIG.n_heads)
    fits = (1 << 30) // per_position // 16 * 16
    ok = tmp_path / "long_context.bin"
    ok.write_bytes(with_header(v1, v1_header(seq_len=fits)))
    generator = Generator(ok, good["tokenizer"])
    assert generator.config.seq_len == fits
    assert isinstance(generator.generate("tea", max_new_tokens=3, seed=1), str)
    too_long = tmp_path / "too_long_context.bin"
    too_long.write_bytes(with_header(v1, v1_header(seq_len=fits + 1)))
    with pytest.raises(FormatError, match=f"seq_len {fits + 1} needs {(fits + 16) * per_position}"):
        Generator(too_long, good["tokenizer"])


def test_sampling_contract_is_checked_before_any_work(good):
    generator = Generator(good["v0"], good["tokenizer"])
    for kwargs in ({"temperature": math.nan}, {"top_p": math.inf}, {"top_k": -3}):
        with pytest.raises(ValueError):
            generator.generate("tea", **kwargs)
    # and the generator still works afterwards
    assert generator.generate("tea", max_new_tokens=2, seed=3) == generator.generate(
        "tea", max_new_tokens=2, seed=3
    )
