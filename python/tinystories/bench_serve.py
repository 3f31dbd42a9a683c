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
import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .bench import Row
from .inference import Generator

CLIENTS = (1, 8, 32, 64)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stream_clients(url: str, prompts: Sequence[str], seeds: Sequence[int], new_tokens: int):
    """Every prompt streamed at once, each by its own connected client: (wall seconds,
    tokens, first-token delays, gaps between a stream's chunks).

    The clients are the standard library's ``http.client`` on threads, as light as a
    client can be so that the server is what is measured (they share the machine with it):
    httpx spent about three times the server's CPU time on the same streams."""
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(url)
    connections = [http.client.HTTPConnection(where.hostname, where.port, timeout=600)
                   for _ in prompts]  # fmt: skip
    for c in connections:  # connected before the clock starts
        c.request("GET", "/health")
        c.getresponse().read()
    first: list[float] = []
    gaps: list[float] = []
    tokens = [0] * len(prompts)
    lock = threading.Lock()
    start = time.perf_counter()  # the clients' set-up is not counted

    def client(i: int) -> None:
        body = json.dumps({"prompt": prompts[i], "max_tokens": new_tokens, "seed": seeds[i],
                           "stream": True, "stop_token_ids": []})  # fmt: skip
        sent = time.perf_counter()
        last, own_gaps, arrived = None, [], None
        connections[i].request("POST", "/v1/completions", body,
                               {"Content-Type": "application/json"})  # fmt: skip
        response = connections[i].getresponse()
        # only the last chunk (usage) is parsed; every text chunk counts for the timings
        for line in iter(response.readline, b""):
            if not line.startswith(b"data: {"):
                continue
            now = time.perf_counter()
            if b'"usage"' in line:
                tokens[i] = json.loads(line[6:])["usage"]["completion_tokens"]
            elif b'"text": ""' not in line:
                if arrived is None:
                    arrived = now - sent
                elif last is not None:
                    own_gaps.append(now - last)
                last = now
        with lock:
            if arrived is not None:
                first.append(arrived)
            gaps.extend(own_gaps)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    for c in connections:
        c.close()
    return wall, sum(tokens), first, gaps


def measure_serve(
    model: Path,
    tokenizer: Path,
    label: str,
    new_tokens: int,
    clients: Sequence[int] = CLIENTS,
    repeats: int = 1,
) -> list[Row]:
    """The rows for one model file: for each client count, ``repeats`` rounds of the
    streaming clients, each followed by ``generate_batch`` on the same work; the rates and
    the ratio are the rounds' medians (the ratio is taken round by round, so a slower
    moment of the machine slows both sides of it), the latencies are over every round."""
    generator = Generator(model, tokenizer)
    rows: list[Row] = []
    from .server import serve_in_subprocess

    n = str(max(clients))
    args = ["--model", str(model), "--tokenizer", str(tokenizer), "--parallel", n, "--max-queue", n]
    with serve_in_subprocess(args) as (url, _):
        for n in clients:
            prompts = [("Once upon a time", "Lily and Ben", "The dog", "Tom went")[i % 4]
                       for i in range(n)]  # fmt: skip
            seeds = list(range(1, n + 1))
            stream_clients(url, prompts[:1], seeds[:1], 8)  # warm
            rates, batch_rates, first, gaps = [], [], [], []
            for _ in range(repeats):
                wall, tokens, round_first, round_gaps = stream_clients(
                    url, prompts, seeds, new_tokens
                )
                started = time.perf_counter()
                done = generator.complete_batch(
                    prompts, seed=seeds, max_new_tokens=new_tokens, stop_token_ids=[],
                    max_batch=n,
                )  # fmt: skip
                elapsed = time.perf_counter() - started
                rates.append(tokens / wall)
                batch_rates.append(sum(len(c.token_ids) for c in done) / elapsed)
                first += round_first
                gaps += round_gaps
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
    return rows
