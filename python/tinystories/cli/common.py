"""What several subcommands share: the sampling flags, ``--debug`` and the error line."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from ..inference.sampling import SamplingParams

SAMPLING_DEFAULTS = SamplingParams()
PROG = "tinystories"
# Without -n, the most tokens a story may take: TinyStories stories run to about 800
# tok105 tokens, and few past 2,000.
WHOLE_STORY_TOKENS = 4096


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
        help="tokens to sample, stopping at the end of the context unless --context-shift "
        "(default: a whole story, see --context-shift)",
    )
    parser.add_argument(
        "--min-p",
        type=float,
        default=d.min_p,
        help="keep tokens at least this times as likely as the top one; 1 is greedy; "
        "0 disables (default)",
    )
    parser.add_argument(
        "--repetition-penalty",
        type=float,
        default=d.repetition_penalty,
        help="Hugging Face's, over the prompt and the generated tokens; 1 disables (default)",
    )
    parser.add_argument(
        "--presence-penalty",
        type=float,
        default=d.presence_penalty,
        help="OpenAI's, in [-2, 2], over the generated tokens (default 0)",
    )
    parser.add_argument(
        "--frequency-penalty",
        type=float,
        default=d.frequency_penalty,
        help="OpenAI's, in [-2, 2], over the generated tokens (default 0)",
    )
    parser.add_argument(
        "--stop",
        action="append",
        default=None,
        metavar="TEXT",
        help="stop before this text (repeatable; not printed)",
    )
    parser.add_argument(
        "--stop-token-id",
        dest="stop_token_ids",
        type=int,
        action="append",
        default=None,
        metavar="ID",
        help=f"sampling this id ends the story (repeatable; default {list(d.stop_token_ids)}: "
        "BOS; give it too to keep it)",
    )
    parser.add_argument(
        "--context-shift",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="past the context, drop the oldest tokens (keeping BOS) and go on (default: "
        f"on without -n, which then means a whole story: until the model ends it, at "
        f"most {WHOLE_STORY_TOKENS:,} tokens)",
    )


def sampling_options(args: argparse.Namespace, **overrides: object) -> dict:
    """The :class:`SamplingParams` keyword arguments the flags give. Without ``-n`` the
    command tells a whole story: until the model samples BOS, past the end of a short
    context with a context shift, at most WHOLE_STORY_TOKENS."""
    options = {f.name: getattr(args, f.name) for f in fields(SamplingParams)}
    if options["context_shift"] is None:
        options["context_shift"] = options["max_new_tokens"] is None
    if options["context_shift"] and options["max_new_tokens"] is None:
        options["max_new_tokens"] = WHOLE_STORY_TOKENS
    if options["stop_token_ids"] is None:  # append's default stays None: the params' default
        options["stop_token_ids"] = SAMPLING_DEFAULTS.stop_token_ids
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
