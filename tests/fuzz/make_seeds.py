"""Writes the seed corpora of the fuzz targets (tests/fuzz/fuzz_*.c).

    python tests/fuzz/make_seeds.py OUT_DIR [--tokenizer tok105.bin]

OUT_DIR/<target>/ receives small valid inputs made with the package's own
writers (``tinystories.formats.llama2c``, ``tinystories.formats.tokenizer_bin``), the same
ones the tests generate: models in v0, v1 and v2 with MHA, GQA and MQA and
shared and unshared classifiers; tokenizers with and without byte tokens;
texts with multi-byte and invalid UTF-8; id lists in and out of range.
tests/fuzz/corpus/ holds a committed copy (replayed by ctest); CI writes a
fresh one before fuzzing, and libFuzzer grows it from there.
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

import numpy as np
from tinystories.formats.llama2c import ModelConfig, random_weights, write_model
from tinystories.formats.tokenizer_bin import write_tokenizer

CONFIGS = {
    "mha": ModelConfig(
        dim=8, hidden_dim=16, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=12, seq_len=4
    ),
    "gqa": ModelConfig(
        dim=16,
        hidden_dim=24,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        vocab_size=10,
        seq_len=6,
        shared_classifier=False,
    ),
    "mqa": ModelConfig(
        dim=12, hidden_dim=20, n_layers=1, n_heads=3, n_kv_heads=1, vocab_size=9, seq_len=3
    ),
}

TEXTS = [
    b"",
    b"Once upon a time",
    b"tea toast tea",
    b"caf\xc3\xa9 \xe2\x80\x9cquoted\xe2\x80\x9d \xe4\xb8\xad \xf0\x9f\x98\x80",
    b"\xff\xfe\x80\xc3",  # invalid UTF-8: stray continuation, truncated sequence
    b"a\x00b\n\t",
    b"<0x41> \n<s>\n",
]


def vocab(size: int, byte_tokens: bool) -> tuple[list[bytes], list[float]]:
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"]
    if byte_tokens:
        pieces += [f"<0x{b:02X}>".encode() for b in range(256)]
    chars = [bytes([c]) for c in b" etaonsh"]
    pieces += chars
    for a in chars:
        for b in chars:
            if len(pieces) < size:
                pieces.append(a + b)
    scores = [0.0] * 3 + [-float(i % 5) for i in range(len(pieces) - 3)]
    return pieces, scores


def _model_inputs(out: Path) -> None:
    for index, (name, config) in enumerate(CONFIGS.items()):
        weights = random_weights(config, seed=index)
        for version in (0, 1, 2):
            path = out / f"{name}_v{version}"
            write_model(path, config, weights, version=version, group_size=4)
            # byte 0 even: the rest is the file as is
            path.write_bytes(b"\x00" + path.read_bytes())
            # byte 0 odd: a compact header the harness expands to a file
            compact = struct.pack(
                "<BB8h",
                version,
                int(config.shared_classifier),
                config.dim,
                config.hidden_dim,
                config.n_layers,
                config.n_heads,
                config.n_kv_heads,
                config.vocab_size,
                config.seq_len,
                4,
            )
            pattern = (np.linspace(-1, 1, 16, dtype="<f4")).tobytes()
            (out / f"{name}_v{version}_compact").write_bytes(b"\x01" + compact + pattern)


def _tokenizer_inputs(out: Path, tokenizer: Path | None) -> None:
    for size, byte_tokens in [(20, False), (60, False), (300, True)]:
        write_tokenizer(out / f"synthetic_{size}", *vocab(size, byte_tokens))
    if tokenizer is not None:
        (out / "tok105").write_bytes(tokenizer.read_bytes())


def _encode_inputs(out: Path) -> None:
    for index, text in enumerate(TEXTS):
        for which in range(3):  # byte 0: tokenizer (bits 2+), BOS (bit 0), EOS (bit 1)
            (out / f"text{index}_t{which}").write_bytes(bytes([which << 2 | 1]) + text)


def _decode_inputs(out: Path) -> None:
    lists = {
        "prompt": [1, 5, 9, 12, 40, 2],
        "bytes": [1] + list(range(3, 40)),
        "outside": [1, -1, 7, 2**31 - 1, 10_000, 3],
    }
    for name, ids in lists.items():
        for which in range(3):
            payload = struct.pack(f"<{len(ids)}i", *ids)
            (out / f"{name}_t{which}").write_bytes(bytes([which]) + payload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tokenizer", type=Path, default=None, help="e.g. tok105.bin")
    args = parser.parse_args(argv)
    writers = {
        "model": _model_inputs,
        "tokenizer": lambda out: _tokenizer_inputs(out, args.tokenizer),
        "encode": _encode_inputs,
        "decode": _decode_inputs,
    }
    for target, write in writers.items():
        directory = args.out / target
        directory.mkdir(parents=True, exist_ok=True)
        write(directory)
        print(f"{directory}: {len(list(directory.iterdir()))} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
