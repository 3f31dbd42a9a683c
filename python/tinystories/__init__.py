"""tinystories: llama2.c-compatible inference (C core) and training for small story models.

>>> from tinystories import Generator
>>> Generator("model.bin", "tok105.bin").generate("Once upon a time")  # doctest: +SKIP
"""

# The one place the version is written; pyproject.toml reads it from here.
__version__ = "0.1.0"

from ._core import FormatError  # noqa: E402
from .formats.convert import convert  # noqa: E402
from .hub.cache import PretrainedError, UnknownModelError  # noqa: E402
from .inference import Generator, GeneratorConfig, SamplingParams, Tokenizer, kernels  # noqa: E402

__all__ = [
    "FormatError",
    "convert",
    "Generator",
    "GeneratorConfig",
    "PretrainedError",
    "SamplingParams",
    "Tokenizer",
    "UnknownModelError",
    "__version__",
    "kernels",
]
