"""``tinystories`` / ``python -m tinystories``: the command line.

One entry point with subcommands; ``generate`` is the default, so
``tinystories "Once upon a time"`` prints a story from the bundled model.
``train``, ``data``, ``export``, ``eval``, ``bench`` and ``volume`` run the
``python -m tinystories.X`` modules (each has its own ``--help``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import sys
import time
from collections.abc import Sequence

from . import __version__

# Subcommands run by a module's main(argv), with its own parser and --help.
DELEGATED = {
    "train": ("tinystories.train", "train a model on TinyStories and export model.bin"),
    "data": ("tinystories.data", "download a corpus, train a vocabulary, pretokenize"),
    "export": ("tinystories.export", "a checkpoint -> model.bin (v0/v1/v2)"),
    "eval": ("tinystories.eval", "mean loss per token of a model on a text file"),
    "bench": ("tinystories.bench", "tokens/s of the C engine, against llama2.c"),
    "volume": ("tinystories.volume", "list, upload and download files on the Modal volume"),
}
COMMANDS = ("generate", "download", *DELEGATED)

EXAMPLES = """\
examples:
  tinystories "Once upon a time"                  a story from the bundled model
  tinystories "Once upon a time" -t 0 --n 3       greedy, three times
  tinystories generate "Lily" --json -s 42        JSON: text, tokens, tokens/s, seed, model
  tinystories download stories15M                 fetch a pretrained model into the cache
  tinystories generate "Tom" --pretrained stories15M
  tinystories train --help                        each subcommand has its own help
"""

GENERATE_EXAMPLES = """\
examples:
  tinystories generate "Once upon a time"
  tinystories "Once upon a time" -t 0.8 -s 42 -n 100
  tinystories generate "Lily" --n 3 --json
  tinystories generate "Tom" --pretrained stories15M
  tinystories generate "Tom" --model out/model.bin --tokenizer out/tokenizer.bin
"""

DOWNLOAD_EXAMPLES = """\
examples:
  tinystories download --list
  tinystories download stories15M
  tinystories download stories260K --cache-dir ./models
  TINYSTORIES_MIRROR=http://127.0.0.1:8000 tinystories download stories260K

files go to $TINYSTORIES_CACHE or ~/.cache/tinystories; an interrupted download
resumes; every file is checked (size, header) before use.
"""


def _add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--temperature", "-t", type=float, default=1.0, help="0 is greedy (default 1.0)"
    )
    parser.add_argument(
        "--top-p",
        "-p",
        type=float,
        default=0.9,
        help="nucleus sampling threshold in [0, 1]; 0 or 1 disables (default 0.9)",
    )
    parser.add_argument("--top-k", type=int, default=0, help="keep the k most likely; 0 disables")
    parser.add_argument(
        "--seed", "-s", type=int, default=None, help="RNG seed (default: random); sample i uses +i"
    )
    parser.add_argument(
        "--max-new-tokens",
        "-n",
        type=int,
        default=None,
        help="tokens to sample (default: until BOS or the end of the context)",
    )


def _add_debug_argument(parser: argparse.ArgumentParser) -> None:
    # also after the subcommand; SUPPRESS keeps a --debug given before it
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )


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

    generate = commands.add_parser(
        "generate",
        help="stream a story from a prompt (the default command)",
        description="Stream a completion of PROMPT to stdout, with the bundled model "
        "unless --model/--tokenizer or --pretrained say otherwise.",
        epilog=GENERATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generate.add_argument("prompt", nargs="?", default="", help="text to continue (default: empty)")
    generate.add_argument("--model", "-m", help="llama2.c model file (v0/v1/v2)")
    generate.add_argument(
        "--tokenizer", "-z", help="llama2.c tokenizer.bin (--modal: on the volume)"
    )
    generate.add_argument(
        "--pretrained",
        metavar="NAME",
        help="a registry model (see `tinystories download --list`), downloaded when missing",
    )
    generate.add_argument(
        "--offline", action="store_true", help="--pretrained: use the cache only, no network"
    )
    generate.add_argument(
        "--n", dest="samples", type=int, default=1, metavar="N", help="samples to draw (default 1)"
    )
    generate.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per sample: text, tokens, tokens_per_s, seed, model",
    )
    generate.add_argument(
        "--raw",
        action="store_true",
        help="print <unk> as is (by default it is a paragraph break when the vocabulary "
        "has no newline, as in tok105)",
    )
    generate.add_argument(
        "--modal", action="store_true", help="sample in a Modal container from the volume"
    )
    generate.add_argument(
        "--model-path",
        default="out/model.bin",
        help="--modal: model on the volume (default: out/model.bin, its tokenizer.bin beside)",
    )
    generate.add_argument("--volume", default="tinystories-volume", help="--modal: the volume")
    generate.add_argument("--n-threads", type=int, default=None)
    _add_debug_argument(generate)
    _add_sampling_arguments(generate)
    generate.set_defaults(run=_generate)

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
    _add_debug_argument(download)
    download.set_defaults(run=_download)

    for name, (_, help_text) in DELEGATED.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


# --------------------------------------------------------------------- generate


def _has_newline(tokenizer) -> bool:
    """Whether any ordinary piece (not <unk>, BOS, EOS) can print a newline."""
    return any(
        b"\n" in (piece := tokenizer.piece(i)) or piece == b"<0x0A>"
        for i in range(3, tokenizer.vocab_size)
    )


class _Progress:
    """``sample i/n`` on stderr, only when stderr is a terminal."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and sys.stderr.isatty()

    def show(self, i: int, tokens: int) -> None:
        if self.enabled:
            sys.stderr.write(f"\r\x1b[Ksample {i}/{self.total} ({tokens} tokens)")
            sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _load_generator(args: argparse.Namespace):
    from .generator import Generator

    if args.pretrained:
        if args.model or args.tokenizer:
            raise ValueError("--pretrained and --model/--tokenizer exclude each other")
        return Generator.from_pretrained(
            args.pretrained,
            offline=args.offline,
            progress=sys.stderr.isatty(),
            n_threads=args.n_threads,
        )
    if bool(args.model) != bool(args.tokenizer):
        raise ValueError("--model and --tokenizer go together (neither: the bundled model)")
    return Generator(args.model, args.tokenizer, n_threads=args.n_threads)


def _generate(args: argparse.Namespace) -> int:
    if args.modal:
        return _generate_modal(args)
    if args.samples < 1:
        raise ValueError(f"--n must be at least 1, got {args.samples}")
    generator = _load_generator(args)
    tokenizer = generator.tokenizer
    unk_as_paragraph = (
        not args.raw and tokenizer.piece(0) == b"<unk>" and not _has_newline(tokenizer)
    )
    seed = args.seed if args.seed is not None else random.randrange(1, 2**63)
    model_name = args.pretrained or (args.model if args.model else "default")
    out = sys.stdout
    # the progress line shares the terminal only when stdout does not stream there
    progress = _Progress(args.samples, enabled=args.json or not sys.stdout.isatty())
    for i in range(args.samples):
        sample_seed = seed + i
        events = generator._stream_tokens(  # checks the arguments before anything is printed
            args.prompt,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            seed=sample_seed,
        )
        if i and not args.json:
            out.write("\n")
        if not args.json:
            out.write(args.prompt)
            out.flush()
        start = time.perf_counter()
        pieces: list[str] = []
        tokens = 0
        for token, text in events:
            if token >= 0:
                tokens += 1
            if unk_as_paragraph and token == 0:  # <unk>: tok105 has no newline piece
                text = "\n\n"
            pieces.append(text)
            if tokens % 16 == 0:
                progress.show(i + 1, tokens)
            if text and not args.json:
                out.write(text)
                out.flush()
        elapsed = time.perf_counter() - start
        progress.clear()
        if args.json:
            record = {
                "prompt": args.prompt,
                "text": "".join(pieces),
                "tokens": tokens,
                "tokens_per_s": round(tokens / elapsed, 1) if elapsed > 0 else None,
                "seed": sample_seed,
                "model": model_name,
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            out.write("\n")
        out.flush()
    return 0


def _generate_modal(args: argparse.Namespace) -> int:
    from .modal_check import require_modal

    require_modal("generate --modal")
    from . import modal_app

    options = dict(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
    )
    settings = modal_app.Settings(volume=args.volume, source=modal_app.find_source())
    return modal_app.run_sampling(settings, args.model_path, args.tokenizer, args.prompt, options)


# --------------------------------------------------------------------- download


def _download(args: argparse.Namespace) -> int:
    from . import pretrained

    if args.list:
        root = pretrained.cache_root(args.cache_dir)
        print(f"{'default':12} the bundled model (no download)")
        for entry in pretrained.REGISTRY.values():
            cached = all((root / f.path).exists() for f in entry.files)
            print(f"{entry.name:12} {entry.description}{'  [cached]' if cached else ''}")
        print(f"cache: {root}")
        return 0
    if not args.name:
        raise ValueError("download needs a NAME (or --list)")
    paths = pretrained.fetch(
        args.name,
        cache_dir=args.cache_dir,
        offline=args.offline,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    for path in paths:
        print(path)
    return 0


# ------------------------------------------------------------------------- main


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


def _run(call, debug: bool) -> int:
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
