"""``python -m tinystories.export ckpt.pt``: a checkpoint to model.bin + tokenizer.bin."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..formats.constants import MAX_GROUP_SIZE
from ..formats.llama2c import VERSIONS
from ..training import require
from .common import add_debug_argument, fail


def main(argv: Sequence[str] | None = None, prog: str = "python -m tinystories.export") -> int:
    p = argparse.ArgumentParser(
        prog=prog,
        description="A training checkpoint to a model file, its tokenizer.bin copied beside it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        f"  {prog} out/ckpt.pt                      # out/model.bin (v0)\n"
        f"  {prog} out/ckpt.pt --format v2 --out out/model_q80.bin\n",
    )
    p.add_argument("checkpoint", help="the ckpt.pt that `tinystories train` wrote")
    p.add_argument("--out", help="model file to write (default: model.bin beside the checkpoint)")
    p.add_argument(
        "--format",
        default="v0",
        choices=list(VERSIONS),
        help="v0: llama2.c legacy fp32 (default); v1: fp32 with header; v2: Q8_0",
    )
    p.add_argument(
        "--group-size",
        type=int,
        help=f"Q8_0 group size for v2 (default: the largest power of two up to {MAX_GROUP_SIZE} "
        "dividing dim and hidden_dim, so that no weight is left out)",
    )
    p.add_argument("--tokenizer", help="tokenizer.bin to copy (default: the checkpoint's)")
    add_debug_argument(p)
    args = p.parse_args(argv)
    require(("torch",), what="export")
    from ..training.checkpoint import export_checkpoint

    try:
        model_path, tokenizer_path = export_checkpoint(
            args.checkpoint,
            args.out,
            fmt=args.format,
            tokenizer=args.tokenizer,
            group_size=args.group_size,
        )
    except (FileNotFoundError, ValueError) as err:
        return fail(err, args.debug)
    print(f"wrote {model_path}" + (f" and {tokenizer_path}" if tokenizer_path else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
