"""The vocabulary: a sentencepiece BPE model trained as llama2.c does, and its tokenizer.bin.

Needs sentencepiece (the ``train`` extra); torch is not involved.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..formats.constants import N_BYTE_TOKENS, N_SPECIAL
from ..formats.tokenizer_bin import sentencepiece_pieces, write_tokenizer
from .config import ConfigError


def vocab_paths(data_dir: str | Path, vocab_size: int) -> tuple[Path, Path]:
    """``(tokN.model, tokN.bin)`` in ``data_dir``."""
    data_dir = Path(data_dir)
    return data_dir / f"tok{vocab_size}.model", data_dir / f"tok{vocab_size}.bin"


def corpus_characters(docs: Iterable[str]) -> set[str]:
    chars: set[str] = set()
    for doc in docs:
        chars.update(doc)
    chars.discard("\n")  # sentencepiece trains on lines
    chars.discard("\r")
    return chars


def train_vocab(
    docs: Sequence[str],
    vocab_size: int,
    data_dir: str | Path,
    *,
    byte_fallback: bool | None = None,
    num_threads: int | None = None,
) -> tuple[Path, Path]:
    """Trains a sentencepiece BPE vocabulary of ``vocab_size`` pieces on ``docs``.

    The settings are llama2.c's (``tinystories.py train_vocab``): BPE, every
    character covered, digits split, identity normalization. ``byte_fallback``
    (None = automatic) adds the 256 ``<0xXX>`` byte pieces, which needs a
    vocabulary of at least 259 + the number of characters; small vocabularies
    such as tok105 go without, so unseen characters encode as ``<unk>``.
    Writes and returns ``(tokN.model, tokN.bin)``.
    """
    import sentencepiece as spm

    chars = corpus_characters(docs)
    needed = N_SPECIAL + len(chars)
    if byte_fallback is None:
        byte_fallback = vocab_size >= needed + N_BYTE_TOKENS
    if byte_fallback:
        needed += N_BYTE_TOKENS
    if vocab_size < needed:
        extra = " plus 256 byte pieces" if byte_fallback else ""
        raise ConfigError(
            f"vocab size {vocab_size} is too small for this corpus: its {len(chars)} distinct "
            f"characters, <unk>, <s> and </s>{extra} need at least {needed} pieces"
        )
    model_path, bin_path = vocab_paths(data_dir, vocab_size)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_path.parent) as tmp:
        text_file = Path(tmp) / "vocab_corpus.txt"
        with open(text_file, "w", encoding="utf-8") as out:
            for doc in docs:
                out.write(doc + "\n")
        trainer_options = dict(
            input=str(text_file),
            model_prefix=str(Path(tmp) / "tok"),
            model_type="bpe",
            vocab_size=vocab_size,
            input_format="text",
            character_coverage=1.0,
            num_threads=num_threads or os.cpu_count() or 1,
            split_digits=True,
            allow_whitespace_only_pieces=True,
            byte_fallback=byte_fallback,
            unk_surface=r" \342\201\207 ",
            normalization_rule_name="identity",
            minloglevel=2,
        )
        try:
            spm.SentencePieceTrainer.train(**trainer_options)
        except RuntimeError as err:
            # sentencepiece: "Vocabulary size too high (N). Please set it to a value <= M."
            most = re.search(r"Vocabulary size too high.*<= (\d+)", str(err))
            if most is None:
                raise
            raise ConfigError(
                f"vocab size {vocab_size} is too large for this corpus: sentencepiece can make "
                f"at most {int(most.group(1)):,} pieces from it (add stories, or ask for fewer)"
            ) from None
        shutil.move(str(Path(tmp) / "tok.model"), model_path)
    pieces, scores = sentencepiece_pieces(model_path)
    write_tokenizer(bin_path, pieces, scores)
    return model_path, bin_path
