"""The HTTP server through the official ``openai`` client and plain HTTP, on loopback:
exact seeded outputs, streaming, chat, n, concurrency, disconnects, errors, metrics."""

from __future__ import annotations

import json
import threading
import time

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")


from tinystories import Generator  # noqa: E402
from tinystories.server import create_app, serve_in_background  # noqa: E402
from tinystories.server.protocol import ChatMessage, chat_prompt  # noqa: E402


@pytest.fixture(scope="module")
def generator(tok105):
    return Generator(tok105["model"], tok105["tokenizer"])


@pytest.fixture(scope="module")
def base_url(generator):
    with serve_in_background(
        create_app(generator, name="tok105", parallel=16, max_queue=256)
    ) as url:
        yield url


@pytest.fixture()
def client(base_url):
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)


def metric(base_url: str, name: str) -> float:
    text = httpx.get(base_url + "/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_seeded_completion_is_generate(client, generator):
    kwargs = dict(max_tokens=80, temperature=0.8, top_p=0.9, seed=42)
    r = client.completions.create(model="tok105", prompt="Once upon a time", **kwargs)
    want = generator.generate(
        "Once upon a time", max_new_tokens=80, temperature=0.8, top_p=0.9, seed=42
    )
    assert r.choices[0].text == want
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 80
    assert r.usage.prompt_tokens == len(generator.encode("Once upon a time"))
    streamed = client.completions.create(
        model="tok105", prompt="Once upon a time", stream=True, **kwargs
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == want


def test_options_n_list_prompts_echo_and_stop(client, generator):
    r = client.completions.create(
        model="tok105", prompt=["Tom", "Lily"], n=2, max_tokens=40, seed=7,
        stop=["."], extra_body={"top_k": 20, "repetition_penalty": 1.2},
    )  # fmt: skip
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    for c in r.choices:
        prompt, i = ["Tom", "Lily"][c.index // 2], c.index % 2
        want = generator.complete(
            prompt, max_new_tokens=40, seed=7 + i, stop=["."], top_k=20, repetition_penalty=1.2
        )
        assert (c.text, c.finish_reason) == (want.text, want.finish_reason)
    echo = client.completions.create(model="tok105", prompt="Tom", max_tokens=5, seed=1, echo=True)
    assert echo.choices[0].text == "Tom" + generator.generate("Tom", max_new_tokens=5, seed=1)


def test_chat_completion(client, generator):
    messages = [{"role": "system", "content": "A story."}, {"role": "user", "content": "Tom"}]
    prompt = chat_prompt([ChatMessage(**m) for m in messages])
    want = generator.generate(prompt, max_new_tokens=30, seed=3)
    r = client.chat.completions.create(model="tok105", messages=messages, max_tokens=30, seed=3)
    assert r.choices[0].message.content == want and r.choices[0].message.role == "assistant"
    chunks = client.chat.completions.create(
        model="tok105", messages=messages, max_tokens=30, seed=3, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want


def test_logprobs(client, generator):
    r = client.completions.create(model="tok105", prompt="Tom", max_tokens=10, seed=2, logprobs=3)
    want = generator.complete("Tom", max_new_tokens=10, seed=2, logprobs=3)
    lp = r.choices[0].logprobs
    assert lp.token_logprobs == pytest.approx([t.logprob for t in want.logprobs])
    assert [len(top) for top in lp.top_logprobs] == [3] * 10
    chat = client.chat.completions.create(
        model="tok105", messages=[{"role": "user", "content": "Tom"}], max_tokens=5, seed=2,
        logprobs=True, top_logprobs=2,
    )  # fmt: skip
    assert len(chat.choices[0].logprobs.content) == 5
    assert len(chat.choices[0].logprobs.content[0].top_logprobs) == 2


def test_64_concurrent_clients_get_their_own_exact_outputs(client, generator):
    prompts = [f"{name} went" for name in ("Tom", "Lily", "Ben", "Mia")] * 16
    results: list[str | None] = [None] * len(prompts)

    def ask(i: int) -> None:
        r = client.completions.create(
            model="tok105", prompt=prompts[i], max_tokens=60, temperature=0.9, seed=100 + i,
            stream=i % 2 == 0,
        )  # fmt: skip
        if i % 2 == 0:
            results[i] = "".join(c.choices[0].text for c in r if c.choices)
        else:
            results[i] = r.choices[0].text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i, prompt in enumerate(prompts):
        want = generator.generate(prompt, max_new_tokens=60, temperature=0.9, seed=100 + i)
        assert results[i] == want, f"client {i}"


def test_a_client_that_leaves_frees_its_slot(base_url):
    before = metric(base_url, "tinystories_completion_tokens_total")
    body = {"prompt": "Tom", "max_tokens": 200000, "context_shift": True,
            "stop_token_ids": [], "stream": True, "seed": 1}  # fmt: skip
    with httpx.stream("POST", base_url + "/v1/completions", json=body, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                break  # the first token arrived: leave
    deadline = time.monotonic() + 10
    while metric(base_url, "tinystories_busy_slots") > 0:
        assert time.monotonic() < deadline, "the slot is still busy"
        time.sleep(0.05)
    generated = metric(base_url, "tinystories_completion_tokens_total") - before
    assert 0 < generated < 200000


@pytest.mark.parametrize(
    "body, status, param",
    [
        (b"{not json", 400, None),
        ({"prompt": "Tom", "temperature": "hot"}, 400, "temperature"),
        ({"prompt": "Tom", "temperature": -1}, 400, "temperature"),
        ({"prompt": "Tom", "top_p": 2}, 400, "top_p"),
        ({"prompt": "Tom", "max_tokens": -5}, 400, "max_tokens"),
        ({"prompt": "Tom", "n": 0}, 400, "n"),
        ({"prompt": "Tom", "seed": -1}, 400, "seed"),
        ({"prompt": "Tom", "logprobs": 99}, 400, "logprobs"),
        ({"prompt": "Tom", "model": "gpt-4"}, 404, "model"),
        ({"prompt": "x" * 2000}, 400, "prompt"),
        ({"prompt": 5}, 400, "prompt"),
        ({"prompt": []}, 400, "prompt"),
        ({"prompt": "Tom", "stop_token_ids": [100000]}, 400, "stop_token_ids"),
        ({"prompt": "Tom", "stop": [""]}, 400, "stop"),
    ],
)
def test_bad_requests_get_openai_errors_and_the_server_goes_on(base_url, body, status, param):
    kwargs = {"content": body, "headers": {"content-type": "application/json"}}
    if not isinstance(body, bytes):
        kwargs = {"json": body}
    r = httpx.post(base_url + "/v1/completions", **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    assert httpx.get(base_url + "/health").status_code == 200
    ok = httpx.post(base_url + "/v1/completions", json={"prompt": "Tom", "max_tokens": 2})
    assert ok.status_code == 200


def test_openai_client_raises_on_errors(client):
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tok105", prompt="Tom", temperature=-3)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="Tom")


def test_models_tokenize_detokenize_and_metrics(base_url, client, generator):
    assert [m.id for m in client.models.list()] == ["tok105"]
    ids = httpx.post(base_url + "/tokenize", json={"content": "Lily"}).json()["tokens"]
    assert ids == generator.encode("Lily")
    text = httpx.post(base_url + "/detokenize", json={"tokens": ids}).json()["content"]
    assert text == generator.decode(ids)
    assert httpx.post(base_url + "/detokenize", json={"tokens": [10**6]}).status_code == 400
    requests = metric(base_url, "tinystories_requests_total")
    tokens = metric(base_url, "tinystories_completion_tokens_total")
    client.completions.create(model="tok105", prompt="Tom", max_tokens=9, seed=1)
    assert metric(base_url, "tinystories_requests_total") > requests
    assert metric(base_url, "tinystories_completion_tokens_total") == tokens + 9
    text = httpx.get(base_url + "/metrics").text
    for name in ("tinystories_time_to_first_token_seconds_bucket", "tinystories_queue_depth",
                 "tinystories_busy_slots", "tinystories_tokens_per_second_count",
                 "tinystories_prompt_tokens_total"):  # fmt: skip
        assert name in text


def test_api_key_queue_limit_and_body_limit(generator):
    app = create_app(generator, parallel=1, max_queue=0, api_key="sesame", max_body_bytes=1000)
    with serve_in_background(app) as url:
        assert httpx.get(url + "/health").status_code == 200  # open
        r = httpx.post(url + "/v1/completions", json={"prompt": "Tom"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        auth = {"Authorization": "Bearer sesame"}
        assert httpx.post(url + "/v1/completions", json={"prompt": "Tom"}, headers=auth).is_success
        big = httpx.post(url + "/v1/completions", json={"prompt": "x" * 2000}, headers=auth)
        assert big.status_code == 413

        def chunked():  # no Content-Length: the limit counts what arrives
            yield b'{"prompt": "'
            for _ in range(20):
                yield b"x" * 100
            yield b'"}'

        big = httpx.post(url + "/v1/completions", content=chunked(), headers=auth)
        assert big.status_code == 413 and "1000 bytes" in big.json()["error"]["message"]
        long = {"prompt": "Tom", "max_tokens": 200000, "context_shift": True,
                "stop_token_ids": [], "stream": True}  # fmt: skip
        with httpx.stream("POST", url + "/v1/completions", json=long, headers=auth) as r:
            lines = r.iter_lines()  # kept: dropping it would close the stream
            next(lines)  # the one slot is busy now
            busy = httpx.post(url + "/v1/completions", json={"prompt": "Tom"}, headers=auth)
            assert busy.status_code == 503 and busy.headers["retry-after"]
            assert busy.json()["error"]["type"] == "server_busy"


def test_playground_page(base_url):
    page = httpx.get(base_url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/v1/completions" in page.text and "tok105" in page.text
    assert "http://" not in page.text.replace(base_url, "") and "https://" not in page.text


def test_seed_is_returned_when_drawn(base_url):
    r = httpx.post(base_url + "/v1/completions", json={"prompt": "Tom", "max_tokens": 5})
    seed = r.json()["seed"]
    again = httpx.post(
        base_url + "/v1/completions", json={"prompt": "Tom", "max_tokens": 5, "seed": seed}
    )
    assert again.json()["choices"][0]["text"] == r.json()["choices"][0]["text"]
    assert json.loads(again.text)["seed"] == seed


def test_serve_command_stops_on_sigterm_with_requests_in_flight(tok105):
    import signal

    from tinystories.server import serve_in_subprocess

    args = ["--model", str(tok105["model"]), "--tokenizer", str(tok105["tokenizer"])]
    with serve_in_subprocess(args) as (url, server):
        body = {"prompt": "Tom", "max_tokens": 10**6, "context_shift": True,
                "stop_token_ids": [], "stream": True}  # fmt: skip
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as r:
            lines = r.iter_lines()
            next(lines)  # a stream is in flight
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=20) == 0


def test_server_process_says_why_a_server_did_not_start():
    """A server that exits before /health answers: the error names it and ends with its log."""
    import sys

    from tinystories.server import server_process

    def command(port: int) -> list[str]:
        return [sys.executable, "-c", f"import sys; sys.exit('no model for port {port}')"]

    with pytest.raises(RuntimeError, match=r"fake-server did not start: no model for port \d+"):
        with server_process("fake-server", command):
            pass


def test_scheduler_survives_an_engine_error(generator):
    """A request the engine refuses ends with "error"; the next one is served as usual."""
    import asyncio

    from tinystories import SamplingParams
    from tinystories.server.metrics import Metrics
    from tinystories.server.scheduler import DoneEvent, Scheduler, Task

    async def run(prompt_ids: list[int]) -> tuple[str, str]:
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        params = SamplingParams(seed=1, max_new_tokens=5)
        steps = len(prompt_ids) - 1 + 5  # run.c's positions for 5 new tokens
        scheduler.submit([Task(prompt_ids, steps, params, None, loop, queue)])
        text = ""
        while True:
            _, event = await queue.get()
            if isinstance(event, DoneEvent):
                return text, event.finish_reason
            text += event.text

    scheduler = Scheduler(generator, 2, 2, Metrics())
    try:
        assert asyncio.run(run([1, 10**6]))[1] == "error"  # an id outside the vocabulary
        text, reason = asyncio.run(run(generator.encode("Tom")))
        assert reason == "length" and text == generator.generate("Tom", max_new_tokens=5, seed=1)
    finally:
        scheduler.stop()


def test_a_stream_sends_its_first_token_at_once_then_once_per_interval(generator, monkeypatch):
    """Between its first token and its end a stream's text goes out at most once per
    stream interval: with an interval longer than the request, the first token comes alone
    and everything else with the end, and the text is still generate()'s."""
    import asyncio

    from tinystories import SamplingParams
    from tinystories.server import create_app
    from tinystories.server import scheduler as scheduling
    from tinystories.server.metrics import Metrics
    from tinystories.server.scheduler import DoneEvent, Scheduler, Task, TokenEvent

    assert scheduling.stream_interval(1) == scheduling.ADVANCE_SECONDS
    assert scheduling.stream_interval(32) > scheduling.stream_interval(8)
    assert scheduling.stream_interval(10**6) == scheduling.MAX_STREAM_INTERVAL
    for bad in (-0.1, 61, "1", True):
        with pytest.raises(ValueError, match="^stream_interval must be"):
            create_app(generator, stream_interval=bad)
    monkeypatch.setattr(scheduling, "ADVANCE_STEPS", 1)  # one engine call per token

    async def deliveries(scheduler: Scheduler, new_tokens: int) -> list[list]:
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        params = SamplingParams(seed=3, max_new_tokens=new_tokens)
        prompt_ids = generator.encode("Tom")
        steps = len(prompt_ids) - 1 + new_tokens
        scheduler.submit([Task(prompt_ids, steps, params, None, loop, queue)])
        batches: list[list] = []
        while not batches or not isinstance(batches[-1][-1], DoneEvent):
            batch = [(await queue.get())[1]]
            while not queue.empty():  # what one delivery put
                batch.append(queue.get_nowait()[1])
            batches.append(batch)
        return batches

    def run(interval: float) -> list[list]:
        scheduler = Scheduler(generator, 2, 2, Metrics(), interval)
        try:
            return asyncio.run(deliveries(scheduler, 150))
        finally:
            scheduler.stop()

    assert len(run(0.0)) > 10
    first, rest = run(3600.0)
    assert len(first) == 1 and isinstance(first[0], TokenEvent)
    assert all(isinstance(e, TokenEvent) for e in rest[:-1]) and len(rest) >= 2
    assert rest[-1].finish_reason == "length"
    text = "".join(e.text for e in first + rest[:-1])
    assert text == generator.generate("Tom", max_new_tokens=150, seed=3)
