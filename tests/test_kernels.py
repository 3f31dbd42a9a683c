"""Every kernel set this CPU runs against the scalar reference set.

fp32 models: logits within 1e-4 (SIMD sets fuse multiply-adds and sum in a
different order). Q8_0 models: bit-identical (exact integer dot products and
an exact quantizer; the element-wise steps round like the reference).
Evaluating tokens as a batch (prefill) gives each kernel set the same logits
as evaluating them one by one: the kernels are batch-invariant.
"""

from __future__ import annotations

import numpy as np
import pytest
import tinystories
from support.files import RANDOM_CONFIGS
from tinystories import Generator, _core

KERNEL_SETS = tinystories.kernels()
SIMD_SETS = [k for k in KERNEL_SETS if k != "scalar"]


def test_kernel_sets_listed():
    assert KERNEL_SETS[-1] == "scalar"
    assert len(set(KERNEL_SETS)) == len(KERNEL_SETS)
    assert set(KERNEL_SETS) <= {"scalar", "avx2", "avx512", "neon"}


def test_default_is_the_fastest_or_the_environment(tok105, monkeypatch):
    monkeypatch.delenv("TINYSTORIES_KERNELS", raising=False)
    assert _core.Model(str(tok105["model"])).kernels == KERNEL_SETS[0]
    monkeypatch.setenv("TINYSTORIES_KERNELS", "scalar")
    assert _core.Model(str(tok105["model"])).kernels == "scalar"
    assert Generator(tok105["model"], tok105["tokenizer"], kernels="scalar").kernels == "scalar"


def test_unknown_kernel_set(tok105):
    with pytest.raises(ValueError, match="unknown kernel set"):
        Generator(tok105["model"], tok105["tokenizer"], kernels="sse9")
    with pytest.raises(TypeError):
        Generator(tok105["model"], tok105["tokenizer"], kernels=3)


def ids_for(vocab_size: int, n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [1] + rng.integers(0, vocab_size, n - 1).tolist()


@pytest.mark.parametrize("kernels", SIMD_SETS)
@pytest.mark.parametrize("version", [0, 2])
@pytest.mark.parametrize("name", sorted(RANDOM_CONFIGS))
def test_random_models_match_scalar(random_model_files, name, version, kernels):
    path, tokenizer, config, _ = random_model_files[(name, version)]
    ids = ids_for(config.vocab_size, config.seq_len, 7)
    want = Generator(path, tokenizer, kernels="scalar").logits(ids)
    got = Generator(path, tokenizer, kernels=kernels).logits(ids)
    if version == 2:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kernels", SIMD_SETS)
@pytest.mark.parametrize("key", ["model", "model_q80"])
def test_tok105_matches_scalar(tok105, key, kernels):
    ids = ids_for(105, 256, 3)
    want = Generator(tok105[key], tok105["tokenizer"], kernels="scalar").logits(ids)
    got = Generator(tok105[key], tok105["tokenizer"], kernels=kernels).logits(ids)
    if key == "model_q80":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kernels", KERNEL_SETS)
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("key", ["model", "model_q80"])
def test_prefill_equals_token_by_token(tok105, key, kernels, threads):
    """ts_session_eval of many tokens (blocks, matrix-matrix, threads) vs one at a time."""
    generator = Generator(tok105[key], tok105["tokenizer"], kernels=kernels, n_threads=threads)
    ids = ids_for(105, 150, 11)  # more than one prefill block
    batched = generator.logits(ids)
    session = _core.Session(generator._model, threads)
    one_by_one = np.stack(
        [session.eval(np.array([t], dtype=np.int32), pos, True)[0] for pos, t in enumerate(ids)]
    )
    np.testing.assert_allclose(batched, one_by_one, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(batched, one_by_one)  # batch invariance: even bit-exact


@pytest.mark.parametrize("kernels", KERNEL_SETS)
@pytest.mark.parametrize("key", ["model", "model_q80"])
def test_decode_is_thread_count_invariant(tok105, key, kernels):
    """With two threads or more, decode splits a token's matmuls by rows between them
    when the weights outgrow one core's L2 (model5000.bin); a row's dot product must
    not change."""
    model = Generator(tok105[key], tok105["tokenizer"], kernels=kernels)._model
    ids = ids_for(105, 96, 13)

    def decode(threads: int) -> np.ndarray:
        session = _core.Session(model, threads)
        return np.stack(
            [session.eval(np.array([t], dtype=np.int32), pos, True)[0] for pos, t in enumerate(ids)]
        )

    want = decode(1)
    for threads in (2, 3, 0):
        np.testing.assert_array_equal(decode(threads), want)


@pytest.mark.parametrize("kernels", KERNEL_SETS)
def test_quantize_on_load_is_the_v2_export(tok105, kernels):
    """quantize="q8_0" on the fp32 file equals the v2 file export.py wrote from it."""
    ids = ids_for(105, 64, 5)
    quantized = Generator(tok105["model"], tok105["tokenizer"], quantize="q8_0", kernels=kernels)
    v2 = Generator(tok105["model_q80"], tok105["tokenizer"], kernels=kernels)
    np.testing.assert_array_equal(quantized.logits(ids), v2.logits(ids))


def test_quantize_argument(tok105, random_model_files):
    with pytest.raises(ValueError, match="quantize"):
        Generator(tok105["model"], tok105["tokenizer"], quantize="q4")
    # a v2 file is Q8_0 already: quantize is a no-op
    path, tokenizer, config, _ = random_model_files[("mha", 2)]
    ids = ids_for(config.vocab_size, 8, 1)
    np.testing.assert_array_equal(
        Generator(path, tokenizer, quantize="q8_0").logits(ids),
        Generator(path, tokenizer).logits(ids),
    )
