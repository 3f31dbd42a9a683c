"""Flags validated before any work (one `tinystories: error:` line, exit status 2), and
what --resume takes from the checkpoint."""

from __future__ import annotations

import pytest
from support.training import TINY_FLAGS, train_command, write_corpus
from tinystories.cli.train import main as train_main
from tinystories.modal.settings import GPU_TYPES, check_gpu
from tinystories.training.config import ConfigError, ModelArgs, TrainConfig, parse_interval

BAD_FLAGS = {
    "--seq-len 0": "--seq-len must be a positive integer, not 0",
    "--grad-accum 0": "--grad-accum must be a positive integer, not 0",
    "--max-iters -5": "--max-iters must be a positive integer, not -5",
    "--batch-size 0": "--batch-size must be a positive integer, not 0",
    "--eval-iters 0": "--eval-iters must be a positive integer, not 0",
    "--dim 0": "--dim must be a positive integer, not 0",
    "--n-layers 0": "--n-layers must be a positive integer, not 0",
    "--vocab-size 70000": "--vocab-size must be at most 65,536",
    "--n-heads 3": "--n-heads 3 does not divide --dim 128",
    "--n-kv-heads 3": "--n-kv-heads 3 does not divide --n-heads 8",
    "--dim 24 --n-heads 8 --n-kv-heads 4": "the head size --dim / --n-heads = 3 must be even",
    "--lr 0": "--lr must be more than 0, not 0.0",
    "--lr=-1e-3": "--lr must be more than 0",
    "--lr nan": "--lr must be more than 0, not nan",
    "--device gpu": "--device must be auto, cpu, cuda or cuda:N, not 'gpu'",
    "--dtype float8": "--dtype must be one of auto, float32, bfloat16, float16, not 'float8'",
    "--format v9": "--format must be one of v0, v1, v2, not 'v9'",
    "--preset huge": "unknown --preset 'huge' (known: tok105)",
    "--checkpoint-interval 0": "--checkpoint-interval '0' must be more than 0",
    "--checkpoint-interval 5s": "--checkpoint-interval '5s': give iterations (e.g. 500) or "
    "minutes (e.g. 5m)",
    "--modal --dry-run --gpu V100": "--gpu 'V100': the GPU types are T4, L4, A10G",
    "--modal --dry-run --gpu T4:9": "--gpu 'T4:9': the count after ':' must be 1 to 8",
}


@pytest.mark.parametrize("flags", BAD_FLAGS)
def test_a_bad_flag_is_one_error_line_and_status_2(flags, tmp_path, capsys):
    status = train_main(["--data", "missing.txt", "--out", str(tmp_path / "out"), *flags.split()])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err == f"tinystories: error: {err.removeprefix('tinystories: error: ')}"
    assert err.count("\n") == 1 and BAD_FLAGS[flags] in err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_every_problem_is_named_at_once(capsys):
    assert train_main(["--seq-len", "0", "--grad-accum", "0", "--lr", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    for flag in ("--seq-len", "--grad-accum", "--lr"):
        assert flag in err


def test_cuda_that_is_not_here():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from tinystories.training.loop import pick_device

    with pytest.raises(ConfigError, match="--device cuda: CUDA is not available here"):
        pick_device("cuda")


def test_vocab_the_corpus_cannot_fill_is_a_usage_error(tmp_path):
    """sentencepiece's 'Vocabulary size too high' traceback, as one line (subprocess: the
    real exit status and stderr)."""
    pytest.importorskip("sentencepiece")
    corpus = write_corpus(tmp_path / "stories.txt", 50)
    flags = [*TINY_FLAGS, "--vocab-size", "2000", "--max-iters", "2", "--no-progress"]
    done = train_command("--data", str(corpus), "--out", str(tmp_path / "out"), *flags)
    assert done.returncode == 2, done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("tinystories: error: vocab size 2000 is too large for this corpus")
    assert "at most" in last and "Traceback" not in done.stderr


def test_gpu_values():
    for gpu in (*GPU_TYPES, "t4", "A100-80GB:2", "H100:8"):
        check_gpu(gpu)
    for gpu in ("V100", "T4:0", "T4:x", "A100:", ""):
        with pytest.raises(ValueError):
            check_gpu(gpu)


def test_checkpoint_interval_values():
    assert parse_interval("500") == (500, None)
    assert parse_interval("5m") == (None, 5.0)
    assert parse_interval("0.5min") == (None, 0.5)
    for text in ("0", "0m", "-5", "5 minutes", "1.5", ""):
        with pytest.raises(ConfigError):
            parse_interval(text)


# --- --resume -----------------------------------------------------------------------

SAVED = ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=80, seq_len=32)
SAVED_CONFIG = {"preset": None, "data": "stories.txt", "data_dir": "shared/data"}


def test_resume_takes_the_shape_vocabulary_and_data_from_the_checkpoint():
    config = TrainConfig(resume=True, max_iters=99, batch_size=8, learning_rate=3e-4)
    resumed = config.resumed(SAVED_CONFIG, SAVED)
    assert (resumed.vocab_size, resumed.data, resumed.data_dir) == (
        80,
        "stories.txt",
        "shared/data",
    )
    # what may change is this run's
    assert (resumed.max_iters, resumed.batch_size, resumed.learning_rate) == (99, 8, 3e-4)
    # flags that repeat the checkpoint are fine
    same = TrainConfig(dim=32, n_heads=4, seq_len=32, vocab_size=80, hidden_dim=SAVED.ffn_dim)
    assert same.resumed(SAVED_CONFIG, SAVED).dim == 32


def test_resume_names_each_contradicting_flag():
    config = TrainConfig(dim=64, n_layers=3, seq_len=64, vocab_size=105, shared_classifier=False)
    with pytest.raises(ConfigError) as caught:
        config.resumed(SAVED_CONFIG, SAVED)
    message = str(caught.value)
    for text in (
        "--dim 64 (the checkpoint's: 32)",
        "--n-layers 3 (the checkpoint's: 2)",
        "--seq-len 64 (the checkpoint's: 32)",
        "--vocab-size 105 (the checkpoint's: 80)",
        "--untied",
    ):
        assert text in message
    with pytest.raises(ConfigError, match="--preset huge"):
        TrainConfig(preset="huge").resumed(SAVED_CONFIG, SAVED)


def test_resume_with_a_contradicting_flag_on_the_command_line(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("sentencepiece")
    corpus = write_corpus(tmp_path / "stories.txt")
    out = str(tmp_path / "out")
    base = ["--out", out, "--no-progress", *TINY_FLAGS]
    assert train_main(["--data", str(corpus), "--max-iters", "3", *base]) == 0
    capsys.readouterr()
    assert train_main(["--resume", "--max-iters", "5", *base, "--dim", "64"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "tinystories: error: --resume continues the checkpoint's model, and these flags "
        "contradict it: --dim 64 (the checkpoint's: 32); leave them out, or train a new "
        "model into another --out\n"
    )
    # no --data, no shape flags: all from the checkpoint; a longer run and a bigger batch
    assert train_main(["--resume", "--out", out, "--max-iters", "5", "--batch-size", "6",
                       "--threads", "1", "--no-progress", "--no-compile"]) == 0  # fmt: skip
    assert "resuming from" in capsys.readouterr().out
