"""Continuous batching: one thread steps a batch engine; requests join it between steps.

A :class:`Task` is one sequence to generate (a request with ``n`` samples is ``n``
tasks). :class:`Scheduler` owns a ``_core.BatchGeneration`` with ``parallel`` slots and
the only thread that touches it: it adds new tasks, cancels abandoned ones, steps, and
hands each task its decoded text, cut at its stop strings, through an asyncio queue.
Each task gets exactly what ``Generator.complete`` gives for the same arguments, whatever
else runs (the engine's batches do not change a sequence's tokens).
"""

from __future__ import annotations

import asyncio
import codecs
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from .. import _core
from ..inference import Generator, SamplingParams
from ..inference.sampling import FINISH_REASONS, engine_options
from ..inference.stopping import StopText
from .metrics import Metrics

# A native batch keeps a little state per request it ever ran: renew it when idle
# after this many.
RENEW_AFTER = 4096
# One call into the engine runs up to this many steps, or this long, before Python takes
# the tokens (it returns sooner when a request starts or ends, or one arrives or leaves):
# a stream's tokens go out in chunks of up to 10 ms, so that a model fast enough to
# sample a token in microseconds is not held up by Python's work per token.
ADVANCE_STEPS = 256
ADVANCE_SECONDS = 0.010
# Every chunk a stream sends costs the event loop a socket write and the client a
# wake-up: 0.1-0.2 ms of CPU together, measured on loopback. Sent every 10 ms, 32 streams
# kept most of a core busy with chunks, a core the engine's threads then lacked. So a
# stream's text goes out at most every STREAM_SECONDS_PER_STREAM x (streams running)
# seconds, within [ADVANCE_SECONDS, MAX_STREAM_INTERVAL] (10 ms alone, 64 ms among 32),
# which keeps that work near a tenth of a core whatever the load; a stream's first token
# and its end go out at once.
STREAM_SECONDS_PER_STREAM = 0.002
MAX_STREAM_INTERVAL = 0.100


def stream_interval(streams: int) -> float:
    """The least time between two chunks of one stream while ``streams`` run."""
    return min(MAX_STREAM_INTERVAL, max(ADVANCE_SECONDS, STREAM_SECONDS_PER_STREAM * streams))


class QueueFull(Exception):
    """Every slot is busy and the queue is at its limit."""


@dataclass(frozen=True)
class TokenEvent:
    """The text one token adds, or several in a row where no logprobs or stop strings
    need each token (``token_id`` is then the last one's)."""

    text: str  # the text the token(s) add (may be empty: held back or incomplete UTF-8)
    token_id: int  # -1 for a final tail of held-back text
    logprobs: tuple[float, list[tuple[int, float]]] | None = None
    piece: bytes = b""  # the token's own bytes, for logprobs' token strings


@dataclass(frozen=True)
class DoneEvent:
    # "stop", "length", "cancelled" (the client went away, or the server stops) or
    # "error" (the engine failed)
    finish_reason: str


@dataclass(eq=False)
class Task:
    """One sequence to generate; its events arrive on :attr:`events`, tagged with
    :attr:`index`."""

    prompt_ids: list[int]
    steps: int
    params: SamplingParams  # seeded
    logprobs: int | None
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue  # (index, TokenEvent | DoneEvent), shared by a request's tasks
    index: int = 0  # the task's choice in its request
    created: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    n_generated: int = 0
    # the scheduler thread's own state
    native_id: int = -1
    cancelled: bool = False
    finished: bool = False
    _stop: StopText | None = None
    _decoder: codecs.IncrementalDecoder | None = None
    _held: list[TokenEvent] = field(default_factory=list)  # events not yet sent
    _sent_at: float = 0.0  # when the task's events last went out


class Scheduler:
    """Runs every task of one model through one batch engine of ``parallel`` slots."""

    def __init__(
        self,
        generator: Generator,
        parallel: int,
        max_queue: int,
        metrics: Metrics,
        interval: float | None = None,
    ) -> None:
        """``interval``: the least seconds between two chunks of a stream (0: every engine
        call's tokens at once); None: :func:`stream_interval` of the streams running."""
        self.generator = generator
        self.interval = interval
        self.parallel = parallel
        self.max_queue = max_queue
        self.metrics = metrics
        self._lock = threading.Condition()
        self._incoming: deque[Task] = deque()  # submitted, not yet added to the engine
        self._running: dict[int, Task] = {}  # native id -> task, added and not finished
        self._native: _core.BatchGeneration | None = None
        self._added = 0  # requests the current native batch has taken
        self._outbox: list[tuple[Task, TokenEvent | DoneEvent]] = []  # this step's events
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tinystories-scheduler", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- from the HTTP side

    def submit(self, tasks: list[Task]) -> None:
        """Queues tasks (all or none); QueueFull when there is no room."""
        with self._lock:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            held = len(self._incoming) + len(self._running)
            if held + len(tasks) > self.parallel + self.max_queue:
                raise QueueFull(f"{self.parallel} slots and a queue of {self.max_queue} are full")
            self._incoming.extend(tasks)
            self._lock.notify()
        self._interrupt()

    def cancel(self, task: Task) -> None:
        """Frees the task's slot at the next step (a client that went away)."""
        with self._lock:
            task.cancelled = True
            self._lock.notify()
        self._interrupt()

    def _interrupt(self) -> None:
        """Ends the engine's current advance after its step, so that a new or abandoned
        task is seen at the next one."""
        native = self._native
        if native is not None:
            native.interrupt()

    def stop(self) -> None:
        """Cancels everything and ends the thread."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        self._interrupt()
        self._thread.join(timeout=10)

    @property
    def busy_slots(self) -> int:
        return min(self.parallel, len(self._running))

    @property
    def queue_depth(self) -> int:
        return len(self._incoming) + max(0, len(self._running) - self.parallel)

    # ------------------------------------------------------------ the scheduler thread

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._incoming and not self._running and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    break
                new = list(self._incoming)
                self._incoming.clear()
            try:
                self._admit(new)
                self._cancel_abandoned()
                if self._running:
                    self._step()
                elif self._added >= RENEW_AFTER:
                    self._native, self._added = None, 0
            except Exception as error:  # the engine failed: end what runs, keep serving
                print(f"tinystories serve: engine error: {error}", file=sys.stderr)
                for task in [*new, *self._running.values()]:
                    if not task.finished:
                        self._finish(task, "error")
                self._running.clear()
                self._native, self._added = None, 0
            self._deliver()
        self._shutdown()
        self._deliver()

    def _emit(self, task: Task, event: TokenEvent | DoneEvent) -> None:
        """Queues an event for this step's delivery; a token event only once the task's
        stream interval has passed since it last sent (its first goes at once)."""
        if isinstance(event, TokenEvent) and task._sent_at:
            task._held.append(event)
            return
        self._send(task, event)

    def _send(self, task: Task, event: TokenEvent | DoneEvent | None = None) -> None:
        """The task's held events, then ``event``, into this step's delivery."""
        self._outbox += [(task, held) for held in task._held]
        task._held.clear()
        if event is not None:
            self._outbox.append((task, event))
        task._sent_at = time.perf_counter()

    def _send_due(self) -> None:
        """Sends the held events of every task whose stream interval has passed."""
        interval = self.interval
        if interval is None:
            interval = stream_interval(len(self._running))
        due = time.perf_counter() - interval
        for task in self._running.values():
            if task._held and task._sent_at <= due:
                self._send(task)

    def _deliver(self) -> None:
        """Hands this step's events to their event loops, one wake-up per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Task, TokenEvent | DoneEvent]]] = {}
        for task, event in self._outbox:
            by_loop.setdefault(task.loop, []).append((task, event))
        self._outbox = []
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, items)
            except RuntimeError:  # the loop has closed: nobody is waiting
                pass

    def _admit(self, tasks: list[Task]) -> None:
        for task in tasks:
            if task.cancelled:
                self._finish(task, "cancelled")
                continue
            if self._native is None:
                self._native = self.generator.engine_batch(self.parallel)
            options = engine_options(task.params, task.logprobs)
            task.native_id = self._native.add(task.prompt_ids, task.steps, options)
            task._stop = StopText(task.params.stop)
            task._decoder = codecs.getincrementaldecoder("utf-8")("replace")
            self._running[task.native_id] = task
            self._added += 1

    def _cancel_abandoned(self) -> None:
        for task in list(self._running.values()):
            if task.cancelled and self._native is not None:
                self._native.cancel(task.native_id)

    def _step(self) -> None:
        assert self._native is not None
        advanced = self._native.advance(ADVANCE_STEPS, ADVANCE_SECONDS)
        for native_id, tokens, data, lengths, logprobs, finish in advanced:
            task = self._running.get(native_id)
            if task is None:
                continue
            if tokens and not task._stop.stopped:
                self._take(task, tokens, data, lengths, logprobs)
            if not finish:
                continue
            tail = task._stop.feed(task._decoder.decode(b"", final=True)) + task._stop.flush()
            if tail:
                self._emit(task, TokenEvent(tail, -1))
            reason = FINISH_REASONS.get(finish, "length")
            if task._stop.stopped:
                reason = "stop"
            elif task.cancelled:
                reason = "cancelled"
            del self._running[native_id]
            self._finish(task, reason)
        self._send_due()

    def _take(
        self,
        task: Task,
        tokens: list[int],
        data: bytes,
        lengths: list[int],
        logprobs: list | None,
    ) -> None:
        """The tokens a task sampled in one advance: one event for all of them, or, where
        stop strings or logprobs need each token's place, one per token up to a stop."""
        now = time.perf_counter()
        if task.first_token_at is None:
            task.first_token_at = now
            self.metrics.time_to_first_token.observe(now - task.created)
        if logprobs is None and not task.params.stop:
            task.n_generated += len(tokens)
            self._emit(task, TokenEvent(task._decoder.decode(data), tokens[-1]))
            return
        start = 0
        for i, (token, length) in enumerate(zip(tokens, lengths, strict=True)):
            piece = data[start : start + length]
            start += length
            task.n_generated += 1
            text = task._stop.feed(task._decoder.decode(piece))
            self._emit(task, TokenEvent(text, token, logprobs[i] if logprobs else None, piece))
            if task._stop.stopped:  # what the engine sampled past the stop is dropped
                self._native.cancel(task.native_id)
                return

    def _finish(self, task: Task, reason: str) -> None:
        task.finished = True
        if task.first_token_at is not None and task.n_generated > 1:
            elapsed = time.perf_counter() - task.first_token_at
            if elapsed > 0:
                self.metrics.tokens_per_second.observe((task.n_generated - 1) / elapsed)
        self.metrics.completion_tokens.inc(task.n_generated)
        self._send(task, DoneEvent(reason))

    def _shutdown(self) -> None:
        with self._lock:
            pending = list(self._incoming) + list(self._running.values())
            self._incoming.clear()
            self._running.clear()
        for task in pending:
            self._finish(task, "cancelled")
        self._native = None


def _put_all(items: list[tuple[Task, TokenEvent | DoneEvent]]) -> None:
    for task, event in items:
        task.events.put_nowait((task.index, event))
