"""``python -m tinystories.bench``: the engine's speed, side by side with its peers.

Measures single-stream decode (fp32, Q8_0 files, fp32 quantized on load),
prompt processing, batched generation at several stream counts, load time and
resident memory, and in the same run, when given or installed: llama2.c's
``run``/``runq`` binaries, llama.cpp's ``llama-bench`` and a PyTorch eager
forward of the same weights.

Decode rates follow run.c's definition for every program, positions after the
first per second: the CLIs print theirs; the API's is timed from outside as
(n - 1) / (T(n) - T(1)), T(k) the wall time of a whole ``generate`` call that
evaluates k positions. The "overhead" rows give the API's rate over
tinystories-run's on the same work (the Python overhead) and what one call
costs besides its positions.

Every timing is the median of ``--repeats`` runs, interleaved across programs
so that a busy machine slows all of them alike; the load average is printed
with the table. Writes JSON with ``--json``.

``--shapes stories15M,stories42M,stories110M,tinyllama1b`` measures random-weight
models of the real checkpoints' shapes instead, with the machine's streaming
bandwidth and the same peers (see :mod:`tinystories.bench_shapes`).

This is a tool, not a test: nothing here asserts a speed. ``--quick`` runs a
few seconds' worth of everything (the test suite uses it as a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import _core
from .formats.constants import QUANTIZE_OPTIONS
from .inference import Generator, kernels

PROMPT_TOKENS = 200  # prompt processing is measured on a prompt this long
BATCH_STREAMS = (1, 8, 32, 64)


@dataclass
class Row:
    """One line of the results table."""

    group: str  # what is measured: decode, prefill, batch, load, memory
    program: str  # who: tinystories, llama2.c run -Ofast, ...
    setting: str  # model file, threads, streams
    value: float
    unit: str
    runs: list[float] = field(default_factory=list)


# ----------------------------------------------------------------- machine


def machine_info() -> dict:
    """CPU model, cores, SIMD features and kernel sets, memory, load."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        if m := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
            cpu = m.group(1).strip()
        if m := re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.M):
            flags = set(m.group(1).split())
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "asimd"]
    return {
        "cpu": cpu,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "features": [f for f in wanted if f in flags],
        "kernel_sets": kernels(),
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()),
    }


# ------------------------------------------------------------- measuring


def median_rate(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def interleave_rounds(
    jobs: dict[str, Callable[[], dict[str, float]]], repeats: int
) -> list[dict[str, dict[str, float]]]:
    """Runs every job once per round, `repeats` rounds, for jobs that measure several
    things at once: per round, every job's results by name (kept per round, so that
    ratios can pair rounds)."""
    return [{name: job() for name, job in jobs.items()} for _ in range(repeats)]


def interleave(jobs: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """The same for jobs that measure one thing: each job's results, NaNs (it could not
    run) left out."""
    rounds = interleave_rounds(
        {name: (lambda job=job: {"": job()}) for name, job in jobs.items()}, repeats
    )
    return {name: [r[name][""] for r in rounds if r[name][""] == r[name][""]] for name in jobs}


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def wall(call: Callable[[], object]) -> float:
    """Seconds `call` takes, on the clock of this process."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def best_wall(call: Callable[[], object], times: int) -> float:
    """The shortest of `times` runs of `call`: a difference of two such times is not
    swamped by one run's hiccup (a short job's noise can exceed its work)."""
    return min(wall(call) for _ in range(times))


def difference_rate(positions: int, t_all: float, t_one: float) -> float:
    """(positions - 1) / (t_all - t_one): positions 2.. per second; NaN when the
    difference is not positive (timing noise larger than the work)."""
    return (positions - 1) / (t_all - t_one) if t_all > t_one else float("nan")


def greedy_positions(generator: Generator, positions: int) -> int:
    """Positions a greedy generation from BOS evaluates (fewer than asked if it samples BOS)."""
    generation = generator.start("", max_new_tokens=positions, temperature=0.0, seed=1)
    generation.text()
    return generation.stats["n_positions"]


def ours_decode(generator: Generator, positions: int) -> Callable[[], dict[str, float]]:
    """Greedy generation from BOS through ``Generator.generate``, timed from outside.

    "generate": run.c's definition, (positions - 1) / (T(positions) - T(1)), where T(n) is
    the wall time of a whole ``generate`` call that evaluates n positions: the difference
    leaves out what one position costs (session creation, the first position), as
    run.c's clock does. "whole": positions / T(positions), everything included.
    """

    def run() -> dict[str, float]:
        t1 = best_wall(lambda: generator.generate("", temperature=0.0, max_new_tokens=1), 3)
        tn = best_wall(lambda: generator.generate("", temperature=0.0, max_new_tokens=positions), 2)
        return {"generate": difference_rate(positions, tn, t1), "whole": positions / tn, "T1": t1}

    return run


def ours_stream(generator: Generator, positions: int) -> Callable[[], dict[str, float]]:
    """``Generator.stream`` with run.c's clock: from the first piece to the last."""

    def run() -> dict[str, float]:
        pieces = generator.stream("", temperature=0.0, max_new_tokens=positions)
        next(pieces)  # arrives once the first position is evaluated (its text is not empty)
        return {"stream": (positions - 1) / wall(lambda: sum(1 for _ in pieces))}

    return run


def achieved(command: list[str], threads: int | None = None) -> tuple[float, float]:
    """(the wall time of `command`, the 'achieved tok/s' it prints, NaN if none).

    ``threads`` sets OMP_NUM_THREADS (llama2.c's OpenMP builds and tinystories-run read
    it). stdout goes to /dev/null: a pipe read by this process would slow the program by
    its wake-ups (6-12% for tinystories-run, which flushes every token as run.c does)."""
    env = None if threads is None else dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    result = subprocess.run(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600, env=env
    )
    elapsed = time.perf_counter() - start
    m = re.search(r"achieved tok/s:\s*([0-9.]+)", result.stderr)
    return elapsed, float(m.group(1)) if m else float("nan")


def achieved_rate(command: list[str]) -> Callable[[], float]:
    """llama2.c's (and tinystories-run's) own 'achieved tok/s' line."""
    return lambda: achieved(command)[1]


def cli_decode(command: list[str], positions: int) -> Callable[[], dict[str, float]]:
    """tinystories-run (`command` without -n): "cli", its own achieved tok/s for
    `positions`; "outside", the same definition on this process's clock,
    (positions - 1) / (W(positions) - W(1)) with W(n) the wall time of a run of n."""

    def run() -> dict[str, float]:
        w1, _ = achieved([*command, "-n", "1"])
        wn, rate = achieved([*command, "-n", str(positions)])
        return {"cli": rate, "outside": difference_rate(positions, wn, w1), "W1": w1}

    return run


def ours_prefill(generator: Generator, ids: list[int]) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        generator.logits(ids)
        return len(ids) / (time.perf_counter() - start)

    return run


def ours_batch(generator: Generator, streams: int, new_tokens: int) -> Callable[[], float]:
    """Aggregate sampled tokens per second of `streams` sequences generated together."""
    prompts = ["Once upon a time", "Lily and her dog", "The cat sat on the mat.", ""]

    def run() -> float:
        batch = generator.start_batch(
            [prompts[i % len(prompts)] for i in range(streams)],
            max_new_tokens=new_tokens,
            temperature=0.8,
            top_p=0.9,
            seed=[1 + i for i in range(streams)],
            max_batch=streams,
        )
        start = time.perf_counter()
        batch.run()
        return batch.n_generated / (time.perf_counter() - start)

    return run


def torch_decode(model_path: Path, positions: int) -> Callable[[], float] | None:
    """llama2.c's model.generate path in PyTorch eager: the whole sequence re-run per token."""
    try:
        import torch
    except ImportError:
        return None
    from .formats.llama2c import read_model

    config, _, w = read_model(model_path)
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in w.items()}
    hs, n_heads, n_kv = config.head_size, config.n_heads, config.n_kv_heads
    freqs = 1.0 / (10000.0 ** (torch.arange(0, hs, 2).float() / hs))
    angles = torch.outer(torch.arange(config.seq_len).float(), freqs)
    cos, sin = torch.cos(angles), torch.sin(angles)

    def rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * weight

    def rope(x: torch.Tensor, n: int) -> torch.Tensor:
        x = x.view(*x.shape[:-1], -1, 2)
        c, s = cos[:n, None, :], sin[:n, None, :]
        return torch.stack([x[..., 0] * c - x[..., 1] * s, x[..., 0] * s + x[..., 1] * c], -1)

    def forward(tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[0]
        x = t["token_embedding"][tokens]
        for layer in range(config.n_layers):
            h = rms(x, t["rms_att"][layer])
            q = rope((h @ t["wq"][layer].T).view(n, n_heads, hs), n).flatten(-2)
            k = rope((h @ t["wk"][layer].T).view(n, n_kv, hs), n).flatten(-2)
            v = (h @ t["wv"][layer].T).view(n, n_kv, hs)
            k = k.repeat_interleave(n_heads // n_kv, dim=1).transpose(0, 1)
            v = v.repeat_interleave(n_heads // n_kv, dim=1).transpose(0, 1)
            att = torch.nn.functional.scaled_dot_product_attention(
                q.transpose(0, 1), k, v, is_causal=True
            )
            x = x + att.transpose(0, 1).reshape(n, -1) @ t["wo"][layer].T
            h = rms(x, t["rms_ffn"][layer])
            gate = torch.nn.functional.silu(h @ t["w1"][layer].T) * (h @ t["w3"][layer].T)
            x = x + gate @ t["w2"][layer].T
        cls = t.get("wcls", t["token_embedding"])
        return rms(x[-1], t["rms_final"]) @ cls.T

    torch.set_num_threads(1)  # single stream against single stream; more threads only contend

    def run() -> float:
        tokens = torch.tensor([1])
        start = time.perf_counter()
        with torch.inference_mode():
            for _ in range(positions - 1):
                nxt = int(torch.argmax(forward(tokens)))
                tokens = torch.cat([tokens, torch.tensor([nxt])])
        return (positions - 1) / (time.perf_counter() - start)

    return run


def llama_bench(binary: str, gguf: str, threads: Sequence[int], quick: bool) -> list[Row]:
    """llama.cpp's own benchmark: prompt processing and generation, per thread count."""
    n_prompt, n_gen = (32, 16) if quick else (PROMPT_TOKENS, 256)
    command = [binary, "-m", gguf, "-p", str(n_prompt), "-n", str(n_gen), "-o", "json"]
    command += ["-t", ",".join(str(t) for t in threads), "-r", "1" if quick else "5"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    rows = []
    for entry in json.loads(result.stdout or "[]"):
        kind = "prefill" if entry.get("n_prompt") else "decode"
        setting = f"{entry.get('n_threads')} threads"
        if kind == "prefill":
            setting += f", {entry['n_prompt']}-token prompt"
        rows.append(Row(kind, "llama.cpp llama-bench", setting, entry["avg_ts"], "tok/s"))
    return rows


# ------------------------------------------------------------------ main


def run_binary() -> str | None:
    candidate = Path(sysconfig.get_path("scripts")) / "tinystories-run"
    return str(candidate) if candidate.exists() else shutil.which("tinystories-run")


def default_models() -> Path:
    root = Path(os.environ.get("TINYSTORIES_SHARED", Path.cwd().parent / "shared"))
    return root / "models" / "tok105"


def measure(args: argparse.Namespace) -> tuple[dict, list[Row]]:
    models = Path(args.models)
    fp32, q80, tok = models / "model5000.bin", models / "model5000_q80.bin", models / "tok105.bin"
    for path in (fp32, q80, tok):
        if not path.exists():
            raise SystemExit(f"tinystories: error: {path} not found (use --models DIR)")
    repeats = args.repeats or (1 if args.quick else 7)
    positions = 128 if args.quick else 256
    rows: list[Row] = []

    def add(group: str, program: str, setting: str, runs: list[float], unit: str = "tok/s"):
        if runs:  # none: it could not run (or, timed from outside, drowned in noise)
            rows.append(Row(group, program, setting, median_rate(runs), unit, runs))

    # single-stream decode: ours (public API), tinystories-run, llama2.c, torch
    generators = {
        "fp32, threads auto": Generator(fp32, tok),
        "fp32, 1 thread": Generator(fp32, tok, n_threads=1),
        "q80 (v2 file), threads auto": Generator(q80, tok),
        "q80 (v2 file), 1 thread": Generator(q80, tok, n_threads=1),
        "fp32 quantized on load (q8_0), threads auto": Generator(fp32, tok, quantize="q8_0"),
    }
    g_fp32, g_q80 = generators["fp32, threads auto"], generators["q80 (v2 file), threads auto"]
    # Every program does the same work: greedy from BOS, `positions` positions (or up to
    # the BOS it samples: all stop there; n is the count they evaluate).
    n = {name: greedy_positions(g, positions) for name, g in generators.items()}
    jobs: dict[str, Callable[[], dict[str, float]]] = {
        name: ours_decode(g, n[name]) for name, g in generators.items()
    }
    # (model, its Generator setting, its file): the API and the CLI side by side.
    pairs = [("fp32", "fp32, threads auto", fp32), ("q80", "q80 (v2 file), threads auto", q80)]
    for model, setting, _ in pairs:
        jobs[f"stream {model}"] = ours_stream(generators[setting], n[setting])
    cli = run_binary()
    for model, setting, path in pairs if cli else []:
        jobs[f"cli {model}"] = cli_decode([cli, str(path), "-t", "0", "-z", str(tok)], n[setting])
    steps = ["-t", "0", "-n", str(positions), "-z", str(tok)]
    for kind, path, binaries in (("run", fp32, args.llama2c_run), ("runq", q80, args.llama2c_runq)):
        for binary in binaries:
            rate = achieved_rate([binary, str(path), *steps])
            jobs[f"{kind} {Path(binary).name}"] = lambda rate=rate: {"achieved": rate()}
    rounds = interleave_rounds(jobs, repeats)

    def series(job: str, key: str, scale: float = 1.0) -> list[float]:
        return [r[job][key] * scale for r in rounds if r[job][key] == r[job][key]]

    def ratios(a: tuple[str, str], b: tuple[str, str]) -> list[float]:
        """Per-round a / b (measured seconds apart, so under the same load)."""
        pairs = [(r[a[0]][a[1]], r[b[0]][b[1]]) for r in rounds]
        return [x / y for x, y in pairs if x == x and y == y]

    api = "tinystories `Generator.generate`"
    for setting in generators:
        add("decode", api, setting, series(setting, "generate"))
    for model, setting, _ in pairs:
        add(
            "decode", "tinystories `Generator.stream`", setting, series(f"stream {model}", "stream")
        )
    for model, _, _ in pairs if cli else []:
        add("decode", "tinystories-run (CLI)", model, series(f"cli {model}", "cli"))
    for name in jobs:
        kind, _, binary = name.partition(" ")
        if kind in ("run", "runq"):
            model = "q80" if kind == "runq" else "fp32"
            add("decode", f"llama2.c {kind}", f"{binary} ({model})", series(name, "achieved"))
    for model, _, _ in pairs if cli else []:
        add(
            "decode",
            "tinystories-run (CLI), outside clock",
            model,
            series(f"cli {model}", "outside"),
        )
    for _, setting, _ in pairs:
        add("decode", f"{api}, whole call", setting, series(setting, "whole"))

    torch_positions = 16 if args.quick else 64
    if args.torch and (job := torch_decode(fp32, torch_positions)):
        job()  # warm-up: the first call pays for PyTorch's lazy initialisation
        runs = interleave({"t": job}, max(1, repeats // 2))["t"]
        add(
            "decode",
            "PyTorch eager (model.generate path)",
            f"fp32, {torch_positions} positions",
            runs,
        )

    # Python overhead: the API's rate over the CLI's (the median of per-round ratios),
    # and what one call costs besides its positions.
    for model, setting, _ in pairs if cli else []:
        cli_job, stream_job = f"cli {model}", f"stream {model}"
        for what, a, b in (
            ("API/CLI rate", (setting, "generate"), (cli_job, "cli")),
            ("API/CLI rate, outside clocks", (setting, "generate"), (cli_job, "outside")),
            ("stream/CLI rate", (stream_job, "stream"), (cli_job, "cli")),
        ):
            add("overhead", f"python overhead: {what}", model, ratios(a, b), "x")
    for _, setting, _ in pairs:
        add(
            "overhead",
            "fixed cost: `generate`, 1 position",
            setting,
            series(setting, "T1", 1e3),
            "ms",
        )
    for model, _, _ in pairs if cli else []:
        add(
            "overhead",
            "fixed cost: tinystories-run -n 1",
            model,
            series(f"cli {model}", "W1", 1e3),
            "ms",
        )
    # prompt processing: one batched evaluation of a long prompt
    n_prompt = 32 if args.quick else PROMPT_TOKENS
    ids = [1] + [int(i) for i in np.random.default_rng(0).integers(3, 105, n_prompt - 1)]
    jobs = {}
    for threads in args.threads:
        for name, path, quant in (("fp32", fp32, None), ("q80", q80, None)):
            g = Generator(path, tok, n_threads=threads, quantize=quant)
            jobs[f"{name}|{threads}"] = ours_prefill(g, ids)
    for name, runs in interleave(jobs, repeats).items():
        model, threads = name.split("|")
        add("prefill", "tinystories", f"{model}, {threads} threads, {n_prompt}-token prompt", runs)

    # batched generation: aggregate rate over many streams
    new_tokens = 8 if args.quick else 128
    streams = (1, 8) if args.quick else BATCH_STREAMS
    jobs = {f"{s}": ours_batch(g_fp32, s, new_tokens) for s in streams}
    jobs.update({f"{s}|q80": ours_batch(g_q80, s, new_tokens) for s in streams})
    for name, runs in interleave(jobs, max(1, repeats // 2)).items():
        s, _, q = name.partition("|")
        add("batch", "tinystories", f"{q or 'fp32'}, {s} streams, threads auto", runs)

    if args.llama_bench and args.gguf:
        rows += llama_bench(args.llama_bench, args.gguf, args.threads, args.quick)

    # load time (a fresh load, not the shared one) and memory
    for name, path, quant in (
        ("fp32", fp32, None),
        ("q80", q80, None),
        ("fp32 quantized on load", fp32, "q8_0"),
    ):
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            _core.Model(str(path), "", QUANTIZE_OPTIONS[quant])
            runs.append((time.perf_counter() - start) * 1e3)
        add("load", "tinystories", name, runs, "ms")
    rows += memory_rows(fp32, q80, tok)
    info = machine_info()
    return info, rows


MEMORY_PROBE = """
import json, sys
from tinystories import Generator
from tinystories.bench import rss_bytes
path, tok, count, quantize = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] or None
before = rss_bytes()
gs = [Generator(path, tok, quantize=quantize) for _ in range(count)]
for g in gs:
    g.generate("", temperature=0.0, max_new_tokens=255)
print(json.dumps(rss_bytes() - before))
"""


def memory_rows(fp32: Path, q80: Path, tok: Path) -> list[Row]:
    """RSS growth of a process that loads Generators and generates (fresh interpreter)."""
    rows = []
    for name, path, count, quant in (
        ("fp32, 1 Generator", fp32, 1, ""),
        ("fp32, 4 Generators on one file", fp32, 4, ""),
        ("q80, 1 Generator", q80, 1, ""),
        ("fp32 quantized on load, 1 Generator", fp32, 1, "q8_0"),
    ):
        probe = [sys.executable, "-c", MEMORY_PROBE, str(path), str(tok), str(count), quant]
        result = subprocess.run(probe, capture_output=True, text=True, timeout=120)
        if result.returncode == 0:
            grown = json.loads(result.stdout.strip().splitlines()[-1]) / 2**20
            setting = f"{name} (file {path.stat().st_size / 2**20:.1f} MiB)"
            rows.append(Row("memory", "tinystories", setting, grown, "MiB RSS growth"))
    return rows


def format_table(info: dict, rows: list[Row]) -> str:
    wp = max([len(r.program) for r in rows] + [38])
    ws = max([len(r.setting) for r in rows] + [40])
    lines = [
        f"machine: {info['cpu']} ({info['machine']}, {info['cores']} cores), "
        f"features: {' '.join(info['features']) or 'none'}",
        f"kernel sets: {' '.join(info['kernel_sets'])} (first = default); "
        f"load average at the end: {' '.join(f'{x:.2f}' for x in info['load_average'])}",
        "",
        f"{'what':<9} {'program':<{wp}} {'setting':<{ws}} {'median':>12}",
    ]
    for r in rows:
        value = f"{r.value:,.0f}" if r.value >= 100 else f"{r.value:,.2f}"
        lines.append(f"{r.group:<9} {r.program:<{wp}} {r.setting:<{ws}} {value:>12} {r.unit}")
    return "\n".join(lines)


def build_parser(prog: str = "python -m tinystories.bench") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        # the module docstring, shortened and without reST, which --help would show raw
        description="""\
The engine's speed, side by side with its peers: single-stream decode (fp32,
Q8_0 files, fp32 quantized on load), prompt processing, batched generation,
load time and resident memory, and in the same run, when given or installed,
llama2.c's run/runq, llama.cpp's llama-bench and a PyTorch eager forward.

Decode rates are positions after the first per second, as run.c counts them.
Every timing is the median of --repeats runs, interleaved across programs so
that a busy machine slows all of them alike. --shapes measures random-weight
models of the real checkpoints' shapes instead. A tool, not a test: nothing
here asserts a speed; --quick runs a few seconds of everything.""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"examples:\n  {prog}\n  {prog} --models ../shared/models/tok105\n"
        f"  {prog} --shapes stories15M,stories42M --json shapes.json\n",
    )
    parser.add_argument(
        "--models",
        default=str(default_models()),
        help="directory with model5000.bin, model5000_q80.bin, tok105.bin",
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds, for smoke tests")
    parser.add_argument("--repeats", type=int, default=0, help="runs per measurement (7; 1 quick)")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="thread counts for prompt processing and llama-bench (--serve: the largest, "
        "for both servers)",
    )
    parser.add_argument(
        "--llama2c-run",
        action="append",
        default=[],
        metavar="PATH",
        help="a llama2.c run binary (repeatable: e.g. -O3 and -Ofast builds)",
    )
    parser.add_argument(
        "--llama2c-runq",
        action="append",
        default=[],
        metavar="PATH",
        help="a llama2.c runq binary (repeatable)",
    )
    parser.add_argument("--llama-bench", metavar="PATH", help="llama.cpp's llama-bench binary")
    parser.add_argument("--gguf", metavar="FILE", help="the same model as GGUF, for llama-bench")
    parser.add_argument(
        "--torch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time PyTorch eager (default: when installed, not in --quick)",
    )
    parser.add_argument(
        "--shapes",
        metavar="NAMES",
        help="comma-separated real model shapes to measure instead of tok105 "
        "(stories15M, stories42M, stories110M, tinyllama1b; tiny for a smoke run): "
        "see tinystories.bench_shapes",
    )
    parser.add_argument(
        "--shapes-dir",
        default=str(Path.home() / ".cache" / "tinystories" / "bench-shapes"),
        help="where the shapes' random-weight files are written once and kept",
    )
    parser.add_argument(
        "--busy", action="store_true", help="with --shapes: also measure with one core busy"
    )
    parser.add_argument(
        "--llama2c-convert",
        metavar="PATH",
        help="llama.cpp's convert-llama2c-to-ggml, to make llama-bench's GGUFs of the shapes "
        "(--shapes; default: tinystories.convert)",
    )
    parser.add_argument(
        "--llama-quantize", metavar="PATH", help="llama.cpp's llama-quantize, for q8_0 GGUFs"
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="measure the HTTP server under 1, 8, 32 and 64 streaming clients instead "
        "(tok105 from --models, and --shapes' models when given): see tinystories.bench_serve",
    )
    parser.add_argument(
        "--llama-server",
        metavar="PATH",
        help="with --serve: llama.cpp's llama-server binary, measured beside ours with the "
        "same clients (on the model as f32 GGUF, made once in --shapes-dir)",
    )
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    # `tinystories --debug bench` hands it on as to every tool: tinystories then shows the
    # traceback it would otherwise turn into one line (run directly, bench always shows it)
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m tinystories.bench") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.torch is None:
        args.torch = not args.quick
    if args.serve:
        from . import bench_serve, bench_shapes

        models = Path(args.models)
        new_tokens = 32 if args.quick else 200
        clients = (1, 4) if args.quick else bench_serve.CLIENTS
        repeats = args.repeats or (1 if args.quick else 5)
        peer = {
            "llama_server": args.llama_server,
            "gguf_dir": Path(args.shapes_dir),
            "threads": max(args.threads),
        }
        rows = bench_serve.measure_serve(
            models / "model5000.bin", models / "tok105.bin", "tok105", new_tokens, clients,
            repeats, **peer,
        )  # fmt: skip
        for name in [n.strip() for n in (args.shapes or "").split(",") if n.strip()]:
            shape = bench_shapes.make_shape(name, Path(args.shapes_dir))
            rows += bench_serve.measure_serve(
                shape.models["fp32"], shape.tokenizer, f"{name} fp32", new_tokens, clients,
                repeats, **peer,
            )  # fmt: skip
        info = machine_info()
    elif args.shapes:
        from . import bench_shapes

        names = [n.strip() for n in args.shapes.split(",") if n.strip()]
        unknown = [n for n in names if n not in bench_shapes.SHAPES]
        if unknown:
            known = ", ".join(bench_shapes.SHAPES)
            parser.error(f"unknown shape(s) {', '.join(unknown)} (known: {known})")
        peers = bench_shapes.Peers(
            tuple(args.llama2c_run),
            tuple(args.llama2c_runq),
            args.llama_bench,
            args.llama2c_convert,
            args.llama_quantize,
        )
        repeats = args.repeats or (1 if args.quick else 5)
        rows = bench_shapes.measure_shapes(
            names, Path(args.shapes_dir), repeats, args.threads, peers, args.busy, run_binary()
        )
        info = machine_info()
    else:
        info, rows = measure(args)
    print(format_table(info, rows))
    if args.json:
        payload = {"machine": info, "results": [asdict(r) for r in rows], "argv": sys.argv[1:]}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
