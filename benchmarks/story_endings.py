"""Do the model's stories end by themselves? (the default-model issue's targets)

    python benchmarks/story_endings.py [--model M --tokenizer T] [--samples 100]

Samples "Once upon a time" at temperature 0.8, top-p 0.9, seeds 1..N, with no length
limit (max_new_tokens=None: until BOS or the end of the context), and prints how many end
by themselves (the model samples BOS: finish_reason "stop") and how many of those end on
the end of a sentence, with the first few endings. Writes JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from tinystories import Generator

SENTENCE_END = re.compile(r"""[.!?]["')\]]*\s*$""")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: the bundled model)")
    parser.add_argument("--tokenizer", help="its tokenizer.bin")
    parser.add_argument("--prompt", default="Once upon a time")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if bool(args.model) != bool(args.tokenizer):
        parser.error("--model and --tokenizer go together")
    generator = Generator(args.model, args.tokenizer)
    completions = generator.samples(
        args.prompt, args.samples, seed=1, temperature=0.8, top_p=0.9, max_batch=32
    )
    ended = [c for c in completions if c.finish_reason == "stop"]
    on_sentence = [c for c in ended if SENTENCE_END.search(c.text.replace("<unk>", "\n"))]
    lengths = sorted(len(c.token_ids) for c in completions)
    print(f"model: {generator.model_path} (seq_len {generator.config.seq_len})")
    print(f"{len(ended)} of {len(completions)} stories end by themselves (BOS sampled); "
          f"{len(on_sentence)} of those on the end of a sentence")  # fmt: skip
    print(f"generated tokens: median {lengths[len(lengths) // 2]}, max {lengths[-1]}")
    for c in ended[:3]:
        print(f"  seed {c.seed}: ...{c.text[-70:]!r}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": generator.model_path, "samples": len(completions), "ended": len(ended),
            "ended_on_sentence": len(on_sentence), "lengths": lengths,
        }, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
