"""``python -m tinystories.train``: vocabulary, shards, training and export in one command.

Flags map one-to-one onto :class:`tinystories.training.config.TrainConfig`, whose
defaults they show; the work happens in :func:`tinystories.training.loop.train`, here
(under ``torchrun``, in every process) or, with ``--modal``, in a Modal container
(:mod:`tinystories.modal.app`) from the same config. A flag that cannot work is refused
before any work, with one ``tinystories: error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from typing import NoReturn

from ..formats.llama2c import VERSIONS
from ..modal.settings import (
    DEFAULT_GPU,
    DEFAULT_TRAIN_TIMEOUT,
    DEFAULT_VOLUME,
    GPU_TYPES,
    MAX_TIMEOUT,
    check_gpu,
)
from ..training import exit_process
from ..training.config import DEFAULT_PRESET, DTYPES, PRESETS, ConfigError, TrainConfig
from .common import add_debug_argument, fail, print_error

DEFAULTS = TrainConfig()


def build_parser(prog: str = "python -m tinystories.train") -> argparse.ArgumentParser:
    """The flags; ``prog`` is how the command was typed (``tinystories train`` too)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train a small Llama model on TinyStories and export model.bin.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"""examples:
  {prog} --data train-sample.txt --val-data valid-sample.txt \\
      --max-iters 1200 --threads 1 --out out
  {prog} --data TinyStories_all_data.tar.gz --max-iters 5000 --out out
  {prog} --out out --resume
  torchrun --nproc_per_node 2 -m tinystories.train --data train.txt --grad-accum 2
  {prog} --data train.txt --modal --gpu T4 --dry-run
""",
    )
    p.add_argument(
        "--data",
        required=False,
        default=DEFAULTS.data,
        help="corpus: .txt, JSON shard(s), "
        ".tar.gz or a directory of them (not needed to --resume with shards made)",
    )
    p.add_argument(
        "--val-data",
        help=f"held-out corpus (default: the last {DEFAULTS.val_fraction * 100:g}%% of --data)",
    )
    p.add_argument(
        "--out", default=DEFAULTS.out_dir, help=f"output directory (default: {DEFAULTS.out_dir})"
    )
    p.add_argument("--data-dir", help="vocabulary and shards (default: OUT/data)")
    p.add_argument("--preset", help=f"model preset (default: {DEFAULT_PRESET})")
    p.add_argument(
        "--vocab-size",
        type=int,
        help=f"vocabulary size (default: the preset's, {PRESETS[DEFAULT_PRESET].vocab_size})",
    )
    for name in ("dim", "n-layers", "n-heads", "n-kv-heads", "hidden-dim", "seq-len"):
        p.add_argument(f"--{name}", type=int, help="override the preset")
    p.add_argument("--untied", action="store_true", help="unshared classifier weights")
    p.add_argument("--max-iters", type=int, default=DEFAULTS.max_iters)
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    p.add_argument(
        "--grad-accum",
        type=int,
        default=DEFAULTS.grad_accum_steps,
        help="gradient accumulation steps",
    )
    p.add_argument("--lr", type=float, default=DEFAULTS.learning_rate, help="peak learning rate")
    p.add_argument("--warmup-iters", type=int, help="default: 5%% of --max-iters, at most 1000")
    p.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay)
    p.add_argument("--dropout", type=float, default=DEFAULTS.dropout)
    p.add_argument("--grad-clip", type=float, default=DEFAULTS.grad_clip)
    p.add_argument("--eval-interval", type=int, help="default: max-iters / 10")
    p.add_argument(
        "--eval-iters",
        type=int,
        default=DEFAULTS.eval_iters,
        help="validation batches per eval",
    )
    p.add_argument("--log-interval", type=int, default=DEFAULTS.log_interval)
    p.add_argument(
        "--checkpoint-interval",
        default=DEFAULTS.checkpoint_interval,
        help="write OUT/ckpt.pt every N iterations (500) or minutes (10m), besides every "
        f"evaluation and the end (default: {DEFAULTS.checkpoint_interval})",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/ckpt.pt, with its architecture, vocabulary and data",
    )
    p.add_argument(
        "--init-from",
        metavar="MODEL",
        help="start from the weights of a model file (v0, v1 or v2): its architecture and "
        "vocabulary (which must be in the data directory); --seq-len may differ",
    )
    p.add_argument("--tensorboard", metavar="DIR", help="also write TensorBoard events to DIR")
    p.add_argument(
        "--format",
        default=DEFAULTS.export_format,
        help=f"model.bin format: {', '.join(VERSIONS)} (default: {DEFAULTS.export_format})",
    )
    p.add_argument("--device", default=DEFAULTS.device, help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--dtype",
        default=DEFAULTS.dtype,
        help=f"autocast dtype: {' | '.join(DTYPES)} (default: {DEFAULTS.dtype})",
    )
    compile_group = p.add_mutually_exclusive_group()
    compile_group.add_argument(
        "--compile", dest="compile", action="store_true", default=DEFAULTS.compile
    )
    compile_group.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    m = p.add_argument_group(
        "Modal",
        "run the same training on a Modal GPU (pip install 'tinystories[modal]'); "
        "see the README's 'Train on Modal'",
    )
    m.add_argument("--modal", action="store_true", help="train on Modal instead of here")
    m.add_argument(
        "--gpu",
        default=DEFAULT_GPU,
        help=f"Modal GPU type, with :N for several: {', '.join(GPU_TYPES)} "
        f"(default: {DEFAULT_GPU})",
    )
    m.add_argument(
        "--volume",
        default=DEFAULT_VOLUME,
        help="Modal volume for data, checkpoints and models, mounted at /data "
        f"(default: {DEFAULT_VOLUME}, created if missing)",
    )
    m.add_argument(
        "--timeout-hours",
        type=float,
        default=DEFAULT_TRAIN_TIMEOUT / 3600,
        help=f"limit of the training call (max {MAX_TIMEOUT // 3600})",
    )
    m.add_argument(
        "--no-download", action="store_true", help="leave model.bin on the volume, not in --out"
    )
    m.add_argument(
        "--source",
        help="tinystories checkout the Modal image builds its wheel from "
        "(default: $TINYSTORIES_SOURCE, else the current directory or a parent)",
    )
    m.add_argument("--dry-run", action="store_true", help="print what --modal would run, then exit")
    add_debug_argument(p)
    return p


def config_kwargs(args: argparse.Namespace) -> dict:
    """The :class:`TrainConfig` keyword arguments the flags give (no torch needed)."""
    return dict(
        data=args.data,
        val_data=args.val_data,
        out_dir=args.out,
        data_dir=args.data_dir,
        preset=args.preset,
        vocab_size=args.vocab_size,
        dim=args.dim,
        n_layers=args.n_layers,
        n_heads=args.n_heads,
        n_kv_heads=args.n_kv_heads,
        hidden_dim=args.hidden_dim,
        seq_len=args.seq_len,
        shared_classifier=False if args.untied else None,
        batch_size=args.batch_size,
        grad_accum_steps=args.grad_accum,
        max_iters=args.max_iters,
        learning_rate=args.lr,
        warmup_iters=args.warmup_iters,
        weight_decay=args.weight_decay,
        dropout=args.dropout,
        grad_clip=args.grad_clip,
        eval_interval=args.eval_interval,
        eval_iters=args.eval_iters,
        log_interval=args.log_interval,
        checkpoint_interval=args.checkpoint_interval,
        resume=args.resume,
        init_from=args.init_from,
        tensorboard_dir=args.tensorboard,
        export_format=args.format,
        device=args.device,
        dtype=args.dtype,
        compile=args.compile,
        seed=args.seed,
        num_threads=args.threads,
        progress=not args.no_progress,
    )


def _main_modal(args: argparse.Namespace) -> int:
    """``--modal``: the same TrainConfig, run by tinystories.modal.app on a Modal GPU."""
    from ..modal.check import require_modal

    require_modal("train --modal", credentials=not args.dry_run)
    from ..modal.app import run_training
    from ..modal.settings import Settings, find_source

    try:
        settings = Settings(
            gpu=args.gpu,
            volume=args.volume,
            source=find_source(args.source),
            train_timeout=round(args.timeout_hours * 3600),
        )
        return run_training(
            config_kwargs(args),
            settings,
            out=args.out,
            data_dir=args.data_dir,
            download=not args.no_download,
            dry_run=args.dry_run,
        )
    except (FileNotFoundError, ValueError) as err:
        return fail(err, args.debug)


def main(argv: Sequence[str] | None = None, prog: str = "python -m tinystories.train") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(argv)
    config = TrainConfig(**config_kwargs(args))
    try:
        config.validate()
        if args.modal or args.dry_run:
            check_gpu(args.gpu)
    except ValueError as err:
        return usage_error(err)
    if args.modal or args.dry_run:
        return _main_modal(args)
    from ..training import require

    require(what="training")
    from ..training.loop import TrainingInterrupted, train

    try:
        result = train(config)
    except ConfigError as err:
        return usage_error(err)
    except TrainingInterrupted as stop:
        if stop.main_process:
            print(f"{stop}\nto resume: {resume_command(argv)}", file=sys.stderr)
        return stop.exit_status
    except (FileNotFoundError, ValueError) as err:
        return fail(err, args.debug)
    except KeyboardInterrupt:  # before the loop, which stops with a checkpoint instead
        print(file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":  # under torchrun, the main process reports
        val = f", val loss {result.final_val_loss:.4f}" if result.final_val_loss is not None else ""
        print(f"done: {result.iters} iterations{val}; {result.model_path}, {result.tokenizer_path}")
    return 0


def usage_error(error: object) -> int:
    """A flag that cannot work: one line, and argparse's exit status for bad usage."""
    print_error(error)
    return 2


def run() -> NoReturn:
    """``python -m tinystories.train``, as torchrun starts it on every process: :func:`main`,
    then :func:`~tinystories.training.exit_process` (a torchrun process skips the
    interpreter's shutdown)."""
    exit_process(main())


def resume_command(argv: Sequence[str]) -> str:
    """The command that continues this run: the same flags with ``--resume``, under
    torchrun with the same number of processes per node."""
    words = [*argv, "--resume"] if "--resume" not in argv else list(argv)
    if "LOCAL_WORLD_SIZE" not in os.environ:
        return shlex.join(["python", "-m", "tinystories.train", *words])
    per_node, world = os.environ["LOCAL_WORLD_SIZE"], os.environ["WORLD_SIZE"]
    command = shlex.join(["torchrun", f"--nproc_per_node={per_node}", "-m", "tinystories.train"])
    command += " " + shlex.join(words)
    if per_node != world:
        command += "  (with the same --nnodes and rendezvous options, on every node)"
    return command


if __name__ == "__main__":
    run()
