"""Deprecated: :mod:`tinystories.hub` (``registry`` and ``cache``)."""

from ._deprecated import moved

moved(__name__, "tinystories.hub.registry and tinystories.hub.cache")

from .hub.cache import (  # noqa: E402
    PretrainedError,
    cache_root,
    default_model,
    fetch,
    fetch_file,
    fetch_model,
    lookup,
)
from .hub.registry import DEFAULT_NAME, REGISTRY, Pretrained, RemoteFile  # noqa: E402

__all__ = [
    "DEFAULT_NAME",
    "REGISTRY",
    "Pretrained",
    "PretrainedError",
    "RemoteFile",
    "cache_root",
    "default_model",
    "fetch",
    "fetch_file",
    "fetch_model",
    "lookup",
]
