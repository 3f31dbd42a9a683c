"""Shared fixtures: the ../shared data, small random models written by the tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from tinystories.model_file import ModelConfig, random_weights, write_model
from tinystories.tokenizer_file import write_tokenizer

REPO = Path(__file__).resolve().parent.parent


def _shared_root() -> Path:
    return Path(os.environ.get("TINYSTORIES_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout; skips when absent unless CI requires it."""
    root = _shared_root()
    if not (root / "models" / "tok105").is_dir():
        reason = f"shared data not found at {root} (set TINYSTORIES_SHARED)"
        if os.environ.get("TINYSTORIES_REQUIRE_SHARED") == "1":
            pytest.fail(reason + " and TINYSTORIES_REQUIRE_SHARED=1")
        pytest.skip(reason)
    return root


@pytest.fixture(scope="session")
def tok105(shared_dir: Path) -> dict[str, Path]:
    base = shared_dir / "models" / "tok105"
    return {
        "model": base / "model5000.bin",
        "model_q80": base / "model5000_q80.bin",
        "tokenizer": base / "tok105.bin",
        "sentencepiece": base / "tok105.model",
    }


@pytest.fixture(scope="session")
def golden(shared_dir: Path) -> list[dict]:
    return json.loads((shared_dir / "golden" / "tok105_llama2c.json").read_text())


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


@pytest.fixture(scope="session")
def random_model_files(tmp_path_factory: pytest.TempPathFactory):
    """Writes every RANDOM_CONFIGS model in v0, v1 and v2 with a matching tokenizer.

    Returns ``{(name, version): (model_path, tokenizer_path, config, weights)}``.
    """
    root = tmp_path_factory.mktemp("random_models")
    files = {}
    for index, (name, config) in enumerate(RANDOM_CONFIGS.items()):
        weights = random_weights(config, seed=index)
        pieces, scores = synthetic_vocab(config.vocab_size, seed=index)
        tokenizer = write_tokenizer(root / f"{name}.tok.bin", pieces, scores)
        for version in (0, 1, 2):
            path = write_model(
                root / f"{name}.v{version}.bin", config, weights, version=version, group_size=8
            )
            files[(name, version)] = (path, tokenizer, config, weights)
    return files
