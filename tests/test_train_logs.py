"""Seeing training: plain progress lines when stderr is not a terminal, TensorBoard events
(--tensorboard), and `tinystories plot`."""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sentencepiece")

from support.training import TINY_FLAGS, train_command, write_corpus  # noqa: E402
from tinystories.cli import dispatch  # noqa: E402
from tinystories.cli.plot import plot_runs  # noqa: E402
from tinystories.training.config import TrainConfig  # noqa: E402
from tinystories.training.loop import train  # noqa: E402

TINY = dict(
    vocab_size=80, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, seq_len=32, batch_size=4,
    eval_iters=2, dtype="float32", compile=False, progress=False, num_threads=1,
)  # fmt: skip


def quiet(*args):
    pass


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("logs") / "stories.txt")


def test_plain_lines_when_stderr_is_not_a_terminal(corpus, tmp_path):
    done = train_command(
        "--data", str(corpus), "--out", str(tmp_path), "--max-iters", "20", *TINY_FLAGS
    )
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    lines = done.stderr.splitlines()
    assert "pretokenize train: 190/190 story" in lines
    progress = [line for line in lines if line.startswith("train: ")]
    # a line at every tenth of the run, with the loss and the speed
    assert [line.split()[1] for line in progress] == [f"{i}/20" for i in range(2, 21, 2)]
    assert all(" it loss=" in line and " tok_s=" in line for line in progress)


def test_tensorboard_events_mirror_the_metrics_and_a_resume_replaces_the_lost_part(
    corpus, tmp_path
):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def run(name: str, **settings) -> TrainConfig:
        return TrainConfig(
            data=str(corpus), out_dir=str(tmp_path / name), tensorboard_dir=str(tmp_path / name /
            "tb"), max_iters=8, eval_interval=4, **TINY, **settings
        )  # fmt: skip

    full = train(run("full"), log=quiet)
    # as after a kill at iteration 6 whose last checkpoint was at 4: resume from there
    kept = tmp_path / "ckpt4.pt"

    def keep_iteration_4(path):
        if path.name == "ckpt.pt" and torch.load(path, weights_only=False)["iter"] == 4:
            shutil.copyfile(path, kept)

    train(
        run("cut", stop_iter=6, checkpoint_interval="2"), log=quiet, on_checkpoint=keep_iteration_4
    )
    shutil.copyfile(kept, tmp_path / "cut" / "ckpt.pt")
    resumed = train(run("cut", resume=True), log=quiet)

    def curve(rows):  # everything but the timing
        return [{k: v for k, v in row.items() if k != "tokens_per_sec"} for row in rows]

    assert curve(resumed.metrics) == curve(full.metrics)

    for name, rows in (("full", full.metrics), ("cut", resumed.metrics)):
        scalars = EventAccumulator(str(tmp_path / name / "tb")).Reload()
        train_loss = scalars.Scalars("loss/train")
        assert [e.step for e in train_loss] == list(range(1, 9)), name
        assert [e.value for e in train_loss] == pytest.approx([r["loss"] for r in rows])
        assert [e.step for e in scalars.Scalars("loss/val")] == [4, 8]
        learning_rates = [e.value for e in scalars.Scalars("learning_rate")]
        assert learning_rates == pytest.approx([r["lr"] for r in rows])


def metrics_file(path, losses, every=2):
    rows = []
    for i, loss in enumerate(losses, 1):
        row = {"iter": i, "tokens": 100 * i, "loss": loss, "lr": 1e-3 / i, "tokens_per_sec": 1.0}
        if i % every == 0:
            row["val_loss"] = loss + 0.1
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def test_plot_overlays_runs(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    a = metrics_file(tmp_path / "a" / "metrics.jsonl", [4.0, 3.0, 2.5, 2.0])
    b = metrics_file(tmp_path / "b" / "metrics.jsonl", [4.2, 3.5, 3.0, 2.8, 2.6, 2.5])
    png = tmp_path / "loss.png"
    words = ["plot", str(tmp_path / "a" / "metrics.jsonl"), str(tmp_path / "b" / "metrics.jsonl")]
    assert dispatch.main([*words, "-o", str(png), "--x", "tokens"]) == 0
    assert capsys.readouterr().out == f"wrote {png}\n"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    figure = plot_runs([("a", a), ("b", b)], x="tokens")
    loss_axis, lr_axis = figure.axes
    train_a, val_a, train_b, val_b = loss_axis.lines
    assert list(train_a.get_xdata()) == [100, 200, 300, 400]
    assert list(train_b.get_ydata()) == [r["loss"] for r in b]
    assert list(val_a.get_xdata()) == [200, 400] and list(val_a.get_ydata()) == [3.1, 2.1]
    assert list(lr_axis.lines[1].get_ydata()) == [r["lr"] for r in b]
    assert train_a.get_color() == val_a.get_color() == lr_axis.lines[0].get_color()
    assert [t.get_text() for t in loss_axis.get_legend().get_texts()][:2] == ["a", "b"]
    assert loss_axis.get_xlabel() == "tokens seen"


def test_plot_errors_are_one_line(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"iter": 1, "loss": 2.0, "lr": 0.1}\nnot json\n')
    for path, message in (
        (tmp_path / "missing.jsonl", "No such file"),
        (empty, "no rows"),
        (broken, "broken.jsonl:2: not a JSON row"),
    ):
        assert dispatch.main(["plot", str(path), "-o", str(tmp_path / "x.png")]) == 1
        err = capsys.readouterr().err
        assert err.startswith("tinystories: error: ") and err.count("\n") == 1 and message in err
