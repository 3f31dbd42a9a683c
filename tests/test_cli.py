"""The tinystories command line as a user meets it: closed output, --debug, error lines,
help, the generate flags."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from support.cli import COMMAND, cli, env_without_modal_credentials
from tinystories import training
from tinystories.cli import dispatch

# ------------------------------------------------------------------ output


def test_closed_stdout_ends_quietly():
    """`tinystories ... >&-`: the command runs as with > /dev/null (status 0, nothing on
    stderr); a failure is still reported."""
    shell = ["sh", "-c", '"$@" >&-', "sh", *COMMAND]
    for words in (["Lily", "-n", "20"], ["Lily", "--json", "-n", "5"], ["download", "--list"]):
        done = subprocess.run(
            [*shell, *words], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
        assert (done.returncode, done.stderr) == (0, ""), words
    failed = subprocess.run(
        [*shell, "Lily", "--model", "nope.bin", "--tokenizer", "nope.tok"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1 and failed.stderr.startswith("tinystories: error: nope.tok")


def test_reader_that_stops_early_ends_quietly():
    """`tinystories ... | head -c 10`: status 0, no traceback, no "Exception ignored"."""
    for words, read in (
        (["Lily", "--samples", "1000", "-n", "100"], 10),
        (["download", "--list"], 0),
    ):
        reader = subprocess.Popen(
            [*COMMAND, *words],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        head = reader.stdout.read(read)  # far less than the pipe holds, then hang up
        reader.stdout.close()
        stderr = reader.stderr.read()
        assert reader.wait(timeout=120) == 0, stderr
        assert stderr == b"" and len(head) == read, words


# ------------------------------------------------------------------ errors and --debug

# A failing call of every subcommand and delegated tool, each quick and offline.
FAILING = {
    "generate": ["generate", "x", "--model", "nope.bin", "--tokenizer", "nope.tok"],
    "download": ["download", "nope"],
    "train": ["train", "--data", "nope.txt", "--max-iters", "1"],
    "data": ["data", "vocab", "--data", "nope.txt"],
    "export": ["export", "nope.pt"],
    "eval": ["eval", "--data", "nope.txt"],
    "bench": ["bench", "--models", "nope", "--quick"],
    "volume": ["volume", "ls"],  # no Modal credentials
}
# bench and volume end with a message (SystemExit), which has no traceback to show
RAISES = {"generate", "download", "train", "data", "export", "eval"}


@pytest.mark.parametrize("command", FAILING)
def test_every_command_fails_with_one_error_line(command, tmp_path):
    env = env_without_modal_credentials(tmp_path)
    done = cli(*FAILING[command], cwd=tmp_path, env=env)
    assert (done.returncode, done.stdout) == (1, ""), done.stderr
    assert done.stderr.startswith("tinystories: error: ") and done.stderr.count("\n") == 1
    # --debug before the subcommand or after it, delegated tools included
    words = FAILING[command]
    for debug in (["--debug", *words], [*words, "--debug"]):
        shown = cli(*debug, cwd=tmp_path, env=env)
        assert shown.returncode == 1, shown.stderr
        if command in RAISES:
            assert shown.stderr.startswith("Traceback"), debug
        else:
            assert shown.stderr == done.stderr, debug


def test_usage_errors_start_with_tinystories(tmp_path):
    """Bad flags: argparse's usage, then `tinystories[ COMMAND]: error: ...`, status 2
    (argparse reports an unknown flag of generate or download from the top parser)."""
    for command in dispatch.COMMANDS:
        done = cli(command, "--no-such-flag", cwd=tmp_path)
        assert done.returncode == 2, (command, done.stderr)
        usage, *_, last = done.stderr.splitlines()
        assert usage.startswith("usage: tinystories "), done.stderr
        assert re.match(f"tinystories( {command})?: error: ", last), done.stderr
    value = cli("generate", "--top-k", "x")
    assert value.stderr.splitlines()[-1] == (
        "tinystories generate: error: argument --top-k: invalid int value: 'x'"
    )
    shapes = cli("bench", "--shapes", "nope", cwd=tmp_path)
    assert shapes.returncode == 2 and "tinystories bench: error: unknown shape(s) nope" in (
        shapes.stderr
    )


# ------------------------------------------------------------------ help

HELP_PAGES = [
    [],
    *([command] for command in dispatch.COMMANDS),
    *(["data", stage] for stage in ("download", "vocab", "pretokenize")),
    *(["volume", command] for command in ("ls", "upload", "download", "rm", "clean")),
]


@pytest.mark.parametrize("words", HELP_PAGES, ids=lambda words: " ".join(words) or "top")
def test_help_names_the_command_and_shows_no_rest(words):
    """`tinystories train --help` says `tinystories train` (not `python -m ...`), and no
    help page shows reST markup (``literals``, :roles:)."""
    done = cli(*words, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(" ".join(["usage: tinystories", *words]) + " ")
    assert "python -m" not in done.stdout
    assert "``" not in done.stdout and not re.search(r":[a-z]+:`", done.stdout)


def test_every_generate_flag_has_help():
    parser = dispatch.build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    for name in ("generate", "download"):
        undocumented = [a.dest for a in commands.choices[name]._actions if not a.help]
        assert undocumented == [], name


# ------------------------------------------------------------------ generate


def test_prompt_from_a_file_or_stdin(tmp_path):
    flags = ["-t", "0", "-n", "20"]
    expected = cli("Once upon a time", *flags)
    assert expected.returncode == 0 and expected.stdout.startswith("Once upon a time")
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Once upon a time\n")  # the final newline is not part of the prompt
    assert cli("-f", str(prompt), *flags).stdout == expected.stdout
    assert cli("generate", "--file", str(prompt), *flags).stdout == expected.stdout
    assert cli("-f", "-", *flags, input="Once upon a time\n").stdout == expected.stdout
    lines = cli("-f", "-", "--json", *flags, input="Tom\nand Lily\n")
    assert json.loads(lines.stdout)["prompt"] == "Tom\nand Lily"
    both = cli("Lily", "-f", str(prompt))
    assert (both.returncode, both.stderr) == (
        1,
        "tinystories: error: give a PROMPT or --file, not both\n",
    )
    missing = cli("-f", str(tmp_path / "nope.txt"))
    assert missing.returncode == 1 and missing.stderr.startswith("tinystories: error: ")
    assert "nope.txt" in missing.stderr
    prompt.write_bytes(b"\xff\xfe")
    binary = cli("-f", str(prompt))
    assert binary.stderr.startswith(f"tinystories: error: {prompt}: the prompt is not UTF-8")


def test_samples_flag_and_its_deprecated_alias():
    """--samples N draws N samples, -n stays max new tokens, --n (the old name of
    --samples) works with a one-line warning."""
    flags = ["--json", "-s", "7", "-n", "3"]
    new = cli("Lily", "--samples", "2", *flags)
    assert new.returncode == 0 and new.stderr == ""
    records = [json.loads(line) for line in new.stdout.splitlines()]
    assert [(r["seed"], r["tokens"]) for r in records] == [(7, 3), (8, 3)]
    old = cli("Lily", "--n", "2", *flags)
    assert old.stderr == (
        "tinystories: warning: --n is deprecated, use --samples (-n is --max-new-tokens)\n"
    )
    assert [json.loads(line)["text"] for line in old.stdout.splitlines()] == [
        r["text"] for r in records
    ]


def test_seed_overflow_on_a_later_sample_is_refused_before_any_output():
    top = 2**64 - 1
    done = cli("Lily", "-s", str(top - 1), "--samples", "3", "-n", "2")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"tinystories: error: --seed {top - 1} with --samples 3: sample i uses seed + i, "
        f"and the last seed, {top + 1}, is above 2**64 - 1\n"
    )
    fits = cli("Lily", "-s", str(top - 1), "--samples", "2", "-n", "2", "--json")
    assert [json.loads(line)["seed"] for line in fits.stdout.splitlines()] == [top - 1, top]


def test_a_prompt_that_names_a_subcommand():
    """As generate's help and the README say: after `generate`, or after `--`."""
    story = cli("generate", "train", "-s", "3", "-n", "10")
    assert story.returncode == 0 and story.stdout.startswith("train") and story.stderr == ""
    assert cli("-s", "3", "-n", "10", "--", "train").stdout == story.stdout
    assert cli("generate", "-s", "3", "-n", "10", "--", "train").stdout == story.stdout
    dashes = cli("-s", "3", "-n", "10", "--", "--debug")  # not the flag after --
    assert dashes.returncode == 0 and dashes.stdout.startswith("--debug")
    help_text = cli("generate", "--help").stdout
    assert "tinystories generate train" in help_text and "-- train" in help_text


@pytest.mark.parametrize("rank", [None, "0"])
def test_train_under_torchrun_ends_as_the_train_module_does(rank, monkeypatch, capsys, tmp_path):
    """`torchrun -m tinystories train ...`: every process ends through exit_process
    (os._exit, no interpreter shutdown, where gloo's threads could abort it), as
    `python -m tinystories.train` does; without torchrun main() returns the status."""
    ended = []

    def record(code: int) -> None:
        ended.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(training, "exit_process", record)
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:  # what torchrun sets for one process
        for name, value in [("RANK", rank), ("LOCAL_RANK", rank), ("WORLD_SIZE", "1")]:
            monkeypatch.setenv(name, value)
    try:  # a run that ends with a status (2: a setting that cannot work)
        status = dispatch.main(["train", "--data", str(tmp_path / "t.txt"), "--max-iters", "0"])
    except SystemExit as stop:
        status = stop.code
    assert status == 2
    assert ended == ([] if rank is None else [2])
    assert "--max-iters must be a positive integer, not 0" in capsys.readouterr().err
