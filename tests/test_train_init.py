"""--init-from: a run that starts from a model file's weights (fine-tuning, or longer
windows for a model trained on short ones), and the errors around it."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sentencepiece")

from support.stories import make_corpus, write_txt  # noqa: E402
from support.training import TINY_RUN, TINY_SHAPE  # noqa: E402
from tinystories.cli.train import main as train_main  # noqa: E402
from tinystories.formats.llama2c import read_model  # noqa: E402
from tinystories.training.config import ConfigError, TrainConfig  # noqa: E402
from tinystories.training.loop import train  # noqa: E402

RUN = {**TINY_RUN, "seed": 7}


def quiet(*args):
    pass


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small trained model and the data directory holding its vocabulary."""
    root = tmp_path_factory.mktemp("init")
    corpus = root / "stories.txt"
    write_txt(corpus, make_corpus(200, seed=3))
    config = TrainConfig(
        data=str(corpus),
        out_dir=str(root / "base"),
        data_dir=str(root / "data"),
        max_iters=120,
        learning_rate=1e-2,
        **TINY_SHAPE,
        **RUN,
    )
    return corpus, root / "data", train(config, log=quiet)


def test_a_run_starts_from_the_files_weights_with_a_longer_context(base, tmp_path):
    corpus, data_dir, trained = base
    fresh = train(
        TrainConfig(
            data=str(corpus),
            out_dir=str(tmp_path / "fresh"),
            data_dir=str(data_dir),
            max_iters=1,
            **{**TINY_SHAPE, "seq_len": 64},
            **RUN,
        ),
        log=quiet,
    )
    lines = []
    tuned = train(  # a learning rate too small to move the weights: the file's model, longer
        TrainConfig(
            data=str(corpus),
            out_dir=str(tmp_path / "tuned"),
            data_dir=str(data_dir),
            init_from=str(trained.model_path),
            seq_len=64,
            max_iters=1,
            learning_rate=1e-12,
            **RUN,
        ),
        log=lines.append,
    )
    assert any("starting from the weights of" in line for line in lines)
    # the trained model's loss, not a fresh one's (about ln 80 = 4.4)
    assert tuned.metrics[0]["loss"] < fresh.metrics[0]["loss"] - 1.0
    base_config, _, base_weights = read_model(trained.model_path)
    config, _, weights = read_model(tuned.model_path)
    assert config.seq_len == 64 and base_config.seq_len == 32
    assert (config.dim, config.n_layers, config.vocab_size) == (32, 2, 80)
    for name, value in base_weights.items():
        np.testing.assert_allclose(weights[name], value, atol=1e-6, err_msg=name)


def test_resume_continues_a_run_that_began_from_a_file(base, tmp_path):
    corpus, data_dir, trained = base
    config = TrainConfig(
        data=str(corpus),
        out_dir=str(tmp_path / "run"),
        data_dir=str(data_dir),
        init_from=str(trained.model_path),
        max_iters=4,
        learning_rate=1e-4,
        **RUN,
    )
    first = train(TrainConfig(**{**config.__dict__, "stop_iter": 2}), log=quiet)
    whole = train(TrainConfig(**{**config.__dict__, "out_dir": str(tmp_path / "whole")}), log=quiet)
    resumed = train(TrainConfig(**{**config.__dict__, "resume": True}), log=quiet)
    assert first.iters == 2 and resumed.iters == 4
    assert resumed.model_path.read_bytes() == whole.model_path.read_bytes()


def test_a_flag_that_contradicts_the_files_architecture_is_named(base):
    _, _, trained = base
    file_config, _, _ = read_model(trained.model_path)
    config = TrainConfig(init_from=str(trained.model_path), dim=64, n_layers=2)
    with pytest.raises(ConfigError, match=r"--dim 64 \(the file's: 32\)") as err:
        config.initialized(file_config)
    assert "n-layers" not in str(err.value)  # repeating the file's value is fine
    same = TrainConfig(init_from=str(trained.model_path), dim=32, n_layers=2)
    assert (same.initialized(file_config).seq_len, same.initialized(file_config).dim) == (32, 32)
    assert TrainConfig(init_from="m.bin", seq_len=512).initialized(file_config).seq_len == 512


def test_the_files_vocabulary_must_be_in_the_data_directory(base, tmp_path):
    corpus, _, trained = base
    config = TrainConfig(
        data=str(corpus),
        out_dir=str(tmp_path / "out"),
        init_from=str(trained.model_path),
        max_iters=1,
        **RUN,
    )
    with pytest.raises(ConfigError, match="its vocabulary .*tok80.model.* must be in"):
        train(config, log=quiet)
    assert not (tmp_path / "out" / "data" / "tok80.model").exists()  # none was trained


def test_a_missing_file_is_a_usage_error(tmp_path, capsys):
    status = train_main(["--data", "x.txt", "--out", str(tmp_path), "--init-from", "nope.bin"])
    assert status == 2
    assert "tinystories: error: --init-from nope.bin: no such file" in capsys.readouterr().err
