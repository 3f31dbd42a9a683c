"""Resume: a run stopped and resumed follows the uninterrupted run exactly; bad input errors."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sentencepiece")

from support.stories import make_corpus, write_txt  # noqa: E402
from support.training import TINY_CONFIG  # noqa: E402
from tinystories.formats.corpus import DataError  # noqa: E402
from tinystories.training.checkpoint import export_checkpoint  # noqa: E402
from tinystories.training.config import ConfigError, TrainConfig  # noqa: E402
from tinystories.training.loop import learning_rate, train  # noqa: E402

SMALL = {**TINY_CONFIG, "grad_accum_steps": 2, "max_iters": 12, "eval_interval": 4, "seed": 7}


def quiet(*args):
    pass


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("resume") / "stories.txt"
    write_txt(path, make_corpus(200, seed=3))
    return path


def test_resume_matches_uninterrupted_run(corpus, tmp_path):
    data_dir = tmp_path / "data"  # shared, so both runs also reuse one vocabulary and shards
    full = train(
        TrainConfig(
            data=str(corpus), out_dir=str(tmp_path / "full"), data_dir=str(data_dir), **SMALL
        ),
        log=quiet,
    )

    parts = str(tmp_path / "parts")
    first = train(
        TrainConfig(data=str(corpus), out_dir=parts, data_dir=str(data_dir), stop_iter=6, **SMALL),
        log=quiet,
    )
    assert first.iters == 6
    assert torch.load(first.checkpoint_path, weights_only=False)["iter"] == 6
    # as after a crash: the log has rows past the checkpoint; resuming drops them
    with open(first.metrics_path, "a") as log:
        log.write(json.dumps({"iter": 7, "loss": 0.0, "lr": 0.0, "tokens_per_sec": 0.0}) + "\n")
    second = train(
        TrainConfig(data=str(corpus), out_dir=parts, data_dir=str(data_dir), resume=True, **SMALL),
        log=quiet,
    )
    assert second.iters == 12

    rows = [json.loads(line) for line in second.metrics_path.read_text().splitlines()]
    assert [r["iter"] for r in rows] == list(range(1, 13))  # no duplicated iteration 7

    def curve(rows):  # everything but the timing
        return [{k: v for k, v in row.items() if k != "tokens_per_sec"} for row in rows]

    assert curve(rows) == curve(full.metrics)  # losses, val losses and learning rates, exactly
    assert second.model_path.read_bytes() == full.model_path.read_bytes()


def test_schedule_scales_with_max_iters():
    short = TrainConfig(max_iters=40, learning_rate=1e-3)
    assert short.warmup() == 2
    assert learning_rate(short, 0) < learning_rate(short, 1) == pytest.approx(1e-3)
    assert learning_rate(short, 39) > 1e-4  # decays towards min_lr at max_iters, not before
    long = TrainConfig(max_iters=100_000)
    assert long.warmup() == 1000
    assert learning_rate(long, 100_000) == pytest.approx(1e-4)


def test_missing_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="data not found"):
        train(
            TrainConfig(data=str(tmp_path / "nope.txt"), out_dir=str(tmp_path), **SMALL), log=quiet
        )


@pytest.mark.parametrize("content", ["", "\n\n<|endoftext|>\n  \n<|endoftext|>\n"])
def test_empty_data(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_text(content)
    with pytest.raises(DataError, match="no stories"):
        train(TrainConfig(data=str(path), out_dir=str(tmp_path), **SMALL), log=quiet)


def test_vocab_too_small(corpus, tmp_path):
    config = TrainConfig(data=str(corpus), out_dir=str(tmp_path), **{**SMALL, "vocab_size": 20})
    with pytest.raises(ConfigError, match=r"vocab size 20 is too small.*43 pieces"):
        train(config, log=quiet)


def test_corrupt_checkpoint(corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "ckpt.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    config = TrainConfig(data=str(corpus), out_dir=str(out), resume=True, **SMALL)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        train(config, log=quiet)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        export_checkpoint(out / "ckpt.pt")
    torch.save({"something": 1}, out / "ckpt.pt")
    with pytest.raises(ValueError, match="not a tinystories checkpoint"):
        export_checkpoint(out / "ckpt.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(
            TrainConfig(data=str(corpus), out_dir=str(tmp_path / "fresh"), resume=True, **SMALL),
            log=quiet,
        )


def test_cli_errors(tmp_path, capsys):
    from tinystories.cli.train import main as train_main

    assert (
        train_main(
            ["--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path), "--no-progress"]
        )
        == 1
    )
    assert "data not found" in capsys.readouterr().err


def test_missing_extra_message(monkeypatch):
    import tinystories.training as training

    assert training.missing_packages(("torch",)) == []
    with pytest.raises(SystemExit, match=r"pip install 'tinystories\[train\]'"):
        training.require(("torch", "surely_not_installed_pkg"))


def test_inference_side_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, tinystories, tinystories.eval, tinystories.metrics\n"
        "import tinystories.training.evaluate\n"
        "assert 'torch' not in sys.modules and 'sentencepiece' not in sys.modules, 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
