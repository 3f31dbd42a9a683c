"""Tokenizer: run.c's encode/decode, checked against a naive reference and sentencepiece."""

from __future__ import annotations

import numpy as np
import pytest
from support.files import synthetic_vocab
from tinystories import Generator, Tokenizer
from tinystories.formats.llama2c import ModelConfig, random_weights, write_model
from tinystories.formats.tokenizer_bin import write_tokenizer


def naive_encode(
    pieces: list[bytes], scores: list[float], text: str, bos: bool = True
) -> list[int]:
    """run.c's algorithm, quadratic and literal, with <unk> for characters a vocab lacks."""
    lookup = {p: i for i, p in reversed(list(enumerate(pieces)))}
    has_bytes = len(pieces) >= 259 and pieces[3] == b"<0x00>"
    ids = [1] if bos else []
    data = text.encode("utf-8")
    if data and b" " in lookup:
        ids.append(lookup[b" "])
    i = 0
    while i < len(data):
        j = i + 1
        while j < len(data) and j - i < 4 and (data[j] & 0xC0) == 0x80:
            j += 1
        char = data[i:j]
        if char in lookup:
            ids.append(lookup[char])
        elif has_bytes:
            ids.extend(b + 3 for b in char)
        else:
            ids.append(0)
        i = j
    while True:
        best = None
        for k in range(len(ids) - 1):
            merged = lookup.get(pieces[ids[k]] + pieces[ids[k + 1]])
            if merged is not None and (best is None or scores[merged] > best[0]):
                best = (scores[merged], k, merged)
        if best is None:
            return ids
        _, k, merged = best
        ids[k : k + 2] = [merged]


TEXTS = [
    "",
    "a",
    "Once upon a time, there was a little girl named Lily.",
    "  two  spaces  ",
    "tea, oats; toast!\nNew line\n\n",
    "ünïcödé “quotes” é and emoji 🐶",
    "\t\x01control\x7f",
]


@pytest.fixture(params=[False, True], ids=["no-bytes", "byte-fallback"])
def vocab(request, tmp_path):
    pieces, scores = synthetic_vocab(
        300 if request.param else 120, seed=3, byte_tokens=request.param
    )
    path = write_tokenizer(tmp_path / "tok.bin", pieces, scores)
    return Tokenizer(path), pieces, scores


@pytest.mark.parametrize("text", TEXTS)
def test_encode_matches_naive_run_c(vocab, text):
    tokenizer, pieces, scores = vocab
    assert tokenizer.encode(text) == naive_encode(pieces, scores, text)
    assert tokenizer.encode(text, bos=False) == naive_encode(pieces, scores, text, bos=False)
    assert tokenizer.encode(text, eos=True)[-1] == 2


def test_encode_matches_naive_on_random_text(vocab):
    tokenizer, pieces, scores = vocab
    rng = np.random.default_rng(0)
    alphabet = list("etaoin shrdlu.,!TSLOcmwfgyp") + ["é", "ß", "\n", "🐶"]
    for _ in range(200):
        text = "".join(rng.choice(alphabet, rng.integers(0, 60)))
        assert tokenizer.encode(text) == naive_encode(pieces, scores, text), text


def test_decode_round_trip(vocab):
    tokenizer, _, _ = vocab
    for text in ["Once upon a time, the cat sat.", "tea toast", "shout!"]:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_eos_prints_its_piece_in_generation_and_nothing_in_decode(tmp_path):
    """A model that always samples EOS: generate prints EOS's piece (as run.c does),
    decode of the same ids leaves it out, as its docstring and the README say."""
    config = ModelConfig(
        dim=16,
        hidden_dim=32,
        n_layers=1,
        n_heads=2,
        n_kv_heads=1,
        vocab_size=40,
        seq_len=8,
        shared_classifier=False,
    )
    weights = random_weights(config)
    weights["wo"][:] = weights["w2"][:] = 0  # the residual stream is the embedding...
    weights["token_embedding"][:] = weights["rms_final"][:] = 1  # ...all ones...
    weights["wcls"][:] = 0
    weights["wcls"][2] = 1  # ...and only EOS's logit is not 0
    pieces, scores = synthetic_vocab(config.vocab_size)
    generator = Generator(
        write_model(tmp_path / "eos.bin", config, weights),
        write_tokenizer(tmp_path / "tok.bin", pieces, scores),
    )
    assert pieces[2] == b"\n</s>\n"
    generation = generator.start("tea", temperature=0, max_new_tokens=2)
    assert list(generation.tokens()) == [(2, "\n</s>\n")] * 2
    assert generator.generate("tea", temperature=0, max_new_tokens=2) == "\n</s>\n" * 2
    ids = generator.encode("tea") + [2, 2]
    assert generator.decode(ids) == generator.tokenizer.decode(ids) == "tea"


def test_byte_fallback_round_trips_ascii_controls(tmp_path):
    pieces, scores = synthetic_vocab(300, seed=3, byte_tokens=True)
    tokenizer = Tokenizer(write_tokenizer(tmp_path / "tok.bin", pieces, scores))
    assert tokenizer.encode("a\x01b", bos=False)[2] == 3 + 1  # <0x01>
    # run.c prints a byte token only when it is printable or whitespace
    assert tokenizer.decode(tokenizer.encode("a\x01b")) == "ab"
    assert tokenizer.decode(tokenizer.encode("a\tb")) == "a\tb"
    assert tokenizer.decode(tokenizer.encode("ß")) == ""  # UTF-8 bytes of a byte fallback


def test_unknown_characters_become_unk_without_byte_tokens(tok105):
    tokenizer = Tokenizer(tok105["tokenizer"])
    ids = tokenizer.encode("a\nb🐶")
    assert ids == [
        1,
        3,
        tokenizer.encode("a", bos=False)[1],
        0,
        tokenizer.encode("b", bos=False)[1],
        0,
    ]
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == "a<unk>b<unk>"


def test_invalid_utf8_and_long_input_do_not_hang(vocab):
    tokenizer, _, _ = vocab
    text = "the cat sat on the mat. " * 20000  # 480 kB: run.c's quadratic merge would take hours
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    # lone surrogates are not UTF-8; they must encode to something valid, never crash
    assert all(0 <= i < tokenizer.vocab_size for i in tokenizer.encode("a\udcffb"))


def test_decode_rejects_out_of_range_ids(vocab):
    tokenizer, _, _ = vocab
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizer.decode([1, tokenizer.vocab_size])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizer.decode([-1])


def sample_paragraphs(shared_dir, limit=300):
    text = (shared_dir / "data" / "tinystories" / "valid-sample.txt").read_text(encoding="utf-8")
    docs = [d.strip() for d in text.split("<|endoftext|>") if d.strip()]
    return docs[:limit]


def test_encode_agrees_with_sentencepiece(shared_dir, tok105):
    sentencepiece = pytest.importorskip("sentencepiece")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tok105["sentencepiece"]))
    tokenizer = Tokenizer(tok105["tokenizer"])
    paragraphs = sample_paragraphs(shared_dir)
    assert len(paragraphs) == 300
    for paragraph in paragraphs:
        assert tokenizer.encode(paragraph, bos=False) == sp.encode(paragraph), paragraph
