"""Generations in progress and what they return: :class:`Generation`,
:class:`BatchGeneration`, :class:`Completion` and :class:`TokenLogprob`."""

from __future__ import annotations

import codecs
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .. import _core
from .sampling import FINISH_REASONS, SamplingParams
from .stopping import StopText


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability under the model: the log-softmax of the raw
    logits (before penalties and temperature, as OpenAI and llama.cpp report it)."""

    token_id: int
    logprob: float
    # The most likely tokens at that position, most likely first: (token id, logprob).
    top: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class Completion:
    """A finished generation, from :meth:`Generator.complete` and friends."""

    text: str  # the completion after the prompt, cut before a stop string
    token_ids: list[int]  # every token generated (those of a stop string included)
    # "stop": a stop token (by default BOS) or stop string; "length": max_new_tokens or
    # the end of the context.
    finish_reason: str
    prompt_tokens: int  # the prompt's tokens, its BOS included
    tokens_per_s: float  # generated tokens per second after the prompt was evaluated
    seed: int  # the seed it ran with (drawn from the clock when none was given)
    logprobs: list[TokenLogprob] | None = None  # per token of token_ids, when asked


def _token_logprob(token: int, logprobs: tuple[float, list[tuple[int, float]]]) -> TokenLogprob:
    logprob, top = logprobs
    return TokenLogprob(token, logprob, tuple(top))


class Generation:
    """One generation in progress, from :meth:`Generator.start`.

    Iterate :meth:`tokens` to see every generated token as it comes, or call
    :meth:`text` or :meth:`completion` to run to the end.
    """

    def __init__(
        self,
        native: _core.Generation,
        sampling: SamplingParams,
        prompt_tokens: int,
        logprobs: int | None = None,
    ) -> None:
        self._native = native
        self.sampling = sampling  # with the seed it runs with
        self.prompt_tokens = prompt_tokens
        self.token_ids: list[int] = []
        self.logprobs: list[TokenLogprob] | None = [] if logprobs is not None else None
        self._stop = StopText(sampling.stop)

    def tokens(self) -> Iterator[tuple[int, str]]:
        """``(token id, text)`` per generated token, the text decoded incrementally as
        UTF-8 (empty while a character is incomplete or the text could begin a stop
        string; id -1: a final tail)."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        while (event := self._native.next()) is not None:
            token, piece, is_prompt, logprobs = event
            if is_prompt:
                continue
            self.token_ids.append(token)
            if logprobs is not None and self.logprobs is not None:
                self.logprobs.append(_token_logprob(token, logprobs))
            yield token, self._stop.feed(decoder.decode(piece))
            if self._stop.stopped:
                return
        tail = self._stop.feed(decoder.decode(b"", final=True)) + self._stop.flush()
        if tail:
            yield -1, tail

    def pieces(self) -> Iterator[str]:
        """The completion in non-empty text pieces as they are generated."""
        for _, text in self.tokens():
            if text:
                yield text

    def text(self) -> str:
        """Runs to the end (Ctrl-C interrupts it); the completion."""
        if self._stop.stop or self.logprobs is not None:
            return "".join(self.pieces())
        text, ids = self._native.run(False)  # the whole loop in C
        self.token_ids.extend(ids)
        return text.decode("utf-8", "replace")

    def completion(self) -> Completion:
        """Runs to the end; the :class:`Completion`."""
        text = self.text()
        stats = self.stats
        elapsed = stats["elapsed_s"]
        return Completion(
            text=text,
            token_ids=list(self.token_ids),
            finish_reason=self.finish_reason or "length",
            prompt_tokens=self.prompt_tokens,
            tokens_per_s=len(self.token_ids) / elapsed if elapsed > 0 else 0.0,
            seed=self.sampling.seed,
            logprobs=None if self.logprobs is None else list(self.logprobs),
        )

    @property
    def finish_reason(self) -> str | None:
        """``"stop"`` or ``"length"`` once ended (see :class:`Completion`), else None."""
        if self._stop.stopped:
            return "stop"
        return FINISH_REASONS.get(self._native.stats["finish_reason"])

    @property
    def stats(self) -> dict[str, float]:
        """``n_positions`` evaluated, ``n_generated`` tokens, ``n_shifts`` context shifts
        and ``elapsed_s`` so far."""
        return self._native.stats


class BatchGeneration:
    """Many generations run together, from :meth:`Generator.start_batch`."""

    def __init__(
        self,
        native: _core.BatchGeneration | None,
        params: Sequence[SamplingParams] = (),
        prompt_tokens: Sequence[int] = (),
        logprobs: int | None = None,
    ) -> None:
        self._native = native  # None: no prompts
        self._params = list(params)
        self._prompt_tokens = list(prompt_tokens)
        self._logprobs = logprobs

    def run(self) -> list[str]:
        """Steps every sequence to its end (Ctrl-C interrupts it); the completions in order."""
        return [c.text for c in self.completions()]

    def completions(self) -> list[Completion]:
        """Steps every sequence to its end; a :class:`Completion` per prompt, in order."""
        if self._native is None:
            return []
        start = time.perf_counter()
        if self._logprobs is not None or any(p.stop for p in self._params):
            texts, logprobs, stopped = self._run_stepwise()
        else:  # the whole loop in C
            texts = [t.decode("utf-8", "replace") for t in self._native.run()]
            logprobs, stopped = None, [False] * len(texts)
        elapsed = time.perf_counter() - start
        ids, finish = self._native.token_ids, self._native.finish_reasons
        return [
            Completion(
                text=texts[i],
                token_ids=list(ids[i]),
                finish_reason="stop" if stopped[i] else FINISH_REASONS.get(finish[i], "length"),
                prompt_tokens=self._prompt_tokens[i],
                tokens_per_s=len(ids[i]) / elapsed if elapsed > 0 else 0.0,
                seed=self._params[i].seed,
                logprobs=None if logprobs is None else logprobs[i],
            )
            for i in range(len(texts))
        ]

    def _run_stepwise(self) -> tuple[list[str], list[list[TokenLogprob]], list[bool]]:
        """The batch stepped from Python: stop strings cancel their request."""
        n = len(self._params)
        decoders = [codecs.getincrementaldecoder("utf-8")("replace") for _ in range(n)]
        stops = [StopText(p.stop) for p in self._params]
        texts: list[list[str]] = [[] for _ in range(n)]
        logprobs: list[list[TokenLogprob]] = [[] for _ in range(n)]
        remaining = n
        while remaining:
            for i, token, piece, is_prompt, token_logprobs, _ in self._native.step():
                stop = stops[i]
                if token < 0:  # the request ended
                    texts[i].append(stop.feed(decoders[i].decode(b"", final=True)) + stop.flush())
                    remaining -= 1
                elif not is_prompt and not stop.stopped:
                    if token_logprobs is not None:
                        logprobs[i].append(_token_logprob(token, token_logprobs))
                    texts[i].append(stop.feed(decoders[i].decode(piece)))
                    if stop.stopped:
                        self._native.cancel(i)
        return ["".join(t) for t in texts], logprobs, [s.stopped for s in stops]

    @property
    def n_generated(self) -> int:
        """Tokens sampled after the prompts so far, all sequences together."""
        return self._native.n_generated if self._native is not None else 0
