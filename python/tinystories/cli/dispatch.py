"""``tinystories`` / ``python -m tinystories``: the command line.

One entry point with subcommands; ``generate`` is the default, so
``tinystories "Once upon a time"`` prints a story from the bundled model.
``train``, ``data``, ``export``, ``eval``, ``bench`` and ``volume`` run the
``python -m tinystories.X`` modules (each has its own ``--help``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from . import download, generate, serve

# Subcommands run by a module's main(argv), with its own parser and --help.
DELEGATED = {
    "train": ("tinystories.cli.train", "train a model on TinyStories and export model.bin"),
    "data": ("tinystories.cli.data", "download a corpus, train a vocabulary, pretokenize"),
    "export": ("tinystories.cli.export", "a checkpoint -> model.bin (v0/v1/v2)"),
    "eval": ("tinystories.cli.eval", "mean loss per token of a model on a text file"),
    "bench": ("tinystories.bench", "tokens/s of the C engine, against llama2.c"),
    "volume": ("tinystories.cli.volume", "list, upload and download files on the Modal volume"),
    "plot": ("tinystories.cli.plot", "loss curves of training runs (metrics.jsonl) as a PNG"),
}
COMMANDS = ("generate", "download", "serve", *DELEGATED)

EXAMPLES = """\
examples:
  tinystories "Once upon a time"                  a story from the bundled model
  tinystories "Once upon a time" -t 0 --n 3       greedy, three times
  tinystories generate "Lily" --json -s 42        JSON: text, tokens, tokens/s, seed, model
  tinystories download stories15M                 fetch a pretrained model into the cache
  tinystories serve --port 8000                   OpenAI's API and a playground on 127.0.0.1
  tinystories generate "Tom" --pretrained stories15M
  tinystories train --help                        each subcommand has its own help
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinystories",
        description="Small Llama-style story models: generate text with the C engine, "
        "download pretrained models, train your own. Without a subcommand the "
        "arguments go to `generate`.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tinystories {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    generate.add_parser(commands)
    download.add_parser(commands)
    serve.add_parser(commands)
    for name, (_, help_text) in DELEGATED.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    head = 0
    while head < len(argv) and argv[head] == "--debug":
        head += 1
    debug, rest = head > 0, argv[head:]
    if not rest:  # no arguments: a story from the bundled model
        rest = ["generate"]
    elif rest[0] not in COMMANDS and rest[0] not in ("-h", "--help", "--version"):
        rest = ["generate", *rest]  # generate is the default command
    if rest[0] in DELEGATED:
        module = importlib.import_module(DELEGATED[rest[0]][0])
        return _run(lambda: module.main(rest[1:]), debug)
    args = build_parser().parse_args(argv[:head] + rest)
    return _run(lambda: args.run(args), args.debug)


def _run(call: Callable[[], int | None], debug: bool) -> int:
    try:
        return int(call() or 0)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `tinystories ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (OSError, ValueError, TypeError, MemoryError, RuntimeError) as error:
        if debug:
            raise
        print(f"tinystories: error: {error}", file=sys.stderr)
        return 1
