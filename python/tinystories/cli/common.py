"""What several subcommands share: the sampling flags, ``--debug`` and the error line."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from ..inference.sampling import SamplingParams

SAMPLING_DEFAULTS = SamplingParams()
PROG = "tinystories"


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of :class:`SamplingParams`, with its defaults."""
    d = SAMPLING_DEFAULTS
    parser.add_argument(
        "--temperature",
        "-t",
        type=float,
        default=d.temperature,
        help=f"0 is greedy (default {d.temperature})",
    )
    parser.add_argument(
        "--top-p",
        "-p",
        type=float,
        default=d.top_p,
        help=f"nucleus sampling threshold in [0, 1]; 0 or 1 disables (default {d.top_p})",
    )
    parser.add_argument(
        "--top-k", type=int, default=d.top_k, help="keep the k most likely; 0 disables"
    )
    parser.add_argument(
        "--seed",
        "-s",
        type=int,
        default=d.seed,
        help="RNG seed (default: random); sample i uses +i",
    )
    parser.add_argument(
        "--max-new-tokens",
        "-n",
        type=int,
        default=d.max_new_tokens,
        help="tokens to sample (default: until BOS or the end of the context)",
    )


def sampling_options(args: argparse.Namespace, **overrides: object) -> dict:
    """The :class:`SamplingParams` keyword arguments the flags give."""
    options = {f.name: getattr(args, f.name) for f in fields(SamplingParams)}
    return {**options, **overrides}


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    # `tinystories` takes --debug out of its arguments wherever it is and hands it on
    # (to a delegated tool as its first flag); here it is documented, and parsed for
    # `python -m tinystories.X`.
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def print_error(message: object) -> None:
    """The line every command prints for a failure: ``tinystories: error: MESSAGE``."""
    print(f"{PROG}: error: {message}", file=sys.stderr)


def fail(error: BaseException, debug: bool) -> int:
    """Reports ``error`` from its ``except`` block: the one error line and exit status 1,
    or with ``--debug`` the exception again, for its traceback."""
    if debug:
        raise error
    print_error(error)
    return 1
