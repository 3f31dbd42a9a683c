"""The public :class:`Tokenizer`: a llama2.c ``tokenizer.bin`` encoding exactly like run.c."""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence

from .. import _core
from ..formats.constants import BOS, EOS, N_SPECIAL, UNK

PathLike = str | os.PathLike


class Tokenizer:
    """A llama2.c ``tokenizer.bin`` vocabulary, encoding exactly like run.c."""

    unk_id: int = UNK
    bos_id: int = BOS
    eos_id: int = EOS

    def __init__(self, path: PathLike) -> None:
        self.path = os.fspath(path)
        try:
            self._native = _core.Tokenizer(self.path)
        except ValueError as error:  # FormatError
            if os.fsdecode(self.path).endswith(".model"):  # the usual mix-up: say what to pass
                error.args = (
                    f"{error}; a sentencepiece .model is not a llama2.c tokenizer: pass the "
                    "tokenizer.bin made from it (llama2.c's `python tokenizer.py -t FILE.model` "
                    "writes FILE.bin)",
                )
            raise

    @property
    def vocab_size(self) -> int:
        return self._native.vocab_size

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """Token ids of ``text``: BOS, the dummy-prefix space, characters, merges."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        return self._native.encode(text.encode("utf-8", "surrogatepass"), bos, eos)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, each piece as run.c prints it, with BOS and EOS left out.

        Generation differs for EOS: it stops at BOS, but a sampled EOS prints its piece
        (``"\\n</s>\\n"`` in llama2.c's vocabularies), as in run.c's output, so the
        text of a generation's ids lacks what ``generate`` printed for an EOS.
        """
        raw = self._native.decode(as_id_list(ids, self.vocab_size), [BOS, EOS])
        return raw.decode("utf-8", "replace")

    def piece(self, token: int) -> bytes:
        """The raw vocabulary entry of ``token``."""
        return self._native.token(token)

    def has_newline(self) -> bool:
        """Whether any ordinary piece (not <unk>, BOS, EOS) can print a newline."""
        return any(
            b"\n" in (piece := self.piece(i)) or piece == b"<0x0A>"
            for i in range(N_SPECIAL, self.vocab_size)
        )

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer({self.path!r}, vocab_size={self.vocab_size})"


def as_id_list(ids: Sequence[int], vocab_size: int) -> list[int]:
    """``ids`` as a list of ints, each checked against the vocabulary."""
    if isinstance(ids, (str, bytes)):
        raise TypeError("ids must be a sequence of ints, not text")
    try:
        items = list(ids)
    except TypeError:
        raise TypeError("ids must be a 1-D sequence of ints") from None
    for index, token in enumerate(items):
        if isinstance(token, bool) or not isinstance(token, numbers.Integral):
            raise TypeError("ids must be a 1-D sequence of ints")
        if not 0 <= token < vocab_size:
            raise ValueError(
                f"token id {token} at index {index} is outside the vocabulary of {vocab_size}"
            )
    return [int(token) for token in items]
