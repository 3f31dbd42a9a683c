"""``python -m tinystories.bench --serve``: the HTTP server under concurrent streaming clients.

For each client count, that many threads each stream one completion (``max_tokens``
new tokens, its own seed) from ``tinystories serve`` on 127.0.0.1 (its own process, as a
deployment runs), all at once, for ``--repeats`` rounds (default 5). Reported: the
aggregate tokens/s (every token over the wall time from the first request to the last
token), the median and 99th-percentile time to first token, the median gap between a
stream's chunks, and the aggregate as a fraction of ``Generator.generate_batch`` on the
same prompts, seeds and lengths (the engine alone). The clients share the machine with the
server, as on any loopback benchmark.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import socket
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from .bench import Row
from .inference import Generator

CLIENTS = (1, 8, 32, 64)
# What a request adds to the prompt, length and seed: both servers (and generate_batch)
# sample alike, at temperature 1 from the top 40 tokens cut at top-p 0.9 (llama-server's
# default top-k; without it, a random-weight shape's nearly flat logits make every sample
# sort 32,000 candidates, and the sampler is what is measured), and go on past the end of
# a story, so that every request generates all its tokens.
SAMPLING = {"temperature": 1.0, "top_k": 40, "top_p": 0.9, "min_p": 0.0}
OUR_OPTIONS = {**SAMPLING, "stop_token_ids": []}
LLAMA_SERVER_OPTIONS = {**SAMPLING, "ignore_eos": True}
_EMPTY_TEXT = re.compile(rb'"text": ?""')


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stream_clients(
    url: str,
    prompts: Sequence[str],
    seeds: Sequence[int],
    new_tokens: int,
    options: dict | None = None,
):
    """Every prompt streamed at once from ``url``'s ``/v1/completions``, each on its own
    connection: (wall seconds, tokens, first-token delays, gaps between a stream's chunks).
    ``options``: more fields of every request (default: ours to run past BOS).

    The clients are one thread with a non-blocking socket per stream, writing a prepared
    request and reading the server-sent events as they arrive, so that the server is what
    is measured: they share the machine with it. Thirty-two ``http.client`` threads spent
    about as much CPU as the server's event loop, most of it as the requests went out
    (holding back the batch's start); httpx three times as much."""
    where = urlsplit(url)
    streams = []
    for prompt, seed in zip(prompts, seeds, strict=True):
        body = json.dumps({"prompt": prompt, "max_tokens": new_tokens, "seed": seed,
                           "stream": True, **(options or OUR_OPTIONS)}).encode()  # fmt: skip
        head = (f"POST /v1/completions HTTP/1.1\r\nHost: {where.netloc}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
        connection = socket.create_connection((where.hostname, where.port), timeout=600)
        connection.setblocking(False)
        streams.append(_Stream(connection, head.encode() + body))
    selector = selectors.DefaultSelector()
    start = time.perf_counter()  # connected before the clock starts
    for stream in streams:
        stream.sent = time.perf_counter()
        stream.connection.sendall(stream.request)  # small: the socket buffer takes it
        selector.register(stream.connection, selectors.EVENT_READ, stream)
    open_streams = len(streams)
    while open_streams:
        ready = selector.select(timeout=600)
        if not ready:
            raise RuntimeError(f"{url}: {open_streams} streams got nothing for 600 s")
        for key, _ in ready:
            stream = key.data
            data = stream.connection.recv(1 << 16)
            if stream.feed(data, time.perf_counter()) or not data:
                selector.unregister(stream.connection)
                open_streams -= 1
    wall = time.perf_counter() - start
    selector.close()
    for stream in streams:
        stream.connection.close()
    first = [s.first for s in streams if s.first is not None]
    gaps = [gap for s in streams for gap in s.gaps]
    return wall, sum(s.tokens for s in streams), first, gaps


class _Stream:
    """One streamed completion's connection and what it has received."""

    def __init__(self, connection: socket.socket, request: bytes) -> None:
        self.connection, self.request = connection, request
        self.buffer = b""
        self.answered = False  # the status line was 200
        self.sent = 0.0
        self.first: float | None = None  # delay to the first chunk with text
        self.last: float | None = None
        self.gaps: list[float] = []
        self.tokens = 0

    def feed(self, data: bytes, now: float) -> bool:
        """Takes received bytes; True once the stream has ended ([DONE])."""
        self.buffer += data
        if not self.answered and len(self.buffer) >= 12:
            if not self.buffer.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"the server answered {self.buffer[:200]!r}")
            self.answered = True
        # events end with a blank line; HTTP's chunk sizes lie between them
        *events, self.buffer = self.buffer.split(b"\n\n")
        for event in events:
            line = event[event.find(b"data: ") :]
            if line.startswith(b"data: [DONE]"):
                return True
            if b'"usage"' in line:  # only the last chunk is parsed
                self.tokens = json.loads(line[6:])["usage"]["completion_tokens"]
            elif line.startswith(b"data: {") and not _EMPTY_TEXT.search(line):
                if self.first is None:
                    self.first = now - self.sent
                elif self.last is not None:
                    self.gaps.append(now - self.last)
                self.last = now
        return False


def measure_serve(
    model: Path,
    tokenizer: Path,
    label: str,
    new_tokens: int,
    clients: Sequence[int] = CLIENTS,
    repeats: int = 1,
    llama_server: str | None = None,
    gguf_dir: Path | None = None,
    threads: int | None = None,
) -> list[Row]:
    """The rows for one model file: for each client count, ``repeats`` rounds of the
    streaming clients, each followed by ``generate_batch`` on the same work (and by the
    same clients against llama.cpp's ``llama-server``, given its binary, on the model as
    f32 GGUF, made once in ``gguf_dir``); the rates and the ratios are the rounds' medians
    (a ratio is taken round by round, so a slower moment of the machine slows both sides
    of it), the latencies are over every round. ``threads``: the engines' threads (None:
    ours chooses, llama-server gets the CPU count)."""
    generator = Generator(model, tokenizer, n_threads=threads)
    rows: list[Row] = []
    from .server import serve_in_subprocess

    parallel = max(clients)
    args = ["--model", str(model), "--tokenizer", str(tokenizer), "--parallel", str(parallel),
            "--max-queue", str(parallel)]  # fmt: skip
    if threads:
        args += ["--n-threads", str(threads)]
    with ExitStack() as servers:
        url, _ = servers.enter_context(serve_in_subprocess(args))
        peer = None
        if llama_server:
            gguf = gguf_of(model, tokenizer, gguf_dir or model.parent)
            context = generator.config.seq_len
            peer = servers.enter_context(
                llama_server_process(
                    llama_server, gguf, parallel, context, threads or os.cpu_count() or 1
                )
            )
        for n in clients:
            prompts = [("Once upon a time", "Lily and Ben", "The dog", "Tom went")[i % 4]
                       for i in range(n)]  # fmt: skip
            seeds = list(range(1, n + 1))
            stream_clients(url, prompts[:1], seeds[:1], 8)  # warm
            if peer:
                stream_clients(peer, prompts[:1], seeds[:1], 8, LLAMA_SERVER_OPTIONS)
            rates, batch_rates, peer_rates, first, gaps = [], [], [], [], []
            for _ in range(repeats):
                wall, tokens, round_first, round_gaps = stream_clients(
                    url, prompts, seeds, new_tokens
                )
                started = time.perf_counter()
                done = generator.complete_batch(
                    prompts, seed=seeds, max_new_tokens=new_tokens, max_batch=n, **OUR_OPTIONS
                )
                elapsed = time.perf_counter() - started
                rates.append(tokens / wall)
                batch_rates.append(sum(len(c.token_ids) for c in done) / elapsed)
                first += round_first
                gaps += round_gaps
                if peer:
                    peer_wall, peer_tokens, _, _ = stream_clients(
                        peer, prompts, seeds, new_tokens, LLAMA_SERVER_OPTIONS
                    )
                    peer_rates.append(peer_tokens / peer_wall)
            ratio = statistics.median(r / b for r, b in zip(rates, batch_rates, strict=True))
            setting = f"{label}, {n} clients"
            rows += [
                Row("serve", "tinystories serve", setting, statistics.median(rates),
                    "tok/s (all streams)"),
                Row("serve", "  generate_batch, same work", setting,
                    statistics.median(batch_rates), "tok/s"),
                Row("serve", "  serve / generate_batch", setting, ratio, "x"),
                Row("serve", "  time to first token p50", setting,
                    1e3 * statistics.median(first), "ms"),
                Row("serve", "  time to first token p99", setting,
                    1e3 * _percentile(first, 0.99), "ms"),
                Row("serve", "  inter-token gap p50", setting,
                    1e3 * statistics.median(gaps) if gaps else float("nan"), "ms"),
            ]  # fmt: skip
            if peer:
                peer_ratio = statistics.median(
                    r / p for r, p in zip(rates, peer_rates, strict=True)
                )
                rows += [
                    Row("serve", f"llama-server -np {parallel}", setting,
                        statistics.median(peer_rates), "tok/s (all streams)"),
                    Row("serve", "  serve / llama-server", setting, peer_ratio, "x"),
                ]  # fmt: skip
    return rows


def gguf_of(model: Path, tokenizer: Path, directory: Path) -> Path:
    """``model`` as an f32 GGUF file for llama-server, written once into ``directory`` by
    :func:`tinystories.convert` (the shapes bench's name for it, so both share it)."""
    from .formats.convert import convert

    path = directory / f"{model.stem}.tinystories.f32.gguf"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        convert(model, path, to="gguf", tokenizer=tokenizer, dtype="f32")
    return path


@contextmanager
def llama_server_process(
    binary: str, gguf: Path, parallel: int, context: int, threads: int
) -> Iterator[str]:
    """llama.cpp's ``llama-server`` on ``gguf`` with ``parallel`` slots of ``context``
    positions each, on a free loopback port, once its /health answers 200; yields its URL."""
    from .server import server_process

    def command(port: int) -> list[str]:
        return [binary, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
                "-np", str(parallel), "-c", str(parallel * context), "-t", str(threads),
                "-tb", str(threads), "--no-webui"]  # fmt: skip

    with server_process("llama-server", command) as (url, _):
        yield url
