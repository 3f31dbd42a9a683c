"""Sentencepiece vocabularies without the sentencepiece library: :class:`Vocab` (pieces,
scores and piece types, as sentencepiece, GGUF and Hugging Face spell them), conversion
from and to llama2.c's ``tokenizer.bin`` pieces, and ``.model`` files (a protobuf
``ModelProto``) read and written by hand.

llama2.c's ``tokenizer.py`` writes a sentencepiece vocabulary to ``tokenizer.bin`` with
``▁`` as a plain space and BOS/EOS as ``"\\n<s>\\n"`` / ``"\\n</s>\\n"``; :meth:`Vocab.from_llama2c`
and :meth:`Vocab.llama2c_pieces` undo and redo exactly that, so a ``tokenizer.bin`` written
by it comes back byte for byte.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._core import FormatError
from .constants import BOS, EOS, UNK

SPACE = "\u2581"  # sentencepiece's visible space
# sentencepiece's piece types (ModelProto.SentencePiece.Type; GGUF's token types are the same)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
TYPE_NAMES = {1: "normal", 2: "unknown", 3: "control", 4: "user-defined", 5: "unused", 6: "byte"}
BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")
# what llama2.c's tokenizer.py writes for BOS and EOS
LLAMA2C_BOS, LLAMA2C_EOS = b"\n<s>\n", b"\n</s>\n"
BPE = 2  # TrainerSpec.ModelType


@dataclass
class Vocab:
    """A sentencepiece BPE vocabulary: piece ``i`` is ``pieces[i]`` (``▁`` for a space)."""

    pieces: list[str]
    scores: list[float]
    types: list[int]
    unk_id: int = UNK
    bos_id: int = BOS
    eos_id: int = EOS

    def __post_init__(self) -> None:
        n = len(self.pieces)
        if len(self.scores) != n or len(self.types) != n:
            raise ValueError(f"{n} pieces, {len(self.scores)} scores, {len(self.types)} types")
        for name in ("unk_id", "bos_id", "eos_id"):
            if not 0 <= getattr(self, name) < n:
                raise ValueError(f"{name} {getattr(self, name)} is outside the {n} pieces")

    def __len__(self) -> int:
        return len(self.pieces)

    @property
    def byte_fallback(self) -> bool:
        """Whether all 256 ``<0xXX>`` byte pieces are there (as byte pieces)."""
        found = {p for p, t in zip(self.pieces, self.types, strict=True) if t == BYTE}
        return all(f"<0x{b:02X}>" in found for b in range(256))

    # ------------------------------------------------------------ tokenizer.bin

    @classmethod
    def from_llama2c(
        cls, pieces: Sequence[bytes], scores: Sequence[float], path: str | Path = "tokenizer"
    ) -> Vocab:
        """The vocabulary of a ``tokenizer.bin`` (as read by ``tokenizer_bin.read_tokenizer``).

        Raises ``ValueError`` for what the other formats cannot spell: a piece that is not
        UTF-8, or one holding a literal ``▁`` (it would come back as a space).
        """
        if len(pieces) <= max(UNK, BOS, EOS):
            raise FormatError(f"{path}: {len(pieces)} pieces, fewer than <unk>, BOS and EOS")
        texts, types = [], []
        for i, raw in enumerate(pieces):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{path}: piece {i} ({raw!r}) is not UTF-8") from None
            if SPACE in text:
                raise ValueError(
                    f"{path}: piece {i} ({text!r}) holds U+2581, which sentencepiece, GGUF "
                    "and Hugging Face use for a space"
                )
            if i == BOS and raw == LLAMA2C_BOS:
                text = "<s>"
            elif i == EOS and raw == LLAMA2C_EOS:
                text = "</s>"
            else:
                text = text.replace(" ", SPACE)
            if i == UNK:
                kind = UNKNOWN
            elif i in (BOS, EOS):
                kind = CONTROL
            elif BYTE_PIECE.fullmatch(text):
                kind = BYTE
            else:
                kind = NORMAL
            texts.append(text)
            types.append(kind)
        return cls(texts, [float(s) for s in scores], types)

    def llama2c_pieces(self) -> list[bytes]:
        """The pieces as llama2.c's ``tokenizer.py`` writes them to ``tokenizer.bin``."""
        if (self.unk_id, self.bos_id, self.eos_id) != (UNK, BOS, EOS):
            raise ValueError(
                f"llama2.c needs <unk>, BOS and EOS at ids {UNK}, {BOS}, {EOS}; this vocabulary "
                f"has them at {self.unk_id}, {self.bos_id}, {self.eos_id}"
            )
        out = []
        for i, piece in enumerate(self.pieces):
            if i == self.bos_id:
                out.append(LLAMA2C_BOS)
            elif i == self.eos_id:
                out.append(LLAMA2C_EOS)
            else:
                out.append(piece.replace(SPACE, " ").encode("utf-8"))
        return out

    # ------------------------------------------------------------- .model files

    def to_model_proto(self) -> bytes:
        """A sentencepiece ``.model`` (BPE) holding these pieces, scores and types.

        Its normalizer is the identity with the dummy-prefix space and without removing
        repeated spaces: how llama2.c's ``encode`` treats text.
        """
        out = bytearray()
        for piece, score, kind in zip(self.pieces, self.scores, self.types, strict=True):
            entry = _string(1, piece) + _fixed32(2, score) + _varint_field(3, kind)
            out += _bytes_field(1, entry)
        trainer = _varint_field(3, BPE) + _varint_field(4, len(self.pieces))
        trainer += _varint_field(35, int(self.byte_fallback))
        for number, value in ((40, self.unk_id), (41, self.bos_id), (42, self.eos_id), (43, -1)):
            trainer += _varint_field(number, value)
        out += _bytes_field(2, trainer)
        normalizer = _string(1, "identity") + _varint_field(3, 1) + _varint_field(4, 0)
        normalizer += _varint_field(5, 1)
        out += _bytes_field(3, normalizer)
        return bytes(out)

    @classmethod
    def from_model_proto(cls, data: bytes, path: str | Path = "tokenizer.model") -> Vocab:
        """The vocabulary of a sentencepiece ``.model`` file's bytes.

        Raises :class:`~tinystories.FormatError` for bytes that are not one, and
        ``ValueError`` for a model other than BPE (llama2.c merges by score, as BPE does).
        """
        pieces: list[str] = []
        scores: list[float] = []
        types: list[int] = []
        ids = {40: UNK, 41: BOS, 42: EOS}
        model_type = 1  # sentencepiece's default: unigram
        try:
            for number, value in _fields(data):
                if number == 1:
                    piece, score, kind = "", 0.0, NORMAL
                    for n, v in _fields(_need(value, bytes)):
                        if n == 1:
                            piece = _need(v, bytes).decode("utf-8")
                        elif n == 2:
                            score = _need(v, float)
                        elif n == 3:
                            kind = _need(v, int)
                    pieces.append(piece)
                    scores.append(score)
                    types.append(kind)
                elif number == 2:
                    for n, v in _fields(_need(value, bytes)):
                        if n == 3:
                            model_type = _need(v, int)
                        elif n in ids:
                            ids[n] = _signed32(_need(v, int))
        except (ValueError, UnicodeDecodeError) as err:
            raise FormatError(f"{path}: not a sentencepiece model ({err})") from None
        if not pieces:
            raise FormatError(f"{path}: not a sentencepiece model (no pieces)")
        if model_type != BPE:
            kind = {1: "unigram", 3: "word", 4: "char"}.get(model_type, str(model_type))
            raise ValueError(
                f"{path}: a sentencepiece {kind} model; llama2.c tokenizers are BPE "
                "(trainer_spec.model_type)"
            )
        unknown = [t for t in types if t not in TYPE_NAMES]
        if unknown:
            raise FormatError(f"{path}: piece type {unknown[0]} is not a sentencepiece type")
        try:
            return cls(pieces, scores, types, unk_id=ids[40], bos_id=ids[41], eos_id=ids[42])
        except ValueError as err:
            raise FormatError(f"{path}: {err}") from None


def read_vocab(path: str | Path) -> Vocab:
    """A ``tokenizer.bin`` or a sentencepiece ``.model`` file, told apart by content."""
    path = Path(path)
    data = path.read_bytes()
    if is_model_proto(data):
        return Vocab.from_model_proto(data, path)
    pieces, scores = read_tokenizer_checked(path, data)
    return Vocab.from_llama2c(pieces, scores, path)


def is_model_proto(data: bytes) -> bool:
    """Whether ``data`` starts like a sentencepiece model: a piece entry (field 1, bytes)
    whose first field is a piece string. A ``tokenizer.bin`` starts with its int32 max
    piece length, whose first byte 0x0A would be a length of 10 followed by a score."""
    if len(data) < 4 or data[0] != 0x0A:
        return False
    try:
        length, at = _read_varint(data, 1)
        first = data[at] if at < len(data) else -1
        return 0 < length <= len(data) - at and first == 0x0A
    except ValueError:
        return False


def read_tokenizer_checked(path: Path, data: bytes) -> tuple[list[bytes], list[float]]:
    """``tokenizer.bin``'s pieces and scores, refusing what the engine's loader refuses."""
    if len(data) < 4:
        raise FormatError(f"{path}: file is {len(data)} bytes, too short for a tokenizer")
    offset, pieces, scores = 4, [], []
    while offset < len(data):
        if offset + 8 > len(data):
            raise FormatError(f"{path}: partial entry at byte {offset} (entry {len(pieces)})")
        score, length = struct.unpack_from("<fi", data, offset)
        offset += 8
        if length < 0 or offset + length > len(data):
            raise FormatError(f"{path}: entry {len(pieces)} has length {length} past the end")
        pieces.append(data[offset : offset + length])
        scores.append(score)
        offset += length
    return pieces, scores


# ------------------------------------------------------------------ protobuf


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise ValueError("a varint runs past the end")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
        if shift >= 70:
            raise ValueError("a varint longer than 10 bytes")


def _fields(data: bytes):
    """(field number, value) of each field of a protobuf message: int for varints, float
    for 32-bit fields (sentencepiece's only ones are floats), bytes for the rest."""
    at = 0
    while at < len(data):
        key, at = _read_varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _read_varint(data, at)
        elif wire == 1:
            if at + 8 > len(data):
                raise ValueError("a 64-bit field runs past the end")
            value, at = data[at : at + 8], at + 8
        elif wire == 2:
            length, at = _read_varint(data, at)
            if at + length > len(data):
                raise ValueError(f"field {number} runs past the end")
            value, at = data[at : at + length], at + length
        elif wire == 5:
            if at + 4 > len(data):
                raise ValueError("a 32-bit field runs past the end")
            (value,), at = struct.unpack_from("<f", data, at), at + 4
        else:
            raise ValueError(f"wire type {wire} at field {number}")
        if number == 0:
            raise ValueError("field number 0")
        yield number, value


def _need(value, kind):
    if not isinstance(value, kind):
        raise ValueError(f"a field has the wrong wire type ({type(value).__name__})")
    return value


def _signed32(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32s are sign-extended to 64 bits
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _fixed32(number: int, value: float) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<f", value)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _string(number: int, value: str) -> bytes:
    return _bytes_field(number, value.encode("utf-8"))
