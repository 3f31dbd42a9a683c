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
