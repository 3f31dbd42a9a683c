"""How a generation samples: one frozen, validated :class:`SamplingParams`.

Every generation entry point (``Generator.generate``, ``stream``, ``start``,
``generate_batch``, the CLI, Modal's ``sample``) takes these options as keyword
arguments and builds one ``SamplingParams`` from them, so an option is declared,
defaulted and checked here and nowhere else. :func:`sampling_signature` shows the
options in those methods' signatures (``help()``, ``inspect.signature``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class SamplingParams:
    """Sampling options, checked and normalised when constructed.

    >>> SamplingParams(temperature=0.8, seed=42)
    SamplingParams(max_new_tokens=None, temperature=0.8, top_p=0.9, top_k=0, seed=42)
    """

    # None: until BOS is sampled or the context ends (llama2.c's run -n <seq_len>).
    max_new_tokens: int | None = None
    # 0 is greedy.
    temperature: float = 1.0
    # Nucleus sampling threshold; 0 or 1 turns it off, as in run.c.
    top_p: float = 0.9
    # Keep the k most likely tokens; 0 turns it off.
    top_k: int = 0
    # In [1, 2**64 - 1] (0 is the xorshift generator's fixed point); None: from the clock.
    seed: int | None = None

    def __post_init__(self) -> None:
        try:
            temperature = float(self.temperature)
            top_p = float(self.top_p)
        except (TypeError, ValueError):
            raise TypeError("temperature and top_p must be numbers") from None
        if not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
        if not math.isfinite(top_p) or not 0.0 <= top_p <= 1.0:
            raise ValueError(f"top_p must be in [0, 1], got {top_p}")
        top_k = self.top_k
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
            raise TypeError(f"top_k must be an int, got {top_k!r}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {top_k}")
        seed = self.seed
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
                raise TypeError(f"seed must be an int or None, got {seed!r}")
            if not 1 <= seed <= MAX_SEED:
                raise ValueError(
                    f"seed must be in [1, 2**64 - 1] (0 is the RNG's fixed point), got {seed}"
                )
            seed = int(seed)
        max_new = self.max_new_tokens
        if max_new is not None:
            if isinstance(max_new, bool) or not isinstance(max_new, (int, np.integer)):
                raise TypeError(f"max_new_tokens must be an int or None, got {max_new!r}")
            if max_new < 0:
                raise ValueError(f"max_new_tokens must be >= 0, got {max_new}")
            max_new = int(max_new)
        for name, value in (
            ("temperature", temperature),
            ("top_p", top_p),
            ("top_k", int(top_k)),
            ("seed", seed),
            ("max_new_tokens", max_new),
        ):
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
