"""``tinystories generate PROMPT`` (the default command): stream a story."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from ..formats.constants import UNK
from ..inference import Generator, SamplingParams
from ..inference.sampling import MAX_SEED
from ..modal.settings import DEFAULT_VOLUME
from .common import add_debug_argument, add_sampling_arguments, sampling_options

FAN_OUT_BATCH = 32  # --modal --samples: samples per container unless --containers says

GENERATE_EXAMPLES = """\
examples:
  tinystories generate "Once upon a time"
  tinystories "Once upon a time" -t 0.8 -s 42 -n 100
  tinystories generate "Lily" --samples 3 --json
  tinystories generate -f prompt.txt
  echo "Once upon a time" | tinystories -f -
  tinystories generate "Tom" --pretrained stories15M
  tinystories generate "Tom" --model out/model.bin --tokenizer out/tokenizer.bin

a prompt that names a subcommand (a story about "train") goes after "generate"
or after a "--", which ends the flags (as for a prompt that starts with "-"):
  tinystories generate train
  tinystories -s 42 -- train
"""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    generate = commands.add_parser(
        "generate",
        help="stream a story from a prompt (the default command)",
        description="Stream a completion of PROMPT to stdout, with the bundled model "
        "unless --model/--tokenizer or --pretrained say otherwise.",
        epilog=GENERATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generate.add_argument("prompt", nargs="?", default="", help="text to continue (default: empty)")
    generate.add_argument(
        "--file",
        "-f",
        metavar="FILE",
        help="read the prompt from FILE (-: stdin), UTF-8, less its final newline",
    )
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
        "--samples",
        type=int,
        default=1,
        metavar="N",
        help="samples to draw (default 1); sample i uses --seed + i",
    )
    generate.add_argument(
        "--n",
        dest="samples",
        type=int,
        default=argparse.SUPPRESS,
        action=_DeprecatedSamples,
        help=argparse.SUPPRESS,
    )
    generate.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per sample: text, tokens, tokens_per_s, finish_reason, seed, model",
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
    generate.add_argument("--volume", default=DEFAULT_VOLUME, help="--modal: the volume")
    generate.add_argument(
        "--containers",
        type=int,
        default=None,
        help=f"--modal --samples N: containers to split the samples over "
        f"(default: one per {FAN_OUT_BATCH})",
    )
    generate.add_argument(
        "--dry-run", action="store_true", help="--modal: print the plan and the split, run nothing"
    )
    generate.add_argument(
        "--n-threads",
        type=int,
        default=None,
        metavar="N",
        help="engine threads (default: one per core, up to 8)",
    )
    add_debug_argument(generate)
    add_sampling_arguments(generate)
    generate.set_defaults(run=run)

    return generate


class _DeprecatedSamples(argparse.Action):
    """``--n N``, the old name of ``--samples N``: beside ``-n`` (max new tokens) it
    confused, so it still works but says so on stderr."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(
            f"tinystories: warning: {option_string} is deprecated, use --samples "
            "(-n is --max-new-tokens)",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


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


def load_generator(args: argparse.Namespace) -> Generator:
    """The Generator the flags name: --pretrained, --model/--tokenizer, or the bundled one."""
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


def read_prompt(args: argparse.Namespace) -> str:
    """PROMPT, or the text of --file (``-``: stdin) less one final line break, so that
    ``echo Lily | tinystories -f -`` continues "Lily" as ``tinystories Lily`` does."""
    if args.file is None:
        return args.prompt
    if args.prompt:
        raise ValueError("give a PROMPT or --file, not both")
    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{args.file}: the prompt is not UTF-8 ({error})") from None
    return text.removesuffix("\n").removesuffix("\r")


def run(args: argparse.Namespace) -> int:
    args.prompt = read_prompt(args)
    if args.modal:
        return run_modal(args)
    if args.samples < 1:
        raise ValueError(f"--samples must be at least 1, got {args.samples}")
    seed = args.seed if args.seed is not None else random.randrange(1, 2**63)
    if seed + args.samples - 1 > MAX_SEED:  # checked here, before any sample is printed
        raise ValueError(
            f"--seed {seed} with --samples {args.samples}: sample i uses seed + i, and the "
            f"last seed, {seed + args.samples - 1}, is above 2**64 - 1"
        )
    generator = load_generator(args)
    tokenizer = generator.tokenizer
    unk_as_paragraph = (
        not args.raw and tokenizer.piece(UNK) == b"<unk>" and not tokenizer.has_newline()
    )
    model_name = args.pretrained or (args.model if args.model else "default")
    out = sys.stdout
    # the progress line shares the terminal only when stdout does not stream there
    progress = _Progress(args.samples, enabled=args.json or not sys.stdout.isatty())
    for i in range(args.samples):
        sample_seed = seed + i
        # start() checks the arguments before anything is printed
        generation = generator.start(args.prompt, **sampling_options(args, seed=sample_seed))
        if i and not args.json:
            out.write("\n")
        if not args.json:
            out.write(args.prompt)
            out.flush()
        start = time.perf_counter()
        pieces: list[str] = []
        tokens = 0
        for token, text in generation.tokens():
            if token >= 0:
                tokens += 1
            if unk_as_paragraph and token == UNK:  # tok105 has no newline piece
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
                "finish_reason": generation.finish_reason,
                "seed": sample_seed,
                "model": model_name,
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            out.write("\n")
        out.flush()
    return 0


def run_modal(args: argparse.Namespace) -> int:
    """``generate --modal``: the same sampling in a Modal container, from the volume; with
    ``--samples N`` > 1, the samples fanned out over containers as JSON lines."""
    from ..modal.check import require_modal

    fan_out = args.samples > 1 or args.dry_run
    require_modal("generate --modal", credentials=not args.dry_run, dry_run=fan_out)
    from ..modal.app import run_fanout, run_sampling
    from ..modal.plan import split_seeds
    from ..modal.settings import Settings, find_source

    settings = Settings(volume=args.volume, source=find_source())
    if not fan_out:
        return run_sampling(
            settings, args.model_path, args.tokenizer, args.prompt, sampling_options(args)
        )
    seed = args.seed if args.seed is not None else random.randrange(1, 2**63)
    if seed + args.samples - 1 > MAX_SEED:
        raise ValueError(f"--seed {seed} with {args.samples} samples would pass 2**64 - 1")
    containers = args.containers or -(-args.samples // FAN_OUT_BATCH)
    options = sampling_options(args)
    del options["seed"]  # each sample's own: seed + i
    SamplingParams(**options)  # checked here, before any container starts
    runs = split_seeds(seed, args.samples, containers)
    return run_fanout(
        settings, args.model_path, args.tokenizer, args.prompt, options, runs,
        dry_run=args.dry_run,
    )  # fmt: skip
