"""``tinystories`` / ``python -m tinystories``: the command line.

One entry point with subcommands; ``generate`` is the default, so
``tinystories "Once upon a time"`` prints a story from the bundled model.
``train``, ``data``, ``export``, ``eval``, ``bench`` and ``volume`` run the
``python -m tinystories.X`` modules (each has its own ``--help``).
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from . import download, generate, serve
from .common import PROG, add_debug_argument, fail

# Subcommands run by a module's main(argv), with its own parser and --help.
DELEGATED = {
    "train": ("tinystories.cli.train", "train a model on TinyStories and export model.bin"),
    "data": ("tinystories.cli.data", "download a corpus, train a vocabulary, pretokenize"),
    "export": ("tinystories.cli.export", "a checkpoint -> model.bin (v0/v1/v2)"),
    "eval": ("tinystories.cli.eval", "mean loss per token of a model on a text file"),
    "bench": ("tinystories.bench", "tokens/s of the C engine, against llama2.c"),
    "volume": ("tinystories.cli.volume", "list, upload and download files on the Modal volume"),
    "convert": ("tinystories.cli.convert", "model.bin <-> Hugging Face / GGUF; v0/v1 -> v2"),
    "plot": ("tinystories.cli.plot", "loss curves of training runs (metrics.jsonl) as a PNG"),
}
COMMANDS = ("generate", "download", "serve", *DELEGATED)

EXAMPLES = """\
examples:
  tinystories "Once upon a time"                  a story from the bundled model
  tinystories "Lily" -t 0 --samples 3             greedy, three times
  tinystories generate "Lily" --json -s 42        JSON: text, tokens, tokens/s, seed, model
  tinystories download stories15M                 fetch a pretrained model into the cache
  tinystories serve --port 8000                   OpenAI's API and a playground on 127.0.0.1
  tinystories generate "Tom" --pretrained stories15M
  tinystories train --help                        each subcommand has its own help
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Small Llama-style story models: generate text with the C engine, "
        "download pretrained models, train your own. Without a subcommand the "
        "arguments go to `generate`.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tinystories {__version__}")
    add_debug_argument(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    generate.add_parser(commands)
    download.add_parser(commands)
    serve.add_parser(commands)
    for name, (_, help_text) in DELEGATED.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _replace_closed_stdout()
    debug, rest = _take_debug(list(sys.argv[1:] if argv is None else argv))
    if not rest:  # no arguments: a story from the bundled model
        rest = ["generate"]
    elif rest[0] not in COMMANDS and rest[0] not in ("-h", "--help", "--version"):
        rest = ["generate", *rest]  # generate is the default command
    if rest[0] in DELEGATED:
        module = importlib.import_module(DELEGATED[rest[0]][0])
        tool_argv = ["--debug", *rest[1:]] if debug else rest[1:]
        status = _run(lambda: module.main(tool_argv, prog=f"{PROG} {rest[0]}"), debug)
        if rest[0] == "train" and "RANK" in os.environ:
            # `torchrun -m tinystories train`: end as python -m tinystories.train does,
            # without the interpreter's shutdown (see training.exit_process)
            from ..training import exit_process

            exit_process(status)
        return status
    args = build_parser().parse_args(rest)
    return _run(lambda: args.run(args), debug)


def _take_debug(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether ``--debug`` is among the arguments before any ``--``, and the others."""
    end = argv.index("--") if "--" in argv else len(argv)
    head = [word for word in argv[:end] if word != "--debug"]
    return len(head) < end, head + argv[end:]


def _run(call: Callable[[], int | None], debug: bool) -> int:
    try:
        status = int(call() or 0)
        sys.stdout.flush()  # a reader gone before the last output shows here, not at exit
        return status
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader stopped early (`tinystories ... | head`): it has what it wanted, so
        # the command ends quietly with status 0. Python's exit flush goes to /dev/null
        # (the signal module's advice), or it would print "Exception ignored".
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (OSError, ValueError, TypeError, MemoryError, RuntimeError) as error:
        return fail(error, debug)


def _replace_closed_stdout() -> None:
    """A closed stdout (`tinystories ... >&-`: Python's sys.stdout is None, or its file
    descriptor is closed) becomes /dev/null, so the command runs and ends quietly, as
    with `> /dev/null`, instead of failing at its first write."""
    if sys.stdout is not None:
        try:
            os.fstat(sys.stdout.fileno())
            return
        except io.UnsupportedOperation:  # no descriptor (captured output): writes work
            return
        except (OSError, ValueError):  # the descriptor or the file object is closed
            pass
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # open until the process exits
