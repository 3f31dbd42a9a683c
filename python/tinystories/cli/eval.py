"""``python -m tinystories.eval``: mean loss per token of a model file, with the C engine.

Every story is BOS + its ids, the stories are concatenated, and the stream is
scored in non-overlapping windows of the model's context length (see
:mod:`tinystories.metrics`). Needs no torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..hub.cache import default_model
from ..metrics import evaluate_engine
from .common import add_debug_argument, fail


def main(argv: Sequence[str] | None = None, prog: str = "python -m tinystories.eval") -> int:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Mean loss per token of a model file on a corpus, with the C engine. "
        "Every story is BOS + its ids, the stories are concatenated, and the stream is "
        "scored in non-overlapping windows of the model's context length. Needs no torch.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        f"  {prog} --data valid-sample.txt          # the bundled model\n"
        f"  {prog} --model out/model.bin --tokenizer out/tokenizer.bin --data valid-sample.txt",
    )
    p.add_argument("--model", help="model.bin (v0, v1 or v2; default: the bundled model)")
    p.add_argument("--tokenizer", help="tokenizer.bin (default: the bundled model's)")
    p.add_argument("--data", required=True, help="corpus: .txt, JSON shard(s) or .tar.gz")
    p.add_argument("--threads", type=int, help="engine threads (default: all cores)")
    p.add_argument("--no-progress", action="store_true")
    add_debug_argument(p)
    args = p.parse_args(argv)
    if bool(args.model) != bool(args.tokenizer):
        p.error("--model and --tokenizer go together (neither: the bundled model)")
    try:
        if not args.model:
            args.model, args.tokenizer = (str(path) for path in default_model())
        result = evaluate_engine(
            args.model,
            args.tokenizer,
            args.data,
            n_threads=args.threads,
            progress=not args.no_progress,
        )
    except (OSError, ValueError) as err:
        return fail(err, args.debug)
    print(f"{result.n_docs} documents, {result.n_tokens} tokens, {result.n_windows} windows")
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
