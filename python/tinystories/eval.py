"""``python -m tinystories.eval``: mean loss per token of a model file, with the C engine.

Every story is BOS + its ids, the stories are concatenated, and the stream is
scored in non-overlapping windows of the model's context length (see
:mod:`tinystories.training.evaluate`). Needs no torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tinystories.eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="model.bin (v0, v1 or v2)")
    p.add_argument("--tokenizer", required=True, help="tokenizer.bin")
    p.add_argument("--data", required=True, help="corpus: .txt, JSON shard(s) or .tar.gz")
    p.add_argument("--threads", type=int, help="engine threads (default: all cores)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    from .training.evaluate import evaluate_engine

    try:
        result = evaluate_engine(
            args.model,
            args.tokenizer,
            args.data,
            n_threads=args.threads,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{result.n_docs} documents, {result.n_tokens} tokens, {result.n_windows} windows")
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
