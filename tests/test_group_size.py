"""One Q8_0 group-size rule: the v2 writer's default and quantizing on load agree."""

from __future__ import annotations

import numpy as np
import pytest
from support.files import synthetic_vocab
from tinystories import Generator, _core
from tinystories.formats.llama2c import ModelConfig, default_group_size, random_weights, write_model
from tinystories.formats.tokenizer_bin import write_tokenizer


@pytest.mark.parametrize(
    ("dim", "expected"), [(128, 64), (288, 32), (768, 64), (48, 16), (100, 4), (6, 2), (7, 1)]
)
def test_the_rule_is_export_py_s(dim, expected):
    """The largest power of two up to 64 dividing dim (llama2.c export.py's loop)."""
    assert _core.default_group_size(dim) == expected
    assert default_group_size(ModelConfig(dim, 8, 1, 1, 1, 8, 8)) == expected


def test_writer_and_quantize_on_load_pick_the_same_groups(tmp_path):
    """A v2 file written with the default group size holds exactly what quantizing its
    fp32 file on load computes, also when the group size does not divide hidden_dim
    (w2's groups then run across rows, as runq's do)."""
    config = ModelConfig(dim=48, hidden_dim=40, n_layers=2, n_heads=4, n_kv_heads=2,
                         vocab_size=64, seq_len=32)  # fmt: skip
    assert config.hidden_dim % default_group_size(config) != 0
    weights = random_weights(config, seed=3)
    fp32 = write_model(tmp_path / "m.bin", config, weights, version=0)
    v2 = write_model(tmp_path / "m_q80.bin", config, weights, version=2)
    tokenizer = write_tokenizer(tmp_path / "tok.bin", *synthetic_vocab(config.vocab_size))
    on_load = Generator(fp32, tokenizer, quantize="q8_0")
    from_file = Generator(v2, tokenizer)
    assert from_file.config.group_size == default_group_size(config) == 16
    ids = [1] + list(range(3, 30))
    np.testing.assert_array_equal(on_load.logits(ids), from_file.logits(ids))


def test_the_trainers_v2_files_keep_every_weight(tmp_path, tok105):
    """The tok105 shape (dim 128, hidden 352): export.py's rule gives 64, which leaves w2's
    last 32 inputs out of runq's products (as the seed's model5000_q80.bin has it); the
    trainer's export picks 32, and its Q8_0 logits stay near the fp32 file's."""
    pytest.importorskip("torch")
    from tinystories.formats.llama2c import full_group_size, parse_header, read_model
    from tinystories.training.checkpoint import export_model
    from tinystories.training.model import from_numpy_weights

    config, _, weights = read_model(tok105["model"])
    assert (default_group_size(config), full_group_size(config)) == (64, 32)
    q80, _ = export_model(from_numpy_weights(config, weights), tmp_path / "model.bin", fmt="v2")
    assert parse_header(q80.read_bytes()[:256])[2] == 32
    ids = Generator(tok105["model"], tok105["tokenizer"]).encode(
        "Once upon a time, there was a little girl named Lily. She loved to play outside."
    )

    def loss(path) -> float:
        logits = np.asarray(Generator(path, tok105["tokenizer"]).logits(ids[:-1]), np.float64)
        top = logits.max(-1, keepdims=True)
        lse = np.log(np.exp(logits - top).sum(-1)) + top[:, 0]
        return float((lse - logits[np.arange(len(ids) - 1), ids[1:]]).mean())

    exact, kept, dropped = loss(tok105["model"]), loss(q80), loss(tok105["model_q80"])
    assert abs(kept - exact) < 0.02 < dropped - exact
