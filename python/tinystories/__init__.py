"""tinystories: llama2.c-compatible inference (C core) and training for small story models.

>>> from tinystories import Generator
>>> Generator("model.bin", "tok105.bin").generate("Once upon a time")  # doctest: +SKIP
"""

# The one place the version is written; pyproject.toml reads it from here.
__version__ = "0.1.0"

from typing import TYPE_CHECKING  # noqa: E402

from ._core import FormatError  # noqa: E402
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

if TYPE_CHECKING:
    from .formats.convert import convert


def __getattr__(name: str) -> object:
    # convert loads on first use: it needs NumPy, whose BLAS threads start with it and
    # spin for a while on the cores a fresh process's first generation wants.
    if name == "convert":
        from .formats.convert import convert

        return convert
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
