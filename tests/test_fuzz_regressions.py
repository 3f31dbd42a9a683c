"""Saved fuzz inputs, replayed through the Python binding.

tests/fuzz/regressions/<target>/ holds every input a fuzz target ever failed on
(the C replays in ctest run them against the C API, under ASan/UBSan in CI);
tests/fuzz/corpus/<target>/ the seeds. Here the model and tokenizer files among
them go through ``tinystories.Generator``/``Tokenizer`` and the texts and id
lists through encode/decode: each must load and work or raise a Python
exception, never crash. The replay runs in a child process so that a native
crash is reported as a failure naming the input instead of killing pytest.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent / "fuzz"

REPLAY = r"""
import struct, sys, tempfile
from pathlib import Path
import tinystories
from tinystories import Tokenizer

kind, tokenizer_path, files = sys.argv[1], sys.argv[2], sys.argv[3:]
outcomes = {}
tmp = Path(tempfile.mkdtemp())
for name in files:
    data = Path(name).read_bytes()
    print("replay", name, flush=True)
    try:
        if kind == "model":
            if not data or data[0] % 2:
                continue  # compact headers: the C harness expands those
            path = tmp / "model.bin"
            path.write_bytes(data[1:])
            model = tinystories._core.Model(str(path))
            config = model.config
            if 8 * config["n_layers"] * config["seq_len"] * config["dim"] < (64 << 20):
                session = tinystories._core.Session(model, 1)
                ids = [b % config["vocab_size"] for b in data[1:5]] or [0]
                session.eval(ids[: config["seq_len"]], 0, True)
        elif kind == "tokenizer":
            path = tmp / "tok.bin"
            path.write_bytes(data)
            tok = Tokenizer(path)
            for text in ["", "Once upon a time", "\udcff caf\u00e9", data[:64].decode("latin-1")]:
                ids = tok.encode(text, bos=True, eos=True)
                assert all(0 <= i < tok.vocab_size for i in ids), ids
                tok.decode(ids)
        elif kind == "encode":
            tok = Tokenizer(tokenizer_path)
            ids = tok._native.encode(data[1:], bool(data[:1] and data[0] & 1), True)
            assert all(0 <= i < tok.vocab_size for i in ids), ids
            tok.decode(ids)
        elif kind == "decode":
            tok = Tokenizer(tokenizer_path)
            count = (len(data) - 1) // 4
            ids = list(struct.unpack(f"<{count}i", data[1 : 1 + 4 * count]))
            try:
                tok.decode(ids)
            except ValueError:
                tok.decode([i for i in ids if 0 <= i < tok.vocab_size])
        outcome = "ok"
    except (OSError, ValueError, MemoryError) as error:
        outcome = type(error).__name__
    outcomes[outcome] = outcomes.get(outcome, 0) + 1
print("outcomes", outcomes)
"""


def saved_inputs(target: str) -> list[Path]:
    return sorted(
        path
        for folder in (FUZZ / "corpus" / target, FUZZ / "regressions" / target)
        if folder.is_dir()
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".")
    )


@pytest.mark.parametrize("target", ["model", "tokenizer", "encode", "decode"])
def test_replay_saved_inputs(target, tok105):
    files = saved_inputs(target)
    assert files, f"no saved inputs for {target}"
    result = subprocess.run(
        [sys.executable, "-c", REPLAY, target, str(tok105["tokenizer"]), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    last = [line for line in result.stdout.splitlines() if line.startswith("replay ")][-1:]
    assert result.returncode == 0, (
        f"replay crashed or failed (exit {result.returncode}) at {last}:\n{result.stderr[-3000:]}"
    )
    assert "outcomes" in result.stdout


def test_one_entry_tokenizer_is_rejected():
    """The fuzzer's first find: with fewer than 3 entries, encode emitted BOS/EOS ids outside it."""
    from tinystories import FormatError, Tokenizer

    path = FUZZ / "regressions" / "tokenizer" / "one-entry-encode-emits-bos-outside-vocab"
    with pytest.raises(FormatError, match="1 vocabulary entries; .* needs at least 3"):
        Tokenizer(path)
