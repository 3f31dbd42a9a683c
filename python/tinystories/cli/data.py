"""``python -m tinystories.data``: download, vocab and pretokenize stages.

python -m tinystories.data download [tinystories|tok105|URL ...] [--dir data]
python -m tinystories.data vocab --data stories.txt --size 105 [--dir data]
python -m tinystories.data pretokenize --data stories.txt --size 105 [--dir data]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..formats.corpus import load_documents
from ..hub.download import DownloadError
from ..training import require
from ..training.config import DEFAULT_PRESET, PRESETS
from ..training.corpus import fetch
from ..training.shards import pretokenize
from ..training.vocab import train_vocab, vocab_paths
from .common import add_debug_argument, fail

DEFAULT_VOCAB_SIZE = PRESETS[DEFAULT_PRESET].vocab_size


def build_parser(prog: str = "python -m tinystories.data") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="The data stages of training, one at a time: download a corpus, train "
        "a vocabulary, pretokenize.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"""examples:
  {prog} download [tinystories|tok105|URL ...] [--dir data]
  {prog} vocab --data stories.txt --size 105 [--dir data]
  {prog} pretokenize --data stories.txt --size 105 [--dir data]
""",
    )
    add_debug_argument(p)
    sub = p.add_subparsers(dest="stage", required=True)
    d = sub.add_parser("download", help="fetch TinyStories (resumable, size-checked)")
    d.add_argument(
        "what",
        nargs="*",
        default=["tinystories"],
        help="tinystories (official JSON shards), tok105 (the seed's pretokenized "
        "archive), tok105.model, or a URL; a local file is copied",
    )
    d.add_argument("--dir", default="data", help="destination directory (default: data)")
    d.add_argument("--no-unpack", action="store_true", help="keep archives packed")
    for name, help_text in (
        ("vocab", "train a sentencepiece BPE vocabulary"),
        ("pretokenize", "write uint16 shards, BOS before every story"),
    ):
        s = sub.add_parser(name, help=help_text)
        s.add_argument("--data", required=True, help="corpus: .txt, JSON shard(s), .tar.gz, dir")
        s.add_argument(
            "--size",
            type=int,
            default=DEFAULT_VOCAB_SIZE,
            help=f"vocabulary size (default: {DEFAULT_VOCAB_SIZE})",
        )
        s.add_argument("--dir", default="data", help="where tokN.model/.bin and tokN/ go")
        if name == "vocab":
            s.add_argument("--byte-fallback", choices=["auto", "on", "off"], default="auto")
        else:
            s.add_argument("--split", default="train", help="shard name prefix (default train)")
            s.add_argument("--workers", type=int, help="processes (default: all cores)")
    return p


def main(argv: Sequence[str] | None = None, prog: str = "python -m tinystories.data") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.stage != "download":
        require(("sentencepiece", "tqdm"), what=f"data {args.stage}")
    try:
        if args.stage == "download":
            fetch(args.what, Path(args.dir), unpack_archives=not args.no_unpack)
        elif args.stage == "vocab":
            docs = load_documents(args.data)
            fallback = {"auto": None, "on": True, "off": False}[args.byte_fallback]
            model, bin_path = train_vocab(docs, args.size, args.dir, byte_fallback=fallback)
            print(f"wrote {model} and {bin_path}")
        else:
            model, _ = vocab_paths(args.dir, args.size)
            if not model.exists():
                raise FileNotFoundError(f"no vocabulary {model}: run the vocab stage first")
            docs = load_documents(args.data)
            shards = pretokenize(
                docs, model, Path(args.dir) / f"tok{args.size}", args.split, workers=args.workers
            )
            print(f"wrote {len(shards.paths)} shard(s), {shards.n_tokens:,} tokens")
    except (FileNotFoundError, ValueError, DownloadError) as err:
        return fail(err, args.debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
