"""The bad-input contract: each failure is a specific exception naming the file and reason."""

from __future__ import annotations

import math
import re
import struct

import numpy as np
import pytest
from support.files import synthetic_vocab
from tinystories import FormatError, Generator, Tokenizer
from tinystories.formats.llama2c import (
    MAGIC,
    ModelConfig,
    check_header,
    random_weights,
    write_model,
)
from tinystories.formats.tokenizer_bin import write_tokenizer

CONFIG = ModelConfig(
    dim=16, hidden_dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=40, seq_len=8
)


@pytest.fixture
def files(tmp_path):
    weights = random_weights(CONFIG)
    tokenizer = write_tokenizer(tmp_path / "tok.bin", *synthetic_vocab(CONFIG.vocab_size))
    models = {
        v: write_model(tmp_path / f"m{v}.bin", CONFIG, weights, version=v, group_size=8)
        for v in (0, 1, 2)
    }
    return tmp_path, models, tokenizer


def v0_header(dim=16, hidden=32, layers=1, heads=2, kv=1, vocab=40, seq=8) -> bytes:
    return struct.pack("<7i", dim, hidden, layers, heads, kv, vocab, seq)


def test_missing_file(files):
    root, models, tokenizer = files
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        Generator(root / "nope.bin", tokenizer)
    with pytest.raises(FileNotFoundError, match="nope.tok"):
        Generator(models[0], root / "nope.tok")


def test_directory(files):
    root, models, tokenizer = files
    with pytest.raises(IsADirectoryError, match="directory") as info:
        Generator(root, tokenizer)
    assert str(root) in str(info.value)
    with pytest.raises(IsADirectoryError, match="is a directory, not a tokenizer file"):
        Generator(models[0], root)


def test_empty_model(files):
    root, _, tokenizer = files
    (root / "empty.bin").write_bytes(b"")
    with pytest.raises(FormatError, match=r"empty\.bin.*empty"):
        Generator(root / "empty.bin", tokenizer)


@pytest.mark.parametrize("version", [0, 1, 2])
def test_truncated_and_padded_model(files, version):
    root, models, tokenizer = files
    data = models[version].read_bytes()
    for name, blob in [
        ("cut", data[:-1]),
        ("half", data[: len(data) // 2]),
        ("header", data[:20]),
        ("padded", data + b"\0\0\0\0"),
    ]:
        path = root / f"{name}{version}.bin"
        path.write_bytes(blob)
        with pytest.raises(FormatError, match=f"{name}{version}.bin") as info:
            Generator(path, tokenizer)
        if name in ("cut", "half", "padded"):
            assert str(len(data)) in str(info.value), "the message gives the expected size"


def test_unknown_version_and_bad_magic(files):
    root, models, tokenizer = files
    data = bytearray(models[1].read_bytes())
    data[4:8] = struct.pack("<i", 7)
    (root / "v7.bin").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="version 7"):
        Generator(root / "v7.bin", tokenizer)


@pytest.mark.parametrize(
    "header, reason",
    [
        (v0_header(dim=0), "dim"),
        (v0_header(dim=-16), "dim"),
        (v0_header(layers=0), "n_layers"),
        (v0_header(seq=0), "seq_len"),
        (v0_header(vocab=0), "vocab"),
        (v0_header(heads=3), "n_heads"),  # 16 % 3 != 0
        (v0_header(heads=2, kv=3), "n_kv_heads"),
        (v0_header(heads=4, kv=3), "n_kv_heads"),
        (v0_header(dim=2**30, hidden=2**30, layers=2**30), "overflow"),
        (v0_header(dim=2**31 - 1, heads=1, kv=1), "odd"),
    ],
)
def test_bad_dims(files, header, reason):
    root, _, tokenizer = files
    path = root / "bad.bin"
    path.write_bytes(header + b"\0" * 4096)
    with pytest.raises(FormatError, match=reason):
        Generator(path, tokenizer)


@pytest.mark.parametrize("group_size", [0, -8, 5, 64])
def test_bad_group_size(files, group_size):
    root, models, tokenizer = files
    data = bytearray(models[2].read_bytes())
    data[37:41] = struct.pack("<i", group_size)
    (root / "gs.bin").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="group"):
        Generator(root / "gs.bin", tokenizer)


def test_ak42_header_with_bad_dims(files):
    root, _, tokenizer = files
    header = struct.pack("<Ii7iB", MAGIC, 1, 16, 32, 1, 2, 0, 40, 8, 1)
    (root / "kv0.bin").write_bytes(header + b"\0" * (256 - len(header)) + b"\0" * 10000)
    with pytest.raises(FormatError, match="n_kv_heads"):
        Generator(root / "kv0.bin", tokenizer)


def test_bad_tokenizers(files):
    root, models, _ = files
    cases = {
        "negative.tok": struct.pack("<i", 4) + struct.pack("<fi", 0.0, -1),
        "past_end.tok": struct.pack("<i", 4) + struct.pack("<fi", 0.0, 4) + b"ab",
        "partial.tok": struct.pack("<i", 4) + struct.pack("<fi", 0.0, 1) + b"a" + b"\0\0",
        "too_long.tok": struct.pack("<i", 1) + struct.pack("<fi", 0.0, 3) + b"abc",
        "empty.tok": b"",
        "no_entries.tok": struct.pack("<i", 4),
    }
    for name, blob in cases.items():
        (root / name).write_bytes(blob)
        with pytest.raises(FormatError, match=name.replace(".", r"\.")):
            Tokenizer(root / name)


def test_vocab_mismatch(files, tmp_path):
    _, models, _ = files
    small = write_tokenizer(tmp_path / "small.tok", *synthetic_vocab(30))
    with pytest.raises(ValueError, match="30 tokens.*vocab_size 40"):
        Generator(models[0], small)


@pytest.fixture
def generator(files):
    _, models, tokenizer = files
    return Generator(models[0], tokenizer)


@pytest.mark.parametrize(
    "kwargs, error, reason",
    [
        ({"temperature": -0.1}, ValueError, "temperature"),
        ({"temperature": math.nan}, ValueError, "temperature"),
        ({"temperature": math.inf}, ValueError, "temperature"),
        ({"top_p": 1.5}, ValueError, "top_p"),
        ({"top_p": -0.1}, ValueError, "top_p"),
        ({"top_p": math.nan}, ValueError, "top_p"),
        ({"top_k": -1}, ValueError, "top_k"),
        ({"top_k": 1.5}, TypeError, "top_k"),
        ({"max_new_tokens": -1}, ValueError, "max_new_tokens"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 2**64}, ValueError, "seed"),
        ({"seed": "1"}, TypeError, "seed"),
    ],
)
def test_bad_sampling_arguments(generator, kwargs, error, reason):
    with pytest.raises(error, match=reason):
        generator.generate("tea", **kwargs)
    with pytest.raises(error, match=reason):
        next(generator.stream("tea", **kwargs))


def test_prompt_longer_than_context(generator):
    with pytest.raises(ValueError, match="context"):
        generator.generate("tea toast " * 10)


def test_bad_logits_ids(generator):
    with pytest.raises(ValueError, match="at least one"):
        generator.logits([])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generator.logits([1, 40])
    with pytest.raises(ValueError, match="context"):
        generator.logits([1] * 9)
    with pytest.raises(TypeError):
        generator.logits("tea")


def test_bad_n_threads(files):
    """Checked at construction, one line naming n_threads (not pybind11's signature list)."""
    _, models, tokenizer = files
    for bad in (0, -1, 2**31, 2**40):
        with pytest.raises(ValueError, match=r"^n_threads must be in \[1, 2147483647\]"):
            Generator(models[0], tokenizer, n_threads=bad)
    for bad in (True, 2.0, "2"):
        with pytest.raises(TypeError, match=r"^n_threads must be an int or None"):
            Generator(models[0], tokenizer, n_threads=bad)
    numpy_int = Generator(models[0], tokenizer, n_threads=np.int64(2)).n_threads
    assert numpy_int == 2 and type(numpy_int) is int
    # the largest the engine takes; more threads than CPUs count as the CPU count
    widest = Generator(models[0], tokenizer, n_threads=2**31 - 1)
    assert len(widest.complete("t", max_new_tokens=2, stop_token_ids=[]).token_ids) == 2


def test_load_errors_name_the_role(tok105):
    """Swapped or mistaken paths say which argument the file was given as."""
    model, tokenizer, spm = tok105["model"], tok105["tokenizer"], tok105["sentencepiece"]

    def given_as(path, role: str) -> str:
        return f"^{re.escape(str(path))} \\(given as the {role}\\): "

    with pytest.raises(FormatError, match=given_as(model, "tokenizer") + "entry 2 has length"):
        Generator(model, model)
    with pytest.raises(FormatError, match=given_as(tokenizer, "model") + "as a v0"):
        Generator(tokenizer, tokenizer)
    with pytest.raises(FileNotFoundError, match=given_as("nope.bin", "model") + "cannot open"):
        Generator("nope.bin", tokenizer)
    with pytest.raises(FileNotFoundError, match=given_as("nope.tok", "tokenizer") + "cannot"):
        Generator(model, "nope.tok")
    # a sentencepiece .model: the message says to pass the tokenizer.bin made from it
    hint = "a sentencepiece .model is not a llama2.c tokenizer: pass the tokenizer.bin made"
    with pytest.raises(FormatError, match=given_as(spm, "tokenizer") + f".*{re.escape(hint)}"):
        Generator(model, spm)
    with pytest.raises(FormatError, match=f"^{re.escape(str(spm))}: .*{re.escape(hint)}"):
        Tokenizer(spm)


@pytest.mark.parametrize("version", [0, 1, 2])
def test_header_check_agrees_with_the_engine(files, tok105, version):
    """formats.llama2c.check_header (the download check) reads only the header and
    accepts exactly the sizes the engine accepts."""
    root, models, _ = files
    config, found = check_header(models[version])
    assert (config, found) == (CONFIG, version)
    data = models[version].read_bytes()
    for name, blob in [("cut", data[:-1]), ("header", data[:20]), ("padded", data + b"\0")]:
        path = root / f"{name}{version}.bin"
        path.write_bytes(blob)
        with pytest.raises(FormatError, match=f"{name}{version}.bin"):
            check_header(path)
    for key in ("model", "model_q80"):  # group size 64 does not divide hidden_dim 352
        assert check_header(tok105[key])[0].vocab_size == 105
