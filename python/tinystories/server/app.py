"""The HTTP layer: :func:`create_app` builds the ASGI app (FastAPI) over one model.

Routes turn requests into :class:`~.scheduler.Task` objects, wait for their events and
answer in OpenAI's shapes (server-sent events when ``stream`` is set). Argument checks
are :class:`tinystories.SamplingParams`'s; their errors, and every other bad request,
become OpenAI error bodies with a 4xx status.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse

from ..inference import Generator, SamplingParams
from ..inference.sampling import MAX_SEED, clock_seed
from .metrics import Gauge, Metrics
from .protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
    chat_prompt,
    error_body,
)
from .scheduler import DoneEvent, QueueFull, Scheduler, Task, TokenEvent

MAX_BODY_BYTES = 1 << 20
# Paths anyone may open when an API key is set.
OPEN_PATHS = ("/", "/health")


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.type, self.param, self.code = status, type_, param, code
        self.headers = headers or {}


@dataclass
class ServedModel:
    name: str
    generator: Generator
    scheduler: Scheduler


def model_name(generator: Generator, name: str | None = None) -> str:
    """``name``, else the model file's stem, or ``default`` for the bundled model."""
    if name:
        return name
    from ..hub.cache import default_model

    if Path(generator.model_path) == Path(default_model()[0]):
        return "default"
    return Path(generator.model_path).stem


def create_app(
    generator: Generator | None = None,
    *,
    name: str | None = None,
    parallel: int = 8,
    max_queue: int = 64,
    api_key: str | None = None,
    cors_origins: Sequence[str] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
    stream_interval: float | None = None,
) -> FastAPI:
    """The OpenAI-compatible app serving ``generator`` (None: the bundled model) with
    ``parallel`` slots batched together and at most ``max_queue`` requests waiting.
    ``stream_interval``: the least seconds between two chunks of a stream (0: as soon as
    the engine has tokens); None grows it with the streams running (10 ms alone, 64 ms
    among 32: ``scheduler.stream_interval``)."""
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise ValueError(f"parallel must be a positive int, got {parallel!r}")
    if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0:
        raise ValueError(f"max_queue must be an int >= 0, got {max_queue!r}")
    if stream_interval is not None and (
        isinstance(stream_interval, bool)
        or not isinstance(stream_interval, int | float)
        or not 0 <= stream_interval <= 60
    ):
        raise ValueError(
            f"stream_interval must be None or seconds in [0, 60], got {stream_interval!r}"
        )
    generator = generator or Generator()
    metrics = Metrics()
    served = ServedModel(
        model_name(generator, name),
        generator,
        Scheduler(generator, parallel, max_queue, metrics, stream_interval),
    )
    metrics.gauges += [
        Gauge("tinystories_queue_depth", "requests waiting for a slot",
              lambda: served.scheduler.queue_depth),
        Gauge("tinystories_busy_slots", "slots generating", lambda: served.scheduler.busy_slots),
        Gauge("tinystories_slots", "slots (--parallel)", lambda: parallel),
    ]  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        served.scheduler.stop()  # in-flight requests end as cancelled

    app = FastAPI(title="tinystories", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.served = served
    app.state.metrics = metrics
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["*"], allow_headers=["*"])  # fmt: skip

    app.add_middleware(_Guard, api_key=api_key, max_body_bytes=max_body_bytes, metrics=metrics)
    app.add_middleware(_BodyLimit, limit=max_body_bytes)
    app.add_exception_handler(ApiError, lambda _, e: _error_response(e))
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)

    @app.get("/", response_class=HTMLResponse)
    async def playground() -> HTMLResponse:
        page = resources.files(__package__).joinpath("playground.html").read_text("utf-8")
        return HTMLResponse(page.replace("{{MODEL}}", served.name))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        entry = {"id": served.name, "object": "model", "created": 0, "owned_by": "tinystories"}
        return {"object": "list", "data": [entry]}

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        return {"tokens": served.generator.encode(body.content, bos=body.add_special)}

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        try:
            return {"content": served.generator.decode(body.tokens)}
        except (ValueError, IndexError) as error:
            raise ApiError(400, str(error), param="tokens") from None

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        _check_model(served, body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if not prompts:
            raise ApiError(400, "prompt must not be an empty list", param="prompt")
        job = _Job.start(request, served, body, prompts, body.max_tokens, body.logprobs)
        shape = _CompletionShape(served, job, echo=body.echo)
        return await job.respond(shape, body.stream)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        _check_model(served, body.model)
        max_tokens = body.max_completion_tokens or body.max_tokens
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        job = _Job.start(request, served, body, [chat_prompt(body.messages)], max_tokens, logprobs)
        return await job.respond(_ChatShape(served, job), body.stream)

    return app


KNOWN_PATHS = {"/", "/health", "/metrics", "/v1/models", "/v1/completions",
               "/v1/chat/completions", "/tokenize", "/detokenize"}  # fmt: skip


# ----------------------------------------------------------------------- errors


class _Guard:
    """The API key, the declared body size, and the requests counter by endpoint and
    status. Plain ASGI rather than ``@app.middleware("http")``, whose wrapper passes every
    chunk of a streamed response through another task."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int, metrics: Metrics) -> None:
        self.app, self.api_key, self.limit, self.metrics = app, api_key, max_body_bytes, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        status = 500  # unless a response starts

        async def counted_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            error = None
            if self.api_key and path not in OPEN_PATHS and scope["method"] != "OPTIONS":
                given = headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
                    error = ApiError(401, "a valid API key is needed: Authorization: Bearer KEY",
                                     "authentication_error", code="invalid_api_key")  # fmt: skip
            length = headers.get("content-length")
            if error is None and length is not None:
                if not length.isdigit() or int(length) > self.limit:
                    error = ApiError(413, f"the body is over {self.limit} bytes")
            if error is not None:
                await _error_response(error)(scope, receive, counted_send)
            else:
                await self.app(scope, receive, counted_send)
        finally:
            endpoint = path if path in KNOWN_PATHS else "other"
            self.metrics.requests.inc(endpoint=endpoint, status=str(status))


class _BodyLimit:
    """Reads the body before the app does, so that a chunked body (no Content-Length)
    over the limit ends in a 413 too; the app then reads it from memory."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                response = _error_response(ApiError(413, f"the body is over {self.limit} bytes"))
                return await response(scope, receive, send)
            more = message.get("more_body", False)
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay():
            nonlocal body
            if body is not None:
                message, body = body, None
                return message
            return await receive()  # afterwards: the disconnect, when it comes

        await self.app(scope, replay, send)


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error_body(str(error), error.type, error.param, error.code),
                        status_code=error.status, headers=error.headers)  # fmt: skip


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0] if error.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    message = first.get("msg", "invalid request")
    if first.get("type") == "json_invalid":
        message, location = "the body is not valid JSON", []
    elif location:
        message = f"{'.'.join(location)}: {message}"
    return _error_response(ApiError(400, message, param=location[0] if location else None))


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    return _error_response(ApiError(500, f"internal error: {type(error).__name__}", "server_error"))


def _check_model(served: ServedModel, model: str | None) -> None:
    if model not in (None, served.name):
        raise ApiError(404, f"the model {model!r} does not exist; this server has {served.name!r}",
                       param="model", code="model_not_found")  # fmt: skip


# ------------------------------------------------------------------ generation


class _Job:
    """One request's tasks (prompts × n) and the events they produce."""

    def __init__(self, request: Request, served: ServedModel, tasks: list[Task],
                 seed: int, prompts: list[str]) -> None:  # fmt: skip
        self.request, self.served, self.tasks = request, served, tasks
        self.seed, self.prompts = seed, prompts
        self.id = f"cmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    @classmethod
    def start(cls, request: Request, served: ServedModel, body: Any, prompts: list[str],
              max_tokens: int | None, logprobs: int | None) -> _Job:  # fmt: skip
        if max_tokens is not None and max_tokens < 0:
            raise ApiError(400, f"max_tokens must be >= 0, got {max_tokens}", param="max_tokens")
        seed = body.seed if body.seed is not None else clock_seed()
        if not 0 <= seed <= MAX_SEED - (body.n - 1):
            raise ApiError(400, f"seed must be in [0, 2**64 - n], got {seed}", param="seed")
        try:
            base = SamplingParams(**body.sampling_options(), max_new_tokens=max_tokens)
        except (TypeError, ValueError) as error:
            raise ApiError(400, str(error), param=str(error).split()[0]) from None
        vocab_size = served.generator.config.vocab_size
        if any(t >= vocab_size for t in base.stop_token_ids):
            raise ApiError(400, f"stop_token_ids must be below the vocabulary size {vocab_size}",
                           param="stop_token_ids")  # fmt: skip
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        tasks = []
        generator = served.generator
        for p, prompt in enumerate(prompts):
            for i in range(body.n):
                params = SamplingParams.of(base, seed=seed + i)
                try:
                    prompt_ids, steps = generator.prompt_steps(prompt, params)
                except ValueError as error:
                    raise ApiError(400, str(error), param="prompt",
                                   code="context_length_exceeded") from None  # fmt: skip
                tasks.append(Task(prompt_ids, steps, params, logprobs, loop, events,
                                  index=p * body.n + i))  # fmt: skip
        try:
            served.scheduler.submit(tasks)
        except QueueFull as error:
            raise ApiError(503, f"the server is busy: {error}", "server_busy",
                           headers={"Retry-After": "1"}) from None  # fmt: skip
        served.scheduler.metrics.prompt_tokens.inc(sum(len(t.prompt_ids) for t in tasks))
        return cls(request, served, tasks, seed, prompts)

    async def events(self) -> AsyncIterator[list[tuple[int, TokenEvent | DoneEvent]]]:
        """Every task's events, as many as have arrived at a time, until all are done;
        cancels the tasks if the client leaves."""
        remaining = len(self.tasks)
        queue = self.tasks[0].events
        try:
            while remaining:
                try:
                    batch = [await asyncio.wait_for(queue.get(), timeout=0.25)]
                except asyncio.TimeoutError:
                    if await self.request.is_disconnected():
                        return
                    continue
                while not queue.empty():
                    batch.append(queue.get_nowait())
                remaining -= sum(isinstance(event, DoneEvent) for _, event in batch)
                yield batch
        finally:
            for task in self.tasks:
                if not task.finished:
                    self.served.scheduler.cancel(task)

    def usage(self) -> dict[str, int]:
        prompt = sum(len(t.prompt_ids) for t in self.tasks)
        completion = sum(t.n_generated for t in self.tasks)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}  # fmt: skip

    async def respond(self, shape: _Shape, stream: bool):
        if stream:
            return StreamingResponse(self._stream(shape), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})  # fmt: skip
        texts = [[] for _ in self.tasks]
        tokens: list[list[TokenEvent]] = [[] for _ in self.tasks]
        finish = [None] * len(self.tasks)
        async for batch in self.events():
            for index, event in batch:
                if isinstance(event, DoneEvent):
                    finish[index] = event.finish_reason
                else:
                    texts[index].append(event.text)
                    if event.token_id >= 0:
                        tokens[index].append(event)
        if "error" in finish:
            raise ApiError(500, "the engine failed on this request", "server_error")
        if any(f is None or f == "cancelled" for f in finish):
            raise ApiError(503, "the request was cancelled (the server is stopping)",
                           "server_busy")  # fmt: skip
        choices = [shape.choice(i, "".join(texts[i]), tokens[i], finish[i])
                   for i in range(len(self.tasks))]  # fmt: skip
        return {"id": self.id, "object": shape.object, "created": self.created,
                "model": self.served.name, "choices": choices, "usage": self.usage(),
                "seed": self.seed}  # fmt: skip

    async def _stream(self, shape: _Shape) -> AsyncIterator[str]:
        # every chunk's fixed fields, encoded once: a chunk per token adds up
        fixed = json.dumps({"id": self.id, "object": shape.chunk_object,
                            "created": self.created, "model": self.served.name,
                            "seed": self.seed})[:-1]  # fmt: skip

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
            body = json.dumps({"choices": choices, **extra})[1:]
            return f"data: {fixed}, {body}\n\n"

        for i in range(len(self.tasks)):
            first = shape.first_delta(i)
            if first is not None:
                yield chunk([first])
        ended = 0
        async for batch in self.events():
            # what arrived together goes out together, in one write: a stream's consecutive
            # texts in one chunk (one per token when logprobs are asked for), and after the
            # last end the usage and [DONE]
            out: list[str] = []
            pending: dict[int, str] = {}
            for index, event in batch:
                if isinstance(event, DoneEvent):
                    if pending.get(index):
                        out.append(chunk([shape.delta(index, pending.pop(index), None, None)]))
                    reason = event.finish_reason
                    if reason in ("cancelled", "error"):  # a stream can only end here
                        reason = "stop"
                    out.append(chunk([shape.delta(index, "", None, reason)]))
                elif shape.wants_empty(index):
                    if event.token_id >= 0 or event.text:
                        out.append(chunk([shape.delta(index, event.text, event, None)]))
                else:
                    pending[index] = pending.get(index, "") + event.text
            out += [
                chunk([shape.delta(i, text, None, None)]) for i, text in pending.items() if text
            ]
            ended += sum(isinstance(event, DoneEvent) for _, event in batch)
            if ended == len(self.tasks):
                out += [chunk([], usage=self.usage()), "data: [DONE]\n\n"]
            if out:
                yield "".join(out)


class _Shape:
    """How one endpoint writes choices."""

    object = chunk_object = ""

    def __init__(self, served: ServedModel, job: _Job) -> None:
        self.served, self.job = served, job

    def piece(self, token: int) -> str:
        return self.served.generator.tokenizer.piece(token).decode("utf-8", "replace")

    def first_delta(self, index: int) -> dict[str, Any] | None:
        return None

    def wants_empty(self, index: int) -> bool:
        return self.job.tasks[index].logprobs is not None


class _CompletionShape(_Shape):
    object = chunk_object = "text_completion"

    def __init__(self, served: ServedModel, job: _Job, echo: bool) -> None:
        super().__init__(served, job)
        self.echo = echo

    def _prompt(self, index: int) -> str:
        return self.job.prompts[index // (len(self.job.tasks) // len(self.job.prompts))]

    def _logprobs(self, tokens: list[TokenEvent]) -> dict[str, Any] | None:
        if not tokens or tokens[0].logprobs is None:
            return None
        out: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [],
                                     "text_offset": []}  # fmt: skip
        offset = 0
        for t in tokens:
            text = t.piece.decode("utf-8", "replace")
            out["tokens"].append(text)
            out["token_logprobs"].append(t.logprobs[0])
            out["top_logprobs"].append({self.piece(i): lp for i, lp in t.logprobs[1]})
            out["text_offset"].append(offset)
            offset += len(text)
        return out

    def choice(self, index: int, text: str, tokens: list[TokenEvent], finish: str):
        if self.echo:
            text = self._prompt(index) + text
        return {"index": index, "text": text, "logprobs": self._logprobs(tokens),
                "finish_reason": finish}  # fmt: skip

    def first_delta(self, index: int) -> dict[str, Any] | None:
        if not self.echo:
            return None
        return {"index": index, "text": self._prompt(index), "logprobs": None,
                "finish_reason": None}  # fmt: skip

    def delta(self, index: int, text: str, token: TokenEvent | None, finish: str | None):
        return {"index": index, "text": text,
                "logprobs": self._logprobs([token]) if token else None,
                "finish_reason": finish}  # fmt: skip


class _ChatShape(_Shape):
    object, chunk_object = "chat.completion", "chat.completion.chunk"

    def _logprobs(self, tokens: list[TokenEvent]) -> dict[str, Any] | None:
        if not tokens or tokens[0].logprobs is None:
            return None

        def entry(text: str, logprob: float) -> dict[str, Any]:
            return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

        content = []
        for t in tokens:
            item = entry(t.piece.decode("utf-8", "replace"), t.logprobs[0])
            item["top_logprobs"] = [entry(self.piece(i), lp) for i, lp in t.logprobs[1]]
            content.append(item)
        return {"content": content}

    def choice(self, index: int, text: str, tokens: list[TokenEvent], finish: str):
        return {"index": index, "message": {"role": "assistant", "content": text},
                "logprobs": self._logprobs(tokens), "finish_reason": finish}  # fmt: skip

    def first_delta(self, index: int) -> dict[str, Any] | None:
        return {"index": index, "delta": {"role": "assistant", "content": ""},
                "logprobs": None, "finish_reason": None}  # fmt: skip

    def delta(self, index: int, text: str, token: TokenEvent | None, finish: str | None):
        delta = {"content": text} if finish is None else {}
        return {"index": index, "delta": delta,
                "logprobs": self._logprobs([token]) if token else None,
                "finish_reason": finish}  # fmt: skip
