"""The tinystories command line as a user meets it: closed output, --debug, error lines,
help, the generate flags."""

from __future__ import annotations

import subprocess

from support.cli import COMMAND

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
    for words, read in ((["Lily", "--n", "1000", "-n", "100"], 10), (["download", "--list"], 0)):
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
