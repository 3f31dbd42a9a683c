"""Smoke test of the benchmark tool, so it cannot rot (speeds are not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def test_bench_quick(tok105, tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tinystories.bench",
            "--quick",
            "--models",
            str(tok105["model"].parent),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "kernel sets:" in result.stdout
    data = json.loads(out.read_text())
    groups = {row["group"] for row in data["results"]}
    assert {"decode", "prefill", "batch", "load", "memory"} <= groups
    assert data["machine"]["kernel_sets"][-1] == "scalar"
    for row in data["results"]:
        assert row["value"] > 0, row


def test_bench_compares_api_and_cli_like_for_like(tok105, tmp_path):
    """The decode table puts the API next to tinystories-run on the same work and
    states their ratio (the Python overhead) and each one's fixed cost per call."""
    from tinystories import bench

    args = bench.build_parser().parse_args(
        ["--quick", "--no-torch", "--models", str(tok105["model"].parent)]
    )
    _, rows = bench.measure(args)
    table = {(r.group, r.program, r.setting): r for r in rows}
    assert bench.run_binary(), "tinystories-run is installed with the package"
    for model, setting in (("fp32", "fp32, threads auto"), ("q80", "q80 (v2 file), threads auto")):
        api = table["decode", "tinystories `Generator.generate`", setting]
        cli = table["decode", "tinystories-run (CLI)", model]
        ratio = table["overhead", "python overhead: API/CLI rate", model]
        assert ratio.unit == "x" and len(ratio.runs) == len(api.runs) == len(cli.runs)
        # the median of per-round ratios: between the smallest and largest round's
        per_round = [a / c for a, c in zip(api.runs, cli.runs, strict=True)]
        assert min(per_round) <= ratio.value <= max(per_round)
        assert ("decode", "tinystories `Generator.generate`, whole call", setting) in table
        assert ("decode", "tinystories `Generator.stream`", setting) in table
        assert ("overhead", "fixed cost: `generate`, 1 position", setting) in table
        assert ("overhead", "fixed cost: tinystories-run -n 1", model) in table


def test_difference_rate():
    from tinystories.bench import difference_rate

    assert difference_rate(257, 2.5, 0.5) == 128.0
    assert difference_rate(257, 0.5, 0.5) != difference_rate(257, 0.5, 0.5)  # NaN


def test_bench_shapes_smoke(tmp_path):
    """--shapes on the tiny shape: the path that measures the real shapes runs end to
    end and reports every kind of row (speeds are not asserted)."""
    out = tmp_path / "shapes.json"
    command = [sys.executable, "-m", "tinystories.bench", "--shapes", "tiny", "--quick"]
    command += ["--shapes-dir", str(tmp_path / "shapes"), "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["results"]
    groups = {row["group"] for row in rows}
    assert {"bandwidth", "decode", "prefill", "batch", "sampler", "load", "memory"} <= groups
    assert {"fraction", "ratio"} <= groups
    programs = {row["program"] for row in rows if row["group"] == "decode"}
    assert {"tinystories Generator.generate", "tinystories-run"} <= programs
    for row in rows:
        assert row["value"] > 0, row
    # the shape's files stay for the next run: written once, seeded
    files = sorted(p.name for p in (tmp_path / "shapes").iterdir())
    assert files == ["tiny.bin", "tiny_q80.bin", "tok512.bin"]


def test_a_crashing_llama_bench_is_reported_not_dropped(tmp_path, capsys):
    """A peer that dies (here by SIGILL, as a GGML_NATIVE build on a host that lists AMX
    but traps on it does) leaves its rows out with a warning saying which and why."""
    from tinystories.bench_shapes import llama_bench

    fake = tmp_path / "llama-bench"
    fake.write_text("#!/bin/sh\necho 'ggml: about to crash' >&2\nkill -ILL $$\n")
    fake.chmod(0o755)
    gguf = tmp_path / "m_q8_0.gguf"
    gguf.write_bytes(b"")
    assert llama_bench(str(fake), gguf, [1, 2]) == {}
    warning = capsys.readouterr().err
    assert "llama-bench on m_q8_0.gguf exited with status -4" in warning
    assert "ggml: about to crash" in warning


def test_bench_serve_smoke(tok105, tmp_path):
    """--serve --quick: streaming clients against a loopback server, beside generate_batch
    on the same work; every row present and positive (speeds are not asserted)."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    out = tmp_path / "serve.json"
    command = [sys.executable, "-m", "tinystories.bench", "--serve", "--quick"]
    command += ["--models", str(tok105["model"].parent), "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["results"]
    settings = {row["setting"] for row in rows}
    assert settings == {"tok105, 1 clients", "tok105, 4 clients"}
    programs = {row["program"].strip() for row in rows}
    assert {"tinystories serve", "generate_batch, same work", "time to first token p50"} <= programs
    for row in rows:
        if "gap" in row["program"]:
            # NaN: every stream came in one chunk; 0: most tokens shared a read with the
            # one before (a fast model on one client), which the gaps count as 0 apart
            assert row["value"] != row["value"] or row["value"] >= 0, row
            continue
        assert row["value"] > 0, row


FAKE_LLAMA_SERVER = """#!{python}
# llama-server's command line in, `tinystories serve` on the same port out
import json, os, sys
args = sys.argv[1:]
flag = lambda name: args[args.index(name) + 1]
with open(os.environ["FAKE_ARGV"], "w") as f:
    json.dump(args, f)
assert os.path.getsize(flag("-m")) > 0
os.execv(sys.executable, [sys.executable, "-m", "tinystories", "serve", "--port", flag("--port"),
         "--model", os.environ["FAKE_MODEL"], "--tokenizer", os.environ["FAKE_TOKENIZER"],
         "--parallel", flag("-np")])
"""


def test_bench_serve_beside_llama_server(tok105, tmp_path):
    """--llama-server: the bench converts the model to GGUF, starts the binary with llama.cpp's
    flags (slots, context per slot x slots, equal threads) and streams the same clients from
    it. A stand-in that serves our own engine on the port it is given takes its place."""
    pytest.importorskip("fastapi")
    pytest.importorskip("gguf")
    fake = tmp_path / "llama-server"
    fake.write_text(FAKE_LLAMA_SERVER.format(python=sys.executable))
    fake.chmod(0o755)
    out, argv = tmp_path / "serve.json", tmp_path / "argv.json"
    command = [sys.executable, "-m", "tinystories.bench", "--serve", "--quick", "--json", str(out),
               "--models", str(tok105["model"].parent), "--llama-server", str(fake),
               "--shapes-dir", str(tmp_path / "gguf")]  # fmt: skip
    env = {**os.environ, "FAKE_ARGV": str(argv), "FAKE_MODEL": str(tok105["model"]),
           "FAKE_TOKENIZER": str(tok105["tokenizer"])}  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    args = json.loads(argv.read_text())
    assert args[args.index("-m") + 1] == str(tmp_path / "gguf" / "model5000.tinystories.f32.gguf")
    assert [args[args.index(f) + 1] for f in ("-np", "-c", "-t")] == ["4", str(4 * 256), "2"]
    rows = {(r["program"].strip(), r["setting"]): r["value"]
            for r in json.loads(out.read_text())["results"]}  # fmt: skip
    for setting in ("tok105, 1 clients", "tok105, 4 clients"):
        assert rows["llama-server -np 4", setting] > 0
        assert rows["serve / llama-server", setting] > 0


def test_bench_shapes_unknown_name_is_a_clear_error(tmp_path):
    command = [sys.executable, "-m", "tinystories.bench", "--shapes", "stories9000M", "--quick"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "unknown shape(s) stories9000M" in result.stderr and "stories110M" in result.stderr


def test_stream_bandwidth_and_sampler_bindings():
    import numpy as np
    from tinystories import SamplingParams, _core
    from tinystories.inference.sampling import engine_options

    assert _core.stream_read_gbps(1 << 20, 1, 1) > 0
    assert _core.stream_read_gbps(1 << 20, 0, 1) == -1  # out of range, not a crash
    logits = np.linspace(-1, 1, 300, dtype=np.float32)
    before = logits.copy()
    greedy = engine_options(SamplingParams(temperature=0.0, seed=1))
    assert _core.Sampler(300, greedy).sample(logits) == 299  # greedy: the argmax
    assert np.array_equal(logits, before)  # the caller's logits are left as they were
    seeded = engine_options(SamplingParams(seed=7))
    a = [_core.Sampler(300, seeded).sample(logits) for _ in range(2)]
    assert a[0] == a[1]  # a seed is a sequence
    with pytest.raises(ValueError, match="vocab_size"):
        _core.Sampler(300, seeded).sample(logits[:10])
