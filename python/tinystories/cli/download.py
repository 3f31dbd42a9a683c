"""``tinystories download NAME`` / ``--list``: fetch a pretrained model into the cache."""

from __future__ import annotations

import argparse
import sys

from ..hub import cache, registry
from .common import add_debug_argument

DOWNLOAD_EXAMPLES = """\
examples:
  tinystories download --list
  tinystories download stories15M
  tinystories download stories260K --cache-dir ./models
  TINYSTORIES_MIRROR=http://127.0.0.1:8000 tinystories download stories260K

files go to $TINYSTORIES_CACHE or ~/.cache/tinystories; an interrupted download
resumes; every file is checked (size, header) before use.
"""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    download = commands.add_parser(
        "download",
        help="download a pretrained model into the cache",
        description="Download a pretrained llama2.c model and its tokenizer into the cache.",
        epilog=DOWNLOAD_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    download.add_argument("name", nargs="?", help="registry name (see --list)")
    download.add_argument("--list", action="store_true", help="list the registry and exit")
    download.add_argument("--cache-dir", help="cache (default: $TINYSTORIES_CACHE or ~/.cache)")
    download.add_argument("--offline", action="store_true", help="only check the cache")
    download.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_argument(download)
    download.set_defaults(run=run)

    return download


def run(args: argparse.Namespace) -> int:
    if args.list:
        root = cache.cache_root(args.cache_dir)
        print(f"{registry.DEFAULT_NAME:12} the bundled model (no download)")
        for entry in registry.REGISTRY.values():
            cached = all((root / f.path).exists() for f in entry.files)
            print(f"{entry.name:12} {entry.description}{'  [cached]' if cached else ''}")
        print(f"cache: {root}")
        return 0
    if not args.name:
        raise ValueError("download needs a NAME (or --list)")
    if args.name == registry.DEFAULT_NAME:  # its paths below, as for a downloaded model
        print(f"{args.name} is the bundled model: it needs no download", file=sys.stderr)
    paths = cache.fetch(
        args.name,
        cache_dir=args.cache_dir,
        offline=args.offline,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    for path in paths:
        print(path)
    return 0
