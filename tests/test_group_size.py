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
