"""llama2.c ``tokenizer.bin`` files written and read with the standard library.

Layout: int32 ``max_token_length``, then for each vocabulary entry a float32
score, an int32 byte length and the piece's bytes. The vocabulary size is not
stored; readers take entries up to the end of the file.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path


def write_tokenizer(path: str | Path, pieces: Sequence[bytes], scores: Sequence[float]) -> Path:
    """Writes ``pieces`` (raw bytes, ``' '`` for sentencepiece's ``▁``) with their scores."""
    if len(pieces) != len(scores):
        raise ValueError(f"{len(pieces)} pieces but {len(scores)} scores")
    if not pieces:
        raise ValueError("a tokenizer needs at least one piece")
    path = Path(path)
    with open(path, "wb") as out:
        out.write(struct.pack("<i", max(len(p) for p in pieces)))
        for piece, score in zip(pieces, scores, strict=True):
            out.write(struct.pack("<fi", score, len(piece)))
            out.write(piece)
    return path


def read_tokenizer(path: str | Path) -> tuple[list[bytes], list[float]]:
    """Reads a tokenizer.bin into ``(pieces, scores)``."""
    data = Path(path).read_bytes()
    offset = 4
    pieces: list[bytes] = []
    scores: list[float] = []
    while offset < len(data):
        score, length = struct.unpack_from("<fi", data, offset)
        offset += 8
        pieces.append(data[offset : offset + length])
        scores.append(score)
        offset += length
    return pieces, scores


def sentencepiece_pieces(model_path: str | Path) -> tuple[list[bytes], list[float]]:
    """The pieces and scores of a sentencepiece model as llama2.c's tokenizer.py exports them."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
    pieces, scores = [], []
    for i in range(sp.vocab_size()):
        piece = sp.id_to_piece(i)
        if i == sp.bos_id():
            piece = "\n<s>\n"
        elif i == sp.eos_id():
            piece = "\n</s>\n"
        pieces.append(piece.replace("\u2581", " ").encode("utf-8"))
        scores.append(sp.get_score(i))
    return pieces, scores
