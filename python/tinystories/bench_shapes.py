"""``python -m tinystories.bench --shapes ...``: the engine on the field's real model shapes.

Random-weight models of the shapes people run with llama2.c-format tools (Karpathy's
stories15M, stories42M, stories110M, and the TinyLlama-1.1B shape as a v2 file) are
written once, seeded, under ``--shapes-dir``, with a tokenizer of their vocabulary.
Random weights give nearly flat logits, so every forward pass is timed greedily (and
the token-embedding row of BOS is zero, so a greedy run never stops early); the
sampler is timed on its own.

Per shape and file format (fp32 v0, Q8_0 v2), at 1 and 2 threads: single-stream decode
through ``Generator.generate`` (in this long-lived process and in a fresh one) and
through ``tinystories-run``; 256-token prompt processing (the last position's logits,
after a warm-up call, as llama-bench measures it); 32 greedy streams through
``generate_batch``; the sampler alone (temperature 1, top-p 0.9) on 32,000 near-uniform
logits; load time and resident memory. The machine's streaming read bandwidth is
measured in every round, and each decode row is given as a fraction of it (weight bytes
per token x tokens/s).

Peers in the same rounds when given: llama2.c's ``run``/``runq`` (``OMP_NUM_THREADS``
sets their threads) and llama.cpp's ``llama-bench`` on GGUF files (f32 and q8_0) made by
``tinystories.convert``, or by llama.cpp's ``convert-llama2c-to-ggml`` (and
``llama-quantize`` for q8_0) when those are given, cached beside the models.
Every measurement is the median of ``--repeats`` rounds; each round runs every program
once, so a change in the machine's speed reaches them all alike. ``--busy`` repeats the
decode and prefill rows with a ``yes`` process keeping one core busy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _core
from .bench import Row, achieved, best_wall, difference_rate, wall
from .formats.constants import BOS, N_BYTE_TOKENS
from .formats.llama2c import ModelConfig, default_group_size, random_weights, write_model
from .formats.tokenizer_bin import write_tokenizer
from .inference import Generator, SamplingParams
from .inference.sampling import engine_options

# name: (config, file formats written)
SHAPES: dict[str, tuple[ModelConfig, tuple[str, ...]]] = {
    # a few hundred kB, for CI's smoke run: the path must not rot
    "tiny": (ModelConfig(64, 176, 2, 4, 2, 512, 256), ("fp32", "q80")),
    "stories15M": (ModelConfig(288, 768, 6, 6, 6, 32000, 256), ("fp32", "q80")),
    "stories42M": (ModelConfig(512, 1376, 8, 8, 8, 32000, 1024), ("fp32", "q80")),
    "stories110M": (ModelConfig(768, 2048, 12, 12, 12, 32000, 1024), ("fp32", "q80")),
    "tinyllama1b": (ModelConfig(2048, 5632, 22, 32, 4, 32000, 2048), ("q80",)),
}
DECODE_POSITIONS = 128  # as llama-bench's tg128
PROMPT_TOKENS = 256
BATCH_STREAMS = 32
BANDWIDTH_BYTES = 1 << 30  # far past the last-level cache


@dataclass(frozen=True)
class ShapeFiles:
    name: str
    config: ModelConfig
    models: dict[str, Path]  # "fp32" / "q80" -> file
    tokenizer: Path

    def weight_bytes(self, fmt: str) -> int:
        """Bytes of the matrices one decode step reads (every layer's and the classifier)."""
        c = self.config
        kv = c.kv_dim
        per_layer = 2 * c.dim * c.dim + 2 * c.dim * kv + 3 * c.dim * c.hidden_dim
        values = c.n_layers * per_layer + c.vocab_size * c.dim
        if fmt == "fp32":
            return 4 * values
        return values + 4 * values // default_group_size(c)


# ------------------------------------------------------------------ files


def random_tokenizer(path: Path, vocab_size: int, seed: int = 0) -> None:
    """<unk>, <s>, </s>, the 256 byte tokens, then distinct random lowercase pieces."""
    pieces = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{b:02X}>".encode() for b in range(N_BYTE_TOKENS)]
    pieces = pieces[:vocab_size]
    fixed = len(pieces)  # the specials and the byte tokens, scored 0
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    seen = set(pieces)
    while len(pieces) < vocab_size:
        piece = bytes(rng.choice(letters, int(rng.integers(1, 8))))
        if rng.random() < 0.5:
            piece = b" " + piece
        if piece not in seen:
            seen.add(piece)
            pieces.append(piece)
    scores = [0.0] * fixed + [-float(i) for i in range(vocab_size - fixed)]
    write_tokenizer(path, pieces, scores)


def make_shape(name: str, directory: Path) -> ShapeFiles:
    """The shape's files, written on first use (seeded: the same bytes every time)."""
    config, formats = SHAPES[name]
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = directory / f"tok{config.vocab_size}.bin"
    if not tokenizer.exists():
        random_tokenizer(tokenizer.with_suffix(".tmp"), config.vocab_size)
        tokenizer.with_suffix(".tmp").replace(tokenizer)
    models = {fmt: directory / f"{name}{'' if fmt == 'fp32' else '_q80'}.bin" for fmt in formats}
    if not all(path.exists() for path in models.values()):
        weights = random_weights(config, seed=1, scale=0.05)
        weights["token_embedding"][BOS] = 0.0  # its logit is 0: greedy never picks BOS
        for fmt, path in models.items():
            partial = path.with_suffix(".tmp")
            write_model(partial, config, weights, version=0 if fmt == "fp32" else 2)
            partial.replace(path)
        del weights
    return ShapeFiles(name, config, models, tokenizer)


def gguf_files(shape: ShapeFiles, convert: str | None, quantize: str | None) -> dict[str, Path]:
    """The shape as GGUF for llama-bench ("fp32": f32, "q80": q8_0), made once: by
    llama.cpp's tools when ``convert`` is given, else by :func:`tinystories.convert`
    (from the fp32 file, or the v2 file of a shape without one; needs ``gguf``)."""
    if not convert:
        return our_gguf_files(shape)
    out: dict[str, Path] = {}
    src = shape.models.get("fp32")
    if src is None:
        return out
    f32 = src.with_suffix(".gguf")
    if not f32.exists():
        subprocess.run(
            [
                convert,
                "--copy-vocab-from-model",
                str(shape.tokenizer),
                "--llama2c-model",
                str(src),
                "--llama2c-output-model",
                str(f32),
            ],
            check=True,
            capture_output=True,
            timeout=1200,
        )
    out["fp32"] = f32
    if quantize:
        q8 = src.with_name(src.stem + "_q8_0.gguf")
        if not q8.exists():
            subprocess.run(
                [quantize, str(f32), str(q8), "q8_0"], check=True, capture_output=True, timeout=1200
            )
        out["q80"] = q8
    return out


def our_gguf_files(shape: ShapeFiles) -> dict[str, Path]:
    try:
        import gguf  # noqa: F401
    except ImportError:  # llama.cpp then goes unmeasured, as without its converter
        return {}
    from .formats.convert import convert

    src = shape.models.get("fp32") or shape.models["q80"]
    out: dict[str, Path] = {}
    for fmt, kind in (("fp32", "f32"), ("q80", "q8_0")):
        if fmt not in shape.models:
            continue
        path = src.with_name(f"{shape.name}.tinystories.{kind}.gguf")
        if not path.exists():
            convert(src, path, to="gguf", tokenizer=shape.tokenizer, dtype=kind)
        out[fmt] = path
    return out


# -------------------------------------------------------------- measuring

Round = dict[str, float]  # one round's results, by measurement name


def api_decode(g: Generator) -> float:
    """One run of DECODE_POSITIONS, as each peer, the CLI and the fresh process get (a
    best of two here read 10% above them on a host whose one-thread speed drifts), less
    the fixed cost of a call (the best of three one-position calls)."""
    t1 = best_wall(lambda: g.generate("", temperature=0.0, max_new_tokens=1), 3)
    tn = wall(lambda: g.generate("", temperature=0.0, max_new_tokens=DECODE_POSITIONS))
    return difference_rate(DECODE_POSITIONS, tn, t1)


FRESH_DECODE = """
import sys, time
from tinystories import Generator
g = Generator(sys.argv[1], sys.argv[2], n_threads=int(sys.argv[3]))
n = int(sys.argv[4])
t = time.perf_counter(); g.generate("", temperature=0.0, max_new_tokens=1)
t1 = time.perf_counter() - t
t = time.perf_counter(); g.generate("", temperature=0.0, max_new_tokens=n)
tn = time.perf_counter() - t
print((n - 1) / (tn - t1) if tn > t1 else float("nan"))
"""


def fresh_api_decode(model: Path, tokenizer: Path, threads: int) -> float:
    """The same in a new interpreter: its first two calls, nothing run before them."""
    command = [sys.executable, "-c", FRESH_DECODE, str(model), str(tokenizer), str(threads)]
    result = subprocess.run(
        [*command, str(DECODE_POSITIONS)], capture_output=True, text=True, timeout=600
    )
    try:
        return float(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return float("nan")


def prefill(model: _core.Model, threads: int, vocab_size: int) -> float:
    """256 prompt tokens evaluated in one call, logits for the last only, timed after one
    untimed call on the same session, as llama-bench times its runs after a warm-up run
    (the first call of a new session ran 4-15% slower on stories15M)."""
    ids = [BOS] + [int(i) for i in np.random.default_rng(0).integers(3, vocab_size, 255)]
    session = _core.Session(model, threads)
    session.eval(ids, 0, False)
    return len(ids) / wall(lambda: session.eval(ids, 0, False))


def batch_rate(g: Generator, new_tokens: int) -> float:
    """Aggregate tokens/s of BATCH_STREAMS greedy streams generated together."""
    elapsed = wall(
        lambda: g.generate_batch(
            [""] * BATCH_STREAMS,
            max_new_tokens=new_tokens,
            temperature=0.0,
            max_batch=BATCH_STREAMS,
        )
    )
    return BATCH_STREAMS * new_tokens / elapsed


def sampler_us(vocab_size: int, calls: int = 200) -> float:
    """Microseconds per temperature-1, top-p-0.9 sample of near-uniform logits."""
    logits = (np.random.default_rng(0).random(vocab_size, dtype=np.float32) - 0.5) * 0.05
    sampler = _core.Sampler(vocab_size, engine_options(SamplingParams(seed=42)))
    return wall(lambda: [sampler.sample(logits) for _ in range(calls)]) / calls * 1e6


def llama_bench(binary: str, gguf: Path, threads: Sequence[int]) -> Round:
    """One llama-bench run: pp256 and tg128 at each thread count."""
    command = [binary, "-m", str(gguf), "-p", str(PROMPT_TOKENS), "-n", str(DECODE_POSITIONS)]
    command += ["-t", ",".join(map(str, threads)), "-r", "1", "-o", "json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    out: Round = {}
    if result.returncode != 0:
        # its rows go missing from this round: say why (in every round it fails), not in silence
        # (a GGML_NATIVE build on a host that lists AMX but traps on it dies with SIGILL)
        tail = result.stderr.strip().splitlines()[-1:] or ["no message"]
        print(
            f"warning: {Path(binary).name} on {gguf.name} exited with status "
            f"{result.returncode}: {tail[0]}",
            file=sys.stderr,
        )
        return out
    for entry in json.loads(result.stdout or "[]"):
        kind = "prefill" if entry.get("n_prompt") else "decode"
        out[f"{kind} {entry['n_threads']}"] = entry["avg_ts"]
    return out


LOAD_PROBE = """
import json, sys, time
from tinystories import Generator
from tinystories.bench import rss_bytes
before = rss_bytes()
t = time.perf_counter()
gs = [Generator(sys.argv[1], sys.argv[2]) for _ in range(int(sys.argv[3]))]
load = time.perf_counter() - t
for g in gs:
    g.generate("", temperature=0.0, max_new_tokens=16)
print(json.dumps({"load_s": load, "rss": rss_bytes() - before}))
"""


def load_and_rss(model: Path, tokenizer: Path, count: int) -> dict[str, float]:
    """A fresh interpreter: load time of `count` Generators on one file, and RSS growth."""
    command = [sys.executable, "-c", LOAD_PROBE, str(model), str(tokenizer), str(count)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"load_s": float("nan"), "rss": float("nan")}


# ------------------------------------------------------------------ rounds


@dataclass(frozen=True)
class Peers:
    run: tuple[str, ...] = ()  # llama2.c run binaries (fp32 files)
    runq: tuple[str, ...] = ()  # llama2.c runq binaries (v2 files)
    llama_bench: str | None = None
    convert: str | None = None  # llama.cpp's convert-llama2c-to-ggml
    quantize: str | None = None  # llama.cpp's llama-quantize


def shape_jobs(
    shape: ShapeFiles, threads: Sequence[int], peers: Peers, cli: str | None, batch_tokens: int
) -> dict[str, Callable[[], Round]]:
    """Every measurement of one shape, by name; each returns its values for one round."""
    jobs: dict[str, Callable[[], Round]] = {}
    tok = shape.tokenizer
    top = max(threads)
    for fmt, path in shape.models.items():
        model = _core.Model(str(path))
        steps = ["-z", str(tok), "-t", "0", "-n", str(DECODE_POSITIONS)]
        for t in threads:
            g = Generator(path, tok, n_threads=t)
            jobs[f"api {fmt} {t}"] = lambda g=g: {"": api_decode(g)}
            jobs[f"fresh {fmt} {t}"] = lambda p=path, t=t: {"": fresh_api_decode(p, tok, t)}
            if cli:
                command = [cli, str(path), *steps]
                jobs[f"cli {fmt} {t}"] = lambda c=command, t=t: {"": achieved(c, t)[1]}
            for binary in peers.run if fmt == "fp32" else peers.runq:
                name = f"llama2.c {Path(binary).name} {fmt} {t}"
                jobs[name] = lambda b=binary, p=path, t=t, s=steps: {
                    "": achieved([b, str(p), *s], t)[1]
                }
            jobs[f"prefill {fmt} {t}"] = lambda m=model, t=t: {
                "": prefill(m, t, shape.config.vocab_size)
            }
        g_top = Generator(path, tok, n_threads=top)
        jobs[f"batch {fmt}"] = lambda g=g_top: {"": batch_rate(g, batch_tokens)}
    if peers.llama_bench:
        for fmt, gguf in gguf_files(shape, peers.convert, peers.quantize).items():
            jobs[f"llama.cpp {fmt}"] = lambda f=gguf: llama_bench(peers.llama_bench, f, threads)
    return jobs


def run_rounds(jobs: dict[str, Callable[[], Round]], repeats: int) -> list[dict[str, Round]]:
    """Every job once per round, `repeats` rounds."""
    return [{name: job() for name, job in jobs.items()} for _ in range(repeats)]


def median(values: Sequence[float]) -> float:
    values = [v for v in values if v == v]
    return float(np.median(values)) if values else float("nan")


def shape_rows(
    shape: ShapeFiles, rounds: list[dict[str, Round]], threads: Sequence[int]
) -> list[Row]:
    """The table's rows for one shape: each measurement's median over the rounds, and
    ratios and bandwidth fractions taken round by round (so that both sides of a
    ratio ran under the same conditions), then their median."""
    rows: list[Row] = []

    def values(name: str, key: str = "") -> list[float]:
        return [r[name].get(key, float("nan")) for r in rounds if name in r]

    def add(group: str, program: str, setting: str, runs: list[float], unit: str) -> None:
        runs = [v for v in runs if v == v]
        if runs:
            rows.append(Row(group, program, setting, median(runs), unit, runs))

    def ratio(a: list[float], b: list[float]) -> list[float]:
        """a / b round by round (rounds where either could not run left out)."""
        return [x / y for x, y in zip(a, b, strict=False) if x == x and y == y and y]

    name = shape.name
    names = set().union(*(r.keys() for r in rounds)) if rounds else set()
    for t in threads:
        add(
            "bandwidth",
            "streaming read (sum of floats)",
            f"{t} thr, 1 GiB",
            values("bandwidth", str(t)),
            "GB/s",
        )
    for fmt in shape.models:
        for t in threads:
            where = f"{name} {fmt}, {t} thr"
            api, fresh, cli = (
                values(f"api {fmt} {t}"),
                values(f"fresh {fmt} {t}"),
                values(f"cli {fmt} {t}"),
            )
            add("decode", "tinystories Generator.generate", where, api, "tok/s")
            add("decode", "tinystories Generator.generate, fresh process", where, fresh, "tok/s")
            add("decode", "tinystories-run", where, cli, "tok/s")
            peers: dict[str, list[float]] = {}
            for job in sorted(names):
                if job.startswith("llama2.c ") and job.endswith(f" {fmt} {t}"):
                    peers[job.rsplit(" ", 2)[0]] = values(job)
            if f"llama.cpp {fmt}" in names:
                peers["llama.cpp llama-bench"] = values(f"llama.cpp {fmt}", f"decode {t}")
            for program, runs in peers.items():
                add("decode", program, where, runs, "tok/s")
            if peers:
                best = [
                    max(
                        (p[i] for p in peers.values() if i < len(p) and p[i] == p[i]),
                        default=float("nan"),
                    )
                    for i in range(len(rounds))
                ]
                add(
                    "ratio",
                    "decode: generate / best peer",
                    where,
                    ratio(api, best),
                    "x",
                )
                add(
                    "ratio",
                    "decode: tinystories-run / best peer",
                    where,
                    ratio(cli, best),
                    "x",
                )
            bw = values("bandwidth", str(t))
            gb = shape.weight_bytes(fmt) / 1e9  # per token
            add(
                "fraction",
                "decode: generate x weight bytes / bandwidth",
                where,
                ratio([x * gb for x in api], bw),
                "of streaming",
            )
            add(
                "fraction",
                "decode: tinystories-run x weight bytes / bandwidth",
                where,
                ratio([x * gb for x in cli], bw),
                "of streaming",
            )
        for t in threads:
            where = f"{name} {fmt}, {t} thr, {PROMPT_TOKENS} tokens"
            ours = values(f"prefill {fmt} {t}")
            add("prefill", "tinystories (last logits)", where, ours, "tok/s")
            if f"llama.cpp {fmt}" in names:
                theirs = values(f"llama.cpp {fmt}", f"prefill {t}")
                add("prefill", "llama.cpp llama-bench", where, theirs, "tok/s")
                add(
                    "ratio",
                    "prefill: tinystories / llama.cpp",
                    where,
                    ratio(ours, theirs),
                    "x",
                )
        if len(threads) > 1:
            lo, hi = min(threads), max(threads)
            add(
                "ratio",
                f"prefill: {hi} threads / {lo}",
                f"{name} {fmt}",
                ratio(values(f"prefill {fmt} {hi}"), values(f"prefill {fmt} {lo}")),
                "x",
            )
        top = max(threads)
        batch = values(f"batch {fmt}")
        add(
            "batch",
            f"tinystories generate_batch, {BATCH_STREAMS} greedy streams",
            f"{name} {fmt}, {top} thr",
            batch,
            "tok/s",
        )
        add(
            "ratio",
            "batch / prefill (same threads)",
            f"{name} {fmt}, {top} thr",
            ratio(batch, values(f"prefill {fmt} {top}")),
            "x",
        )
    if "fp32" in shape.models and "q80" in shape.models:
        for t in threads:
            add(
                "ratio",
                "prefill: q80 / fp32",
                f"{name}, {t} thr",
                ratio(values(f"prefill q80 {t}"), values(f"prefill fp32 {t}")),
                "x",
            )
    sampler = values("sampler")
    add(
        "sampler",
        "temperature 1, top-p 0.9, near-uniform",
        f"vocab {shape.config.vocab_size}",
        sampler,
        "us",
    )
    if "q80" in shape.models:
        for t in threads:
            add(
                "ratio",
                "sampler / one Q8_0 decode step",
                f"{name}, {t} thr",
                ratio(sampler, [1e6 / r for r in values(f"api q80 {t}")]),
                "x",
            )
    return rows


def measure_shapes(
    names: Sequence[str],
    directory: Path,
    repeats: int,
    threads: Sequence[int],
    peers: Peers,
    busy: bool,
    cli: str | None,
) -> list[Row]:
    """Every shape's rows (see the module docstring)."""
    rows: list[Row] = []
    for name in names:
        shape = make_shape(name, directory)
        quick = name == "tiny"
        bandwidth_bytes = BANDWIDTH_BYTES >> (4 if quick else 0)
        jobs: dict[str, Callable[[], Round]] = {
            "bandwidth": lambda n=bandwidth_bytes: {
                str(t): _core.stream_read_gbps(n, t, 2) for t in threads
            },
            "sampler": lambda v=shape.config.vocab_size: {"": sampler_us(v)},
        }
        jobs.update(shape_jobs(shape, threads, peers, cli, 16 if quick else 64))
        rows += shape_rows(shape, run_rounds(jobs, repeats), threads)
        if busy and not quick:
            rows += busy_rows(shape, threads, peers)
        for fmt, path in shape.models.items():
            size = path.stat().st_size / 2**20
            for count in (1, 4):
                probe = load_and_rss(path, shape.tokenizer, count)
                setting = f"{name} {fmt} (file {size:,.1f} MiB), {count} Generator(s)"
                if count == 1:
                    rows.append(Row("load", "tinystories", setting, probe["load_s"] * 1e3, "ms"))
                rows.append(
                    Row("memory", "tinystories RSS growth", setting, probe["rss"] / 2**20, "MiB")
                )
    return rows


def busy_rows(shape: ShapeFiles, threads: Sequence[int], peers: Peers) -> list[Row]:
    """Decode and prefill with one `yes` process keeping a core busy, beside each given
    llama2.c build at one thread on the same file (the fastest is the floor a busy machine
    must not go under)."""
    rows: list[Row] = []
    yes = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL)
    try:
        for fmt, path in shape.models.items():
            g = Generator(path, shape.tokenizer)  # threads: the engine's default
            model = _core.Model(str(path))
            steps = ["-z", str(shape.tokenizer), "-t", "0", "-n", str(DECODE_POSITIONS)]
            jobs: dict[str, Callable[[], Round]] = {
                "decode": lambda g=g: {"": api_decode(g)},
                "prefill": lambda m=model: {"": prefill(m, max(threads), shape.config.vocab_size)},
            }
            # every llama2.c build given, each at one thread: the floor is the fastest
            binaries = peers.run if fmt == "fp32" else peers.runq
            programs = [
                ("decode", "tinystories Generator.generate (default threads)"),
                ("prefill", f"tinystories prefill ({max(threads)} threads)"),
            ]
            for binary in binaries:
                job = f"peer {binary}"
                jobs[job] = lambda b=binary, p=path, s=steps: {"": achieved([b, str(p), *s], 1)[1]}
                programs.append((job, f"llama2.c {Path(binary).name}, 1 thread"))
            rounds = run_rounds(jobs, 3)
            where = f"{shape.name} {fmt}, other core busy"
            for job, program in programs:
                runs = [r[job][""] for r in rounds if job in r]
                if runs:
                    rows.append(Row("busy", program, where, median(runs), "tok/s", runs))
    finally:
        yes.kill()
        yes.wait()
    return rows
