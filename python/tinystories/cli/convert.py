"""``tinystories convert SRC DST``: llama2.c model files (v0, v1, v2), Hugging Face
transformers folders and GGUF files into one another; or a model file into another
version (``--to v2`` quantizes an fp32 file to Q8_0)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..formats.convert import FORMATS, GGUF_TYPES, HF_TYPES, convert
from .common import add_debug_argument, fail

EXAMPLES = """\
examples:
  tinystories convert model.bin hf_out/ --to hf --tokenizer tok105.bin
  tinystories convert model.bin model.gguf --tokenizer tok105.bin --type q8_0
  tinystories convert hf_dir/ model.bin --to v2          # tokenizer.bin beside it
  tinystories convert model.gguf model.bin --to v2
  tinystories convert model.bin model_q80.bin --to v2    # quantize an existing file

without --to the destination decides: a directory (or a name ending in /): hf;
.gguf: gguf; .bin: v0. Outputs appear only once completely written.
"""


def main(argv: Sequence[str] | None = None, prog: str = "tinystories convert") -> int:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Converts llama2.c model files (v0, v1, v2), Hugging Face transformers "
        "folders and GGUF files into one another, or a model file into another version "
        "(--to v2 quantizes an fp32 file to Q8_0).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", help="model.bin (v0/v1/v2), a .gguf file or a Hugging Face folder")
    p.add_argument("dst", help="the file or folder to write")
    p.add_argument("--to", choices=FORMATS, help="output format (default: from DST's name)")
    p.add_argument(
        "--tokenizer",
        help="tokenizer.bin or sentencepiece .model (default: the source's own, or "
        "tokenizer.bin beside a model.bin)",
    )
    p.add_argument(
        "--type",
        dest="dtype",
        choices=sorted(set(HF_TYPES) | set(GGUF_TYPES)),
        help=f"weights of the output: gguf {'/'.join(GGUF_TYPES)}, hf {'/'.join(HF_TYPES)} "
        "(default f32)",
    )
    p.add_argument(
        "--group-size", type=int, help="Q8_0 group size of v2 output (default: the source's)"
    )
    add_debug_argument(p)
    args = p.parse_args(argv)
    try:
        written = convert(
            args.src,
            args.dst,
            to=args.to,
            tokenizer=args.tokenizer,
            dtype=args.dtype,
            group_size=args.group_size,
        )
    except (ImportError, OSError, ValueError) as err:  # a missing package, bad input
        return fail(err, args.debug)
    for path in written:
        print(f"wrote {path}")
    return 0
