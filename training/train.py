"""Deprecated: :mod:`tinystories.training.loop` (and ``.config``, ``.corpus``)."""

from .._deprecated import moved

moved(__name__, "tinystories.training.loop")

from .config import TrainConfig, TrainResult  # noqa: E402
from .corpus import prepare_data  # noqa: E402
from .loop import (  # noqa: E402
    CPU_COMPILE_MIN_ITERS,
    cpu_has_bf16_matmul,
    learning_rate,
    make_optimizer,
    pick_device,
    pick_dtype,
    should_compile,
    train,
)
from .shards import Prefetcher  # noqa: E402

__all__ = [
    "CPU_COMPILE_MIN_ITERS",
    "Prefetcher",
    "TrainConfig",
    "TrainResult",
    "cpu_has_bf16_matmul",
    "learning_rate",
    "make_optimizer",
    "pick_device",
    "pick_dtype",
    "prepare_data",
    "should_compile",
    "train",
]
