"""Generation with the C engine: :class:`Generator`, :class:`Tokenizer`, :class:`SamplingParams`."""

from .generation import BatchGeneration, Completion, Generation, TokenLogprob
from .generator import Generator, GeneratorConfig, kernels
from .sampling import SamplingParams
from .tokenizer import Tokenizer

__all__ = [
    "BatchGeneration",
    "Completion",
    "Generation",
    "Generator",
    "GeneratorConfig",
    "SamplingParams",
    "TokenLogprob",
    "Tokenizer",
    "kernels",
]
