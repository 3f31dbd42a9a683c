"""Deprecated: :mod:`tinystories.inference` (``from tinystories import Generator`` is unchanged)."""

from ._deprecated import moved

moved(__name__, "tinystories.inference")

from .formats.constants import BOS, EOS, QUANTIZE_OPTIONS  # noqa: E402
from .inference import Generator, GeneratorConfig, SamplingParams, Tokenizer, kernels  # noqa: E402


def check_sampling(
    temperature: float, top_p: float, top_k: int, seed: int | None
) -> tuple[float, float, int, int]:
    """Validates sampling arguments; returns them normalised (seed chosen if None)."""
    params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
    params = params.with_seed()
    return params.temperature, params.top_p, params.top_k, params.seed


__all__ = [
    "BOS",
    "EOS",
    "QUANTIZE_OPTIONS",
    "Generator",
    "GeneratorConfig",
    "Tokenizer",
    "check_sampling",
    "kernels",
]
