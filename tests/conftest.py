"""Shared fixtures: the ../shared data, small random models written by the tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.files import RANDOM_CONFIGS, REPO, synthetic_vocab
from tinystories.formats.llama2c import random_weights, write_model
from tinystories.formats.tokenizer_bin import write_tokenizer


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
