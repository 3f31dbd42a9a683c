"""The torch model is the C engine's model: the seed's tok105 checkpoint, and the eval figure."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tinystories import Generator  # noqa: E402
from tinystories.formats.corpus import load_documents  # noqa: E402
from tinystories.formats.llama2c import ModelConfig, random_weights, read_model  # noqa: E402
from tinystories.metrics import evaluate_stream, token_stream, windows  # noqa: E402
from tinystories.training.config import PRESETS, ModelArgs  # noqa: E402
from tinystories.training.evaluate import evaluate_torch  # noqa: E402
from tinystories.training.model import (  # noqa: E402
    from_numpy_weights,
    load_model_file,
    to_numpy_weights,
)


def test_tok105_preset_is_the_seed_model():
    args = PRESETS["tok105"]
    assert args.ffn_dim == 352  # SwiGLU rule: 2/3 * 4 * 128 rounded up to a multiple of 32
    assert args.file_config() == ModelConfig(128, 352, 5, 8, 4, 105, 256, True)
    assert ModelArgs(dim=288, n_heads=6, n_kv_heads=6).ffn_dim == 768  # llama2.c's 15M


@pytest.mark.parametrize("shared", [True, False])
def test_weights_round_trip(shared):
    config = ModelConfig(48, 72, 3, 6, 2, 80, 40, shared_classifier=shared)
    weights = random_weights(config, seed=1)
    back_config, back = to_numpy_weights(from_numpy_weights(config, weights))
    assert back_config == config
    assert back.keys() == weights.keys()
    for name in weights:
        np.testing.assert_array_equal(back[name], weights[name])


def test_seed_checkpoint_logits_match_engine(tok105):
    model = load_model_file(tok105["model"])
    config, version, _ = read_model(tok105["model"])
    assert version == 0 and model.args.file_config() == config
    g = Generator(tok105["model"], tok105["tokenizer"])
    ids = g.encode("Once upon a time, there was a little girl named Lily. She loved to play.")
    ids = (ids * 10)[:256]  # a full context
    with torch.no_grad():
        expected = model(torch.tensor([ids]))[0].numpy()
    np.testing.assert_allclose(g.logits(ids), expected, atol=1e-4, rtol=0)
    torch_greedy = model.generate_greedy(ids[:20], 40)[20:]
    prompt = g.decode(ids[:20])
    assert g.generate(prompt, max_new_tokens=40, temperature=0) == g.decode(torch_greedy)


def test_seed_checkpoint_eval_figure(tok105, shared_dir):
    """model5000.bin scores 0.886 on valid-sample.txt (torch over the whole file; the
    C engine, slower, on the first windows, agreeing to well within 1e-3)."""
    model = load_model_file(tok105["model"])
    g = Generator(tok105["model"], tok105["tokenizer"])
    docs = load_documents(shared_dir / "data" / "tinystories" / "valid-sample.txt")
    stream = token_stream(docs, lambda text: g.encode(text, bos=False))
    result = evaluate_torch(model, stream, len(docs), batch_size=64)
    assert result.n_tokens == len(stream) - 1
    assert round(result.loss, 3) == 0.886, result.loss
    assert result.summary() == "loss: 0.8864 perplexity: 2.43"

    head = stream[: 8 * 256 + 1]
    engine = evaluate_stream(head, 256, g.logits)
    assert abs(engine.loss - evaluate_torch(model, head).loss) < 1e-4


def test_windows_cover_every_token_once():
    stream = np.arange(1000)
    pairs = list(windows(stream, 256))
    assert [len(x) for x, _ in pairs] == [256, 256, 256, 231]
    targets = np.concatenate([y for _, y in pairs])
    np.testing.assert_array_equal(targets, stream[1:])
    for x, y in pairs:
        np.testing.assert_array_equal(x + 1, y)
