"""Smoke test of the benchmark tool, so it cannot rot (speeds are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys


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
