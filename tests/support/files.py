"""Test inputs written by the tests themselves: llama2.c-shaped vocabularies, small
random model configurations, and where the checkout is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tinystories.formats.llama2c import ModelConfig

REPO = Path(__file__).resolve().parents[2]


def synthetic_vocab(
    size: int, seed: int = 0, byte_tokens: bool = False
) -> tuple[list[bytes], list[float]]:
    """A vocabulary shaped like llama2.c's: specials, optional <0xXX> bytes, characters, merges."""
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"]
    if byte_tokens:
        pieces += [f"<0x{b:02X}>".encode() for b in range(256)]
    chars = [b" "] + [bytes([c]) for c in b"etaoinshrdlucmwfgypbvkTSLO.,!?'\"\n"]
    chars += ["é".encode(), "“".encode()]
    pieces += [c for c in chars if c not in pieces]
    rng = np.random.default_rng(seed)
    while len(pieces) < size:
        a, b = pieces[3 + rng.integers(len(pieces) - 3)], pieces[3 + rng.integers(len(pieces) - 3)]
        if a.startswith(b"<0x") or b.startswith(b"<0x"):
            continue
        if a + b not in pieces and len(a + b) <= 8:
            pieces.append(a + b)
    pieces = pieces[:size]
    scores = [0.0, 0.0, 0.0] + [-float(i) for i in range(len(pieces) - 3)]
    return pieces, scores


RANDOM_CONFIGS = {
    # odd sizes: dim not a multiple of 16, multi-query attention, unshared classifier
    "mqa_unshared": ModelConfig(
        dim=24,
        hidden_dim=40,
        n_layers=2,
        n_heads=3,
        n_kv_heads=1,
        vocab_size=64,
        seq_len=32,
        shared_classifier=False,
    ),
    "gqa_shared": ModelConfig(
        dim=48,
        hidden_dim=72,
        n_layers=3,
        n_heads=6,
        n_kv_heads=2,
        vocab_size=80,
        seq_len=40,
        shared_classifier=True,
    ),
    "mha": ModelConfig(
        dim=32,
        hidden_dim=64,
        n_layers=1,
        n_heads=4,
        n_kv_heads=4,
        vocab_size=50,
        seq_len=16,
        shared_classifier=True,
    ),
}
