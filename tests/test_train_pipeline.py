"""End to end: corpus -> vocab -> shards -> training -> export v0/v1/v2 -> the C engine."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sentencepiece")

from support.stories import make_corpus, write_txt  # noqa: E402
from tinystories import Generator, Tokenizer  # noqa: E402
from tinystories.formats.tokenizer_bin import read_tokenizer, sentencepiece_pieces  # noqa: E402
from tinystories.metrics import evaluate_stream, token_stream  # noqa: E402
from tinystories.training.checkpoint import export_checkpoint, export_model  # noqa: E402
from tinystories.training.config import TrainConfig  # noqa: E402
from tinystories.training.evaluate import evaluate_torch  # noqa: E402
from tinystories.training.loop import train  # noqa: E402
from tinystories.training.model import load_model_file  # noqa: E402

VOCAB = 96

# A tiny model: GQA (4 query heads on 2 kv heads), tied classifier, 64-token context.
TINY = dict(
    vocab_size=VOCAB,
    dim=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    seq_len=64,
    batch_size=8,
    eval_iters=2,
    dtype="float32",
    compile=False,
    progress=False,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("corpus")
    stories = make_corpus(400, seed=1)
    write_txt(root / "train.txt", stories[:360])
    write_txt(root / "valid.txt", stories[360:])
    return {"train": root / "train.txt", "valid": root / "valid.txt", "stories": stories}


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        data=str(corpus["train"]),
        val_data=str(corpus["valid"]),
        out_dir=str(out),
        max_iters=60,
        eval_interval=20,
        learning_rate=3e-3,
        **TINY,
    )
    return train(config, log=lambda *a: None)


def test_outputs_and_metrics(run):
    for name in ("model.bin", "tokenizer.bin", "ckpt.pt", "metrics.jsonl"):
        assert (run.out_dir / name).is_file(), name
    rows = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert [r["iter"] for r in rows] == list(range(1, 61))
    assert all({"iter", "loss", "lr", "tokens_per_sec"} <= set(r) for r in rows)
    assert [r["iter"] for r in rows if "val_loss" in r] == [20, 40, 60]
    assert rows == run.metrics


def test_loss_falls(run):
    rows = run.metrics
    first = np.mean([r["loss"] for r in rows[:3]])
    last = np.mean([r["loss"] for r in rows[-3:]])
    assert first > np.log(VOCAB) - 0.5  # starts near uniform
    assert last < first - 1.0, (first, last)
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert val[-1] < val[0]


def test_vocabulary_files(run, corpus):
    # tokenizer.bin is llama2.c's export of the sentencepiece model trained for this run
    sp_model = run.out_dir / "data" / f"tok{VOCAB}.model"
    assert read_tokenizer(run.tokenizer_path) == sentencepiece_pieces(sp_model)
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    assert sp.vocab_size() == VOCAB
    tokenizer = Tokenizer(run.tokenizer_path)
    for story in corpus["stories"][:20]:  # the C encoder agrees with sentencepiece here
        assert tokenizer.encode(story, bos=True) == [1] + sp.encode(story)


def test_shards_have_bos_before_every_story(run, corpus):
    shard_dir = run.out_dir / "data" / f"tok{VOCAB}"
    tokens = np.concatenate(
        [np.fromfile(p, dtype=np.uint16) for p in sorted(shard_dir.glob("val_*.bin"))]
    )
    assert tokens[0] == 1
    assert int((tokens == 1).sum()) == 40  # the 40 validation stories
    assert tokens.max() < VOCAB


@pytest.mark.parametrize("fmt", ["v0", "v1"])
def test_engine_matches_torch_fp32(run, tmp_path, fmt):
    model = load_model_file(run.model_path)  # the training export (v0) read back
    path, tok = export_model(model, tmp_path / f"model_{fmt}.bin", run.tokenizer_path, fmt=fmt)
    g = Generator(path, tok)
    assert g.config.version == int(fmt[1])
    assert (g.config.dim, g.config.n_layers, g.config.n_kv_heads) == (32, 2, 2)
    prompt = "Once upon a time, there was a little dog"
    ids = g.encode(prompt)
    ids = ids + [int(t) for t in np.random.default_rng(0).integers(3, VOCAB, 64 - len(ids))]
    with torch.no_grad():
        expected = model(torch.tensor([ids]))[0].numpy()
    np.testing.assert_allclose(g.logits(ids), expected, atol=1e-4, rtol=0)

    # greedy decoding: the same tokens from torch and from the engine
    prompt_ids = g.encode(prompt)
    torch_ids = model.generate_greedy(prompt_ids, 30)[len(prompt_ids) :]
    if 1 in torch_ids:  # the engine stops at BOS
        torch_ids = torch_ids[: torch_ids.index(1)]
    assert g.generate(prompt, max_new_tokens=30, temperature=0.0) == g.decode(torch_ids)


def test_engine_q8_export(run, tmp_path):
    model = load_model_file(run.model_path)
    path, tok = export_model(model, tmp_path / "model_q80.bin", run.tokenizer_path, fmt="v2")
    g = Generator(path, tok)
    assert g.config.version == 2
    ids = g.encode("Tom and Mia went to the park. They saw a red ball.")
    q8 = g.logits(ids)
    with torch.no_grad():
        fp32 = model(torch.tensor([ids]))[0].numpy()
    assert np.abs(q8 - fp32).max() < 0.25  # int8 weights and activations: close, not equal
    assert (q8.argmax(-1) == fp32.argmax(-1)).mean() > 0.9


def test_eval_torch_and_engine_agree(run, corpus, capsys):
    g = Generator(run.model_path, run.tokenizer_path)
    docs = corpus["stories"][360:]
    stream = token_stream(docs, lambda text: g.encode(text, bos=False))
    engine = evaluate_stream(stream, g.config.seq_len, g.logits, len(docs))
    torch_result = evaluate_torch(load_model_file(run.model_path), stream, len(docs))
    assert engine.n_tokens == torch_result.n_tokens == len(stream) - 1
    assert abs(engine.loss - torch_result.loss) < 1e-3
    # close to the training loop's own validation estimate
    assert abs(engine.loss - run.final_val_loss) < 0.15

    from tinystories.cli.eval import main as eval_main

    assert (
        eval_main(
            [
                "--model",
                str(run.model_path),
                "--tokenizer",
                str(run.tokenizer_path),
                "--data",
                str(corpus["valid"]),
                "--no-progress",
            ]
        )
        == 0
    )
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == engine.summary()
    assert last.startswith("loss: ") and " perplexity: " in last


def test_export_cli_from_checkpoint(run, tmp_path, capsys):
    from tinystories.cli.export import main as export_main

    out = tmp_path / "cli" / "model.bin"
    assert export_main([str(run.checkpoint_path), "--out", str(out), "--format", "v1"]) == 0
    assert (tmp_path / "cli" / "tokenizer.bin").read_bytes() == run.tokenizer_path.read_bytes()
    g = Generator(out, tmp_path / "cli" / "tokenizer.bin")
    reference = Generator(run.model_path, run.tokenizer_path)
    ids = reference.encode("Lily had a blue kite.")
    np.testing.assert_array_equal(g.logits(ids), reference.logits(ids))
    # the same weights as the training run's own export
    model_path, _ = export_checkpoint(run.checkpoint_path, tmp_path / "again.bin")
    assert model_path.read_bytes() == run.model_path.read_bytes()


def test_train_cli(corpus, tmp_path, capsys):
    from tinystories.cli.train import main as train_main

    code = train_main(
        [
            "--data",
            str(corpus["train"]),
            "--vocab-size",
            str(VOCAB),
            "--out",
            str(tmp_path),
            "--max-iters",
            "4",
            "--batch-size",
            "4",
            "--dim",
            "16",
            "--n-layers",
            "1",
            "--n-heads",
            "2",
            "--n-kv-heads",
            "1",
            "--seq-len",
            "32",
            "--eval-iters",
            "1",
            "--no-compile",
            "--dtype",
            "float32",
            "--no-progress",
            "--format",
            "v2",
        ]
    )
    assert code == 0
    assert Generator(tmp_path / "model.bin", tmp_path / "tokenizer.bin").config.version == 2
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4
