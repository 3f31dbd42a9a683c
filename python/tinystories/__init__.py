"""tinystories: llama2.c-compatible inference (C core) and training for small story models.

>>> from tinystories import Generator
>>> Generator("model.bin", "tok105.bin").generate("Once upon a time")  # doctest: +SKIP
"""

from ._core import FormatError
from .generator import Generator, GeneratorConfig, Tokenizer, kernels

__all__ = ["FormatError", "Generator", "GeneratorConfig", "Tokenizer", "__version__", "kernels"]
__version__ = "0.1.0"
