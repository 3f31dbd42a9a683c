"""Generation with the C engine: :class:`Generator`, :class:`Tokenizer`, :class:`SamplingParams`."""

from .generator import BatchGeneration, Generation, Generator, GeneratorConfig, kernels
from .sampling import SamplingParams
from .tokenizer import Tokenizer

__all__ = [
    "BatchGeneration",
    "Generation",
    "Generator",
    "GeneratorConfig",
    "SamplingParams",
    "Tokenizer",
    "kernels",
]
