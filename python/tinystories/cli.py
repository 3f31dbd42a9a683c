"""``python -m tinystories`` / ``tinystories``: the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__


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
    parser.add_argument("--seed", "-s", type=int, default=None, help="RNG seed (default: clock)")
    parser.add_argument(
        "--max-new-tokens",
        "-n",
        type=int,
        default=None,
        help="tokens to sample (default: until BOS or the end of the context)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinystories",
        description="Small Llama-style story models: generate text with the C engine.",
    )
    parser.add_argument("--version", action="version", version=f"tinystories {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    generate = commands.add_parser(
        "generate",
        help="stream a story from a prompt",
        description="Stream a completion of PROMPT to stdout.",
        epilog="example: tinystories generate 'Once upon a time' "
        "--model model.bin --tokenizer tok105.bin -t 0.8 -s 42",
    )
    generate.add_argument("prompt", nargs="?", default="", help="text to continue (default: empty)")
    generate.add_argument("--model", "-m", help="llama2.c model file (v0/v1/v2)")
    generate.add_argument(
        "--tokenizer", "-z", help="llama2.c tokenizer.bin (--modal: on the volume)"
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
    _add_sampling_arguments(generate)
    generate.set_defaults(run=_generate)
    return parser


def _generate(args: argparse.Namespace) -> int:
    if args.modal:
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
        return modal_app.run_sampling(
            settings, args.model_path, args.tokenizer, args.prompt, options
        )
    if not (args.model and args.tokenizer):
        raise ValueError("generate needs --model and --tokenizer (or --modal)")
    from .generator import Generator

    generator = Generator(args.model, args.tokenizer, n_threads=args.n_threads)
    pieces = generator.stream(  # checks the arguments before anything is printed
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
    )
    out = sys.stdout
    out.write(args.prompt)
    out.flush()
    for piece in pieces:
        out.write(piece)
        out.flush()
    out.write("\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except (OSError, ValueError, TypeError, MemoryError) as error:
        if args.debug:
            raise
        print(f"tinystories: error: {error}", file=sys.stderr)
        return 1
