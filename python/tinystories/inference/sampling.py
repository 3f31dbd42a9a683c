"""How a generation samples: one frozen, validated :class:`SamplingParams`.

Every generation entry point (``Generator.generate``, ``stream``, ``complete``,
``start``, ``generate_batch``, the CLI, Modal's ``sample``) takes these options as keyword
arguments and builds one ``SamplingParams`` from them, so an option is declared,
defaulted and checked here and nowhere else. :func:`sampling_signature` shows the
options in those methods' signatures (``help()``, ``inspect.signature``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .. import _core
from ..formats.constants import BOS

MAX_SEED = 2**64 - 1
MAX_INT = 2**31 - 1  # the engine's int (top_k, token counts)
MAX_PENALTY = 2.0  # |presence_penalty|, |frequency_penalty|: OpenAI's range
MAX_TOP_LOGPROBS: int = _core.MAX_TOP_LOGPROBS

# The engine's TS_FINISH_* -> Completion.finish_reason (a cancelled request only
# ends that way when a stop string cut it).
FINISH_REASONS: dict[int, str] = {
    _core.FINISH_STOP: "stop",
    _core.FINISH_LENGTH: "length",
    _core.FINISH_CANCELLED: "stop",
}


@dataclass(frozen=True)
class SamplingParams:
    """Sampling options, checked and normalised when constructed.

    Every addition to llama2.c's sampler is off by default. The sampler applies them in
    this order to the logits after the last position: ``repetition_penalty``, then
    ``presence_penalty`` and ``frequency_penalty``; greedy when ``temperature`` is 0 or
    ``min_p`` is 1; the temperature; ``top_k``; ``min_p``; softmax; ``top_p``; the draw.

    >>> SamplingParams(temperature=0.8, seed=42).temperature
    0.8
    """

    # None: until a stop token is sampled or the context ends (llama2.c's run -n <seq_len>).
    max_new_tokens: int | None = None
    # 0 is greedy.
    temperature: float = 1.0
    # Nucleus sampling threshold; 0 or 1 turns it off, as in run.c.
    top_p: float = 0.9
    # Keep the k most likely tokens; 0 turns it off.
    top_k: int = 0
    # Keep tokens at least min_p times as likely as the most likely one; 0 turns it off.
    min_p: float = 0.0
    # Hugging Face's: each distinct token of the sequence (prompt with its BOS, and the
    # generated ones) has a positive logit divided by it, a negative one multiplied.
    repetition_penalty: float = 1.0
    # OpenAI's, over the generated tokens: a token generated c > 0 times loses
    # presence_penalty + c * frequency_penalty from its logit. In [-2, 2].
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # In [0, 2**64 - 1]: seeds >= 1 are llama2.c's, 0 (the xorshift generator's fixed
    # point) runs as the state _core.SEED_ZERO_STATE; None: from the clock.
    seed: int | None = None
    # Stop before the first occurrence of any of these strings (not included in the text).
    stop: str | Sequence[str] | None = None
    # Sampling one of these ends the generation (not printed). llama2.c's: BOS alone.
    stop_token_ids: Sequence[int] = (BOS,)
    # When the context is full, drop the oldest tokens (keeping BOS), evaluate the rest
    # afresh and go on; needs max_new_tokens.
    context_shift: bool = False

    def __post_init__(self) -> None:
        values = {
            "temperature": _real("temperature", self.temperature, low=0.0),
            "top_p": _real("top_p", self.top_p, low=0.0, high=1.0),
            "top_k": _integer("top_k", self.top_k, 0, MAX_INT, "0 disables it"),
            "min_p": _real("min_p", self.min_p, low=0.0, high=1.0),
            "repetition_penalty": _real(
                "repetition_penalty", self.repetition_penalty, low=0.0, low_open=True
            ),
            "presence_penalty": _real(
                "presence_penalty", self.presence_penalty, low=-MAX_PENALTY, high=MAX_PENALTY
            ),
            "frequency_penalty": _real(
                "frequency_penalty", self.frequency_penalty, low=-MAX_PENALTY, high=MAX_PENALTY
            ),
            "seed": None if self.seed is None else _integer("seed", self.seed, 0, MAX_SEED),
            "max_new_tokens": None
            if self.max_new_tokens is None
            else _integer("max_new_tokens", self.max_new_tokens, 0, MAX_INT),
            "stop": _stop_strings(self.stop),
            "stop_token_ids": tuple(
                _integer("stop_token_ids", t, 0, MAX_INT)
                for t in _sequence("stop_token_ids", self.stop_token_ids)
            ),
            "context_shift": _flag("context_shift", self.context_shift),
        }
        if values["context_shift"] and values["max_new_tokens"] is None:
            raise ValueError("context_shift needs max_new_tokens (it could go on forever)")
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def of(cls, sampling: SamplingParams | None = None, **options: Any) -> SamplingParams:
        """``sampling`` (or the defaults) with ``options`` replacing its fields.

        An unknown option is a TypeError naming it, as for any keyword argument.
        """
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unexpected sampling option(s): {', '.join(unknown)}")
        if sampling is None:
            return cls(**options)
        if not isinstance(sampling, SamplingParams):
            raise TypeError(f"sampling must be a SamplingParams or None, got {sampling!r}")
        return dataclasses.replace(sampling, **options) if options else sampling

    def with_seed(self) -> SamplingParams:
        """These params with a seed: the given one, else one from the clock (like run.c)."""
        if self.seed is not None:
            return self
        return dataclasses.replace(self, seed=clock_seed())


def engine_options(params: SamplingParams, logprobs: int | None = None) -> _core.Options:
    """The engine's ``ts_sampling`` and ``ts_generate_options`` for ``params`` (seeded)."""
    assert params.seed is not None, "resolve the seed first (SamplingParams.with_seed)"
    if logprobs is not None:
        _integer("logprobs", logprobs, 0, MAX_TOP_LOGPROBS)
    return _core.Options(
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        seed=params.seed,
        min_p=params.min_p,
        repetition_penalty=params.repetition_penalty,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        stop_token_ids=list(params.stop_token_ids),
        context_shift=params.context_shift,
        n_keep=1,
        logprobs=logprobs is not None,
        top_logprobs=logprobs or 0,
    )


def _real(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """``value`` as a finite float in [low, high] (or (low, high]); bools and strings
    are TypeErrors, as for every numeric option."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    x = float(value)
    too_low = low is not None and (x <= low if low_open else x < low)
    if not math.isfinite(x) or too_low or (high is not None and x > high):
        if high is None:
            bounds = f"{'>' if low_open else '>='} {low}"
        else:
            bounds = f"in [{low}, {high}]"
        raise ValueError(f"{name} must be a finite number {bounds}, got {value!r}")
    return x


def _integer(name: str, value: object, low: int, high: int, note: str = "") -> int:
    """``value`` as an int in [low, high]; bools and floats are TypeErrors."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not low <= value <= high:
        hint = f" ({note})" if note else ""
        raise ValueError(f"{name} must be in [{low}, {high}]{hint}, got {value}")
    return int(value)


def _flag(name: str, value: object) -> bool:
    numpy = sys.modules.get("numpy")  # a numpy.bool_ exists only once NumPy is loaded
    if not (isinstance(value, bool) or (numpy is not None and isinstance(value, numpy.bool_))):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _sequence(name: str, value: object) -> Sequence[object]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of ints, got {value!r}")
    return value


def _stop_strings(stop: object) -> tuple[str, ...]:
    """``stop`` as a tuple of non-empty strings (None: none)."""
    if stop is None:
        return ()
    strings = (stop,) if isinstance(stop, str) else stop
    if not isinstance(strings, Sequence) or not all(isinstance(s, str) for s in strings):
        raise TypeError(f"stop must be a str, a list of str or None, got {stop!r}")
    if any(not s for s in strings):
        raise ValueError("stop strings must not be empty")
    return tuple(strings)


def clock_seed() -> int:
    """A seed from the clock, never 0 (the xorshift fixed point)."""
    return (time.time_ns() & MAX_SEED) or 1


F = TypeVar("F", bound=Callable[..., Any])


def sampling_signature(func: F) -> F:
    """Gives ``func(..., **options)`` the signature it accepts: its ``**options``
    replaced by one keyword-only parameter per :class:`SamplingParams` field, with the
    field's default (what ``help()`` and ``inspect.signature`` report)."""
    signature = inspect.signature(func)
    params = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    params += [
        inspect.Parameter(
            field.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=field.default,
            annotation=field.type,
        )
        for field in dataclasses.fields(SamplingParams)
        if field.name not in signature.parameters
    ]
    func.__signature__ = signature.replace(parameters=params)
    return func
