"""Deprecated: :mod:`tinystories.formats.tokenizer_bin`."""

from ._deprecated import moved

moved(__name__, "tinystories.formats.tokenizer_bin")

from .formats.tokenizer_bin import read_tokenizer, sentencepiece_pieces, write_tokenizer  # noqa: E402

__all__ = ["read_tokenizer", "sentencepiece_pieces", "write_tokenizer"]
