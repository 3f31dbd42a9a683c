"""``tinystories plot``: the loss curves of training runs, from their ``metrics.jsonl``.

Train and validation loss against iterations (or tokens seen), the learning rate on a
second axis, several runs overlaid in one PNG. Needs matplotlib (the ``train`` extra).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..training import require
from ..training.runlog import read_metrics
from .common import add_debug_argument

if TYPE_CHECKING:
    from matplotlib.figure import Figure

X_AXES = {"iter": "iteration", "tokens": "tokens seen"}


def build_parser(prog: str = "tinystories plot") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Plot the train and validation loss (and the learning rate) of one or "
        "more training runs from their metrics.jsonl.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"""examples:
  {prog} out/metrics.jsonl -o loss.png
  {prog} runs/a/metrics.jsonl runs/b/metrics.jsonl --x tokens -o compare.png
""",
    )
    p.add_argument("metrics", nargs="+", type=Path, help="metrics.jsonl of each run")
    p.add_argument("-o", "--output", type=Path, default=Path("loss.png"), help="the PNG to write")
    p.add_argument("--x", choices=list(X_AXES), default="iter", help="the horizontal axis")
    p.add_argument("--title", help="a title above the plot")
    add_debug_argument(p)
    return p


def run_labels(paths: Sequence[Path]) -> list[str]:
    """What the legend calls each run: its folder (metrics.jsonl sits in the run's --out),
    or the file's path when two runs would share a name."""
    names = [path.parent.name if path.stem == "metrics" else path.stem for path in paths]
    if len(set(names)) < len(names):
        return [str(path) for path in paths]
    return names


def plot_runs(
    runs: Sequence[tuple[str, list[dict]]], x: str = "iter", title: str | None = None
) -> Figure:
    """One figure: each run's train loss (line) and validation loss (dots on a line) on the
    left axis, its learning rate (dotted) on the right one, all in the run's colour."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    figure = Figure(figsize=(9, 5.5), layout="constrained")
    loss_axis = figure.add_subplot()
    lr_axis = loss_axis.twinx()
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for (_, rows), colour in zip(runs, colours, strict=True):
        xs = [row[x] for row in rows]
        loss_axis.plot(xs, [row["loss"] for row in rows], color=colour, lw=1, alpha=0.7)
        evaluated = [row for row in rows if "val_loss" in row]
        loss_axis.plot(
            [row[x] for row in evaluated],
            [row["val_loss"] for row in evaluated],
            color=colour,
            marker="o",
            lw=2,
        )
        lr_axis.plot(xs, [row["lr"] for row in rows], color=colour, ls=":", lw=1.5)
    loss_axis.set_xlabel(X_AXES[x])
    loss_axis.set_ylabel("loss (nats per token)")
    lr_axis.set_ylabel("learning rate (dotted)")
    loss_axis.grid(alpha=0.3)
    handles = [Line2D([], [], color=colour, lw=2) for colour in colours]
    handles += [
        Line2D([], [], color="gray", lw=1),
        Line2D([], [], color="gray", marker="o", lw=2),
        Line2D([], [], color="gray", ls=":", lw=1.5),
    ]
    labels = [label for label, _ in runs] + ["train loss", "validation loss", "learning rate"]
    loss_axis.legend(handles, labels, loc="upper right")
    if title:
        loss_axis.set_title(title)
    return figure


def main(argv: Sequence[str] | None = None, prog: str = "tinystories plot") -> int:
    args = build_parser(prog).parse_args(argv)
    require(("matplotlib",), what="plot")
    try:
        runs = []
        for label, path in zip(run_labels(args.metrics), args.metrics, strict=True):
            rows = read_metrics(path)
            if not rows:
                raise ValueError(f"{path}: no rows (has the run logged an iteration yet?)")
            if any(args.x not in row for row in rows):
                raise ValueError(f"{path}: rows without {args.x!r} (written by an older version)")
            runs.append((label, rows))
        plot_runs(runs, x=args.x, title=args.title).savefig(args.output, dpi=120)
    except (OSError, ValueError) as err:
        if getattr(args, "debug", False):
            raise
        print(f"tinystories: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
