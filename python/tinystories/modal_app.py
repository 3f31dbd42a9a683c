"""Deprecated: :mod:`tinystories.modal` (``app``, ``image``, ``jobs``, ``plan``, ``settings``,
``volume``)."""

from ._deprecated import moved

moved(__name__, "tinystories.modal")
