"""Deprecated: :mod:`tinystories.training.checkpoint`."""

from .._deprecated import moved

moved(__name__, "tinystories.training.checkpoint")

from ..formats.llama2c import VERSIONS as FORMATS  # noqa: E402
from .checkpoint import (  # noqa: E402
    export_checkpoint,
    export_model,
    load_checkpoint_model,
    read_checkpoint,
)

__all__ = [
    "FORMATS",
    "export_checkpoint",
    "export_model",
    "load_checkpoint_model",
    "read_checkpoint",
]
