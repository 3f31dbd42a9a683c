"""Deprecated: :mod:`tinystories.formats.llama2c`."""

from ._deprecated import moved

moved(__name__, "tinystories.formats.llama2c")

from .formats.llama2c import (  # noqa: E402
    HEADER_BYTES,
    LAYER_MATRICES,
    MAGIC,
    ModelConfig,
    QuantizedTensor,
    default_group_size,
    dequantize_q80,
    quantize_q80,
    random_weights,
    read_model,
    write_model,
)

__all__ = [
    "HEADER_BYTES",
    "LAYER_MATRICES",
    "MAGIC",
    "ModelConfig",
    "QuantizedTensor",
    "default_group_size",
    "dequantize_q80",
    "quantize_q80",
    "random_weights",
    "read_model",
    "write_model",
]
