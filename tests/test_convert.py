"""``tinystories.convert`` (issue 15): llama2.c files <-> Hugging Face folders <-> GGUF.

The references are other projects' code: transformers' own ``LlamaForCausalLM`` and
``AutoTokenizer`` on the folders and GGUF files written here, the ``gguf`` package reading
them, sentencepiece loading the rebuilt ``tokenizer.model``, llama2.c's ``export.py`` output
(``model5000_q80.bin``) for quantizing, and the engine's logits.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
pytest.importorskip("accelerate")  # transformers reads GGUF files with it

import tinystories  # noqa: E402
from support.files import RANDOM_CONFIGS, synthetic_vocab  # noqa: E402
from tinystories import FormatError, Generator, Tokenizer, convert  # noqa: E402
from tinystories.formats.hf import from_hf_rows, to_hf_rows  # noqa: E402
from tinystories.formats.llama2c import (  # noqa: E402
    ModelConfig,
    random_weights,
    read_model,
    write_model,
)
from tinystories.formats.safetensors_io import SafetensorsFile, write_safetensors  # noqa: E402
from tinystories.formats.spm import SPACE, Vocab, read_vocab  # noqa: E402
from tinystories.formats.tokenizer_bin import read_tokenizer, write_tokenizer  # noqa: E402

TOLERANCE = 1e-4
EDGE_TEXTS = [
    "Once upon a time, there was a little girl named Lily.",
    " a leading space, then  two spaces and a tab\tthere",
    'She said, "Look!" and ran.\n\nThe end.',  # tok105 has no newline: <unk> each
    "Zoë’s café costs 5€ — ok?",  # characters some vocabularies lack
    "x",
    "",
]
HF_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
}
# a vocabulary with byte fallback and merges (259 bytes and specials, characters, merges)
BYTES_CONFIG = ModelConfig(
    dim=32, hidden_dim=96, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=320, seq_len=48
)


def _dtype_kw(dtype) -> dict:
    major = int(transformers.__version__.split(".")[0])
    return {"dtype" if major >= 5 else "torch_dtype": dtype}


def hf_logits(folder: Path, ids: list[int], **kw) -> np.ndarray:
    model = transformers.LlamaForCausalLM.from_pretrained(
        str(folder), **_dtype_kw(torch.float32), **kw
    )
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def random_ids(config: ModelConfig, seed: int = 0) -> list[int]:
    """BOS and random tokens filling the whole context (every RoPE position)."""
    rng = np.random.default_rng(seed)
    return [1] + rng.integers(3, config.vocab_size, config.seq_len - 1).tolist()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def models(random_model_files, tok105, tmp_path_factory):
    """name -> (v0 path, tokenizer path, config): tok105's model and the random ones."""
    root = tmp_path_factory.mktemp("convert_models")
    found = {"tok105": (tok105["model"], tok105["tokenizer"], None)}
    for (name, version), (path, tok, config, _) in random_model_files.items():
        if version == 0:
            found[name] = (path, tok, config)
    weights = random_weights(BYTES_CONFIG, seed=7)
    pieces, scores = synthetic_vocab(BYTES_CONFIG.vocab_size, seed=7, byte_tokens=True)
    found["bytes"] = (
        write_model(root / "bytes.bin", BYTES_CONFIG, weights),
        write_tokenizer(root / "bytes.tok.bin", pieces, scores),
        BYTES_CONFIG,
    )
    return found


@pytest.fixture(scope="module")
def sample_texts(shared_dir):
    lines = (shared_dir / "data" / "tinystories" / "valid-sample.txt").read_text().splitlines()
    return [line for line in lines if line.strip()][:40] + EDGE_TEXTS


# ------------------------------------------------------------------ export: HF


@pytest.mark.parametrize("name", ["tok105", "mqa_unshared", "gqa_shared", "mha", "bytes"])
def test_transformers_computes_our_logits_on_the_exported_folder(models, name, tmp_path):
    path, tok, _ = models[name]
    written = convert(path, tmp_path / "hf", to="hf", tokenizer=tok)
    assert {p.name for p in written} == HF_FILES
    g = Generator(path, tok)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    c = g.config
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]) == (
        c.dim,
        c.hidden_dim,
        c.n_layers,
    )
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (
        c.n_heads,
        c.n_kv_heads,
    )
    assert config["max_position_embeddings"] == c.seq_len
    assert config["vocab_size"] == c.vocab_size
    assert config["tie_word_embeddings"] is c.shared_classifier
    assert (config["rms_norm_eps"], config["rope_theta"]) == (1e-5, 10000.0)
    assert (config["bos_token_id"], config["eos_token_id"], config["torch_dtype"]) == (
        1,
        2,
        "float32",
    )
    tensors = SafetensorsFile(tmp_path / "hf" / "model.safetensors").keys()
    assert ("lm_head.weight" in tensors) is not c.shared_classifier
    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert generation["bos_token_id"] == 1 and 1 in generation["eos_token_id"]

    ids = g.encode("Once upon a time, there was a little girl") if name == "tok105" else None
    ids = ids or random_ids(g.config)
    theirs = hf_logits(tmp_path / "hf", ids)
    ours = g.logits(ids)
    assert theirs.shape == ours.shape
    assert np.abs(theirs - ours).max() < TOLERANCE


@pytest.mark.parametrize("name", ["tok105", "gqa_shared", "bytes"])
def test_autotokenizer_encodes_as_we_do(models, name, sample_texts, tmp_path):
    path, tok, _ = models[name]
    convert(path, tmp_path / "hf", tokenizer=tok)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    ours = Tokenizer(tok)
    for text in sample_texts:
        assert theirs.encode(text) == ours.encode(text), text
    if name == "bytes":  # byte fallback spells every character
        text = "Zoë’s café costs 5€"
        assert theirs.decode(theirs.encode(text), skip_special_tokens=True) == text


def test_a_given_sentencepiece_model_is_the_folder_s(tok105, sample_texts, tmp_path):
    convert(tok105["model"], tmp_path / "hf", tokenizer=tok105["sentencepiece"])
    shipped = (tmp_path / "hf" / "tokenizer.model").read_bytes()
    assert shipped == tok105["sentencepiece"].read_bytes()
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    ours = Tokenizer(tok105["tokenizer"])
    for text in sample_texts:
        assert theirs.encode(text) == ours.encode(text), text


def test_the_rebuilt_sentencepiece_model_loads_in_sentencepiece(models, sample_texts, tmp_path):
    """tokenizer.model rebuilt from tokenizer.bin: sentencepiece reads the same pieces,
    scores and types, and encodes text whose characters are all in the vocabulary as
    llama2.c does (sentencepiece fuses a run of unknown characters into one <unk>)."""
    spm = pytest.importorskip("sentencepiece")
    for name in ("gqa_shared", "bytes"):
        path, tok, _ = models[name]
        convert(path, tmp_path / name, tokenizer=tok)
        sp = spm.SentencePieceProcessor(model_file=str(tmp_path / name / "tokenizer.model"))
        vocab = read_vocab(tok)
        assert [sp.id_to_piece(i) for i in range(sp.vocab_size())] == vocab.pieces
        assert [sp.get_score(i) for i in range(sp.vocab_size())] == vocab.scores
        assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2)
        assert sp.is_byte(3) is (name == "bytes") and sp.is_control(1)
        ours = Tokenizer(tok)
        pieces = set(vocab.pieces)
        checked = 0
        for text in sample_texts:
            if all(c.replace(" ", SPACE) in pieces for c in text) or name == "bytes":
                assert sp.encode(text) == ours.encode(text, bos=False), text
                checked += 1
        assert checked >= 5


def test_a_sentencepiece_model_reads_as_sentencepiece_reads_it(tok105):
    spm = pytest.importorskip("sentencepiece")
    sp = spm.SentencePieceProcessor(model_file=str(tok105["sentencepiece"]))
    vocab = read_vocab(tok105["sentencepiece"])
    assert vocab.pieces == [sp.id_to_piece(i) for i in range(sp.vocab_size())]
    assert vocab.scores == [sp.get_score(i) for i in range(sp.vocab_size())]
    assert vocab == read_vocab(tok105["tokenizer"])  # llama2.c's tokenizer.py's conversion
    assert vocab.llama2c_pieces() == read_tokenizer(tok105["tokenizer"])[0]


def test_q_and_k_rows_go_over_to_hf_s_rotary_halves():
    """Row 2i + j of a llama2.c head is row j * head_size/2 + i of HF's."""
    w = np.arange(2 * 8 * 3, dtype=np.float32).reshape(16, 3)
    hf_rows = to_hf_rows(w, n_heads=2)
    for head in range(2):
        for i in range(4):
            for j in range(2):
                np.testing.assert_array_equal(
                    hf_rows[head * 8 + j * 4 + i], w[head * 8 + 2 * i + j]
                )
    np.testing.assert_array_equal(from_hf_rows(hf_rows, 2), w)


# ------------------------------------------------------------------ import: HF


def _transformers_model(config: ModelConfig, seed: int = 0):
    """A LlamaForCausalLM made by transformers itself, with weights large enough to matter."""
    torch.manual_seed(seed)
    hf_config = transformers.LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.dim,
        intermediate_size=config.hidden_dim,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads,
        max_position_embeddings=config.seq_len,
        rms_norm_eps=1e-5,
        tie_word_embeddings=config.shared_classifier,
    )
    model = transformers.LlamaForCausalLM(hf_config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name else 0.2 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize(
    ("how", "config_name"),
    [
        ("safetensors", "mqa_unshared"),
        ("safetensors", "gqa_shared"),
        ("bf16", "gqa_shared"),
        ("fp16", "mqa_unshared"),
        ("sharded", "mqa_unshared"),
        ("pytorch_model.bin", "gqa_shared"),
    ],
)
def test_a_transformers_folder_imports_with_its_logits(how, config_name, tmp_path):
    config = RANDOM_CONFIGS[config_name]
    model = _transformers_model(config)
    folder = tmp_path / "hf"
    if how == "bf16":
        model.to(torch.bfloat16).save_pretrained(folder)
    elif how == "fp16":
        model.to(torch.float16).save_pretrained(folder)
    elif how == "sharded":
        model.save_pretrained(folder, max_shard_size="20KB")
        assert (folder / "model.safetensors.index.json").is_file()
    elif how == "pytorch_model.bin":
        model.config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    else:
        model.save_pretrained(folder)
    vocab = Vocab.from_llama2c(*synthetic_vocab(config.vocab_size))
    (folder / "tokenizer.model").write_bytes(vocab.to_model_proto())

    written = convert(folder, tmp_path / "out" / "model.bin", to="v0")
    assert [p.name for p in written] == ["model.bin", "tokenizer.bin"]
    assert read_tokenizer(tmp_path / "out" / "tokenizer.bin") == (
        vocab.llama2c_pieces(),
        vocab.scores,
    )
    g = Generator(tmp_path / "out" / "model.bin", tmp_path / "out" / "tokenizer.bin")
    assert (g.config.n_kv_heads, g.config.shared_classifier) == (
        config.n_kv_heads,
        config.shared_classifier,
    )
    ids = random_ids(config, seed=1)
    assert np.abs(hf_logits(folder, ids) - g.logits(ids)).max() < TOLERANCE


def test_a_folder_without_a_tokenizer_gives_the_model_alone(models, tmp_path):
    path, tok, _ = models["gqa_shared"]
    convert(path, tmp_path / "hf", tokenizer=tok)
    (tmp_path / "hf" / "tokenizer.model").unlink()
    assert convert(tmp_path / "hf", tmp_path / "m.bin") == [tmp_path / "m.bin"]
    assert (tmp_path / "m.bin").read_bytes() == Path(path).read_bytes()
    with pytest.raises(ValueError, match="needs a tokenizer.*no tokenizer.model"):
        convert(tmp_path / "hf", tmp_path / "m.gguf")
    # a tokenizer given instead
    assert len(convert(tmp_path / "hf", tmp_path / "t" / "m.bin", tokenizer=tok)) == 2


# ----------------------------------------------------------------------- GGUF


@pytest.mark.parametrize("kind", ["f32", "f16", "q8_0"])
def test_the_gguf_package_reads_our_gguf(models, kind, tmp_path):
    name = "mha" if kind == "q8_0" else "mqa_unshared"  # q8_0 needs rows of 32s
    path, tok, config = models[name]
    out = tmp_path / "m.gguf"
    assert convert(path, out, tokenizer=tok, dtype=kind) == [out]
    reader = gguf.GGUFReader(str(out))
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["general.architecture"] == "llama"
    expected = {
        "llama.context_length": config.seq_len,
        "llama.embedding_length": config.dim,
        "llama.block_count": config.n_layers,
        "llama.feed_forward_length": config.hidden_dim,
        "llama.attention.head_count": config.n_heads,
        "llama.attention.head_count_kv": config.n_kv_heads,
        "llama.rope.dimension_count": config.head_size,
        "llama.rope.freq_base": 10000.0,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "general.file_type": {"f32": 0, "f16": 1, "q8_0": 7}[kind],
    }
    assert {k: fields[k] for k in expected} == expected
    assert abs(fields["llama.attention.layer_norm_rms_epsilon"] - 1e-5) < 1e-12
    pieces, scores = read_tokenizer(tok)
    tokens = fields["tokenizer.ggml.tokens"]
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert [t.replace(SPACE, " ").encode() for t in tokens[3:]] == pieces[3:]
    assert fields["tokenizer.ggml.scores"] == scores
    assert fields["tokenizer.ggml.token_type"][:4] == [2, 3, 3, 1]

    _, _, w = read_model(path)
    tensors = {t.name: t for t in reader.tensors}
    names = ["token_embd.weight", "output_norm.weight", "output.weight"]
    for layer in range(config.n_layers):
        names += [
            f"blk.{layer}.{n}.weight"
            for n in (
                "attn_norm attn_q attn_k attn_v attn_output ffn_norm ffn_gate ffn_up ffn_down"
            ).split()
        ]
    if config.shared_classifier:
        names.remove("output.weight")
    assert sorted(tensors) == sorted(names)
    qtype = gguf.GGMLQuantizationType
    pairs = {"token_embd.weight": w["token_embedding"], "output_norm.weight": w["rms_final"]}
    if not config.shared_classifier:
        pairs["output.weight"] = w["wcls"]
    for layer in range(config.n_layers):
        pairs[f"blk.{layer}.attn_q.weight"] = w["wq"][layer]  # Meta's row order, as llama.cpp
        pairs[f"blk.{layer}.attn_k.weight"] = w["wk"][layer]
        pairs[f"blk.{layer}.ffn_gate.weight"] = w["w1"][layer]
        pairs[f"blk.{layer}.ffn_down.weight"] = w["w2"][layer]
        pairs[f"blk.{layer}.ffn_up.weight"] = w["w3"][layer]
        pairs[f"blk.{layer}.attn_norm.weight"] = w["rms_att"][layer]
    for tensor_name, want in pairs.items():
        t = tensors[tensor_name]
        assert tuple(reversed(t.shape.tolist())) == want.shape, tensor_name
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(want.shape)
        if want.ndim == 1 or kind == "f32":
            assert t.tensor_type == qtype.F32
            np.testing.assert_array_equal(got, want)
        elif kind == "f16":
            assert t.tensor_type == qtype.F16
            np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32))
        else:
            assert t.tensor_type == qtype.Q8_0
            step = np.abs(want).max() / 127
            assert np.abs(got - want).max() <= step * 0.51


@pytest.mark.parametrize("kind", ["f32", "f16", "q8_0"])
def test_transformers_on_our_gguf_and_our_import_of_it_agree(models, kind, tmp_path):
    """transformers reads the GGUF with llama.cpp's conventions (it undoes the q/k row
    order itself); the same file imported here gives the engine the same logits."""
    name = "tok105" if kind == "q8_0" else "gqa_shared"
    path, tok, _ = models[name]
    convert(path, tmp_path / "m.gguf", tokenizer=tok, dtype=kind)
    convert(tmp_path / "m.gguf", tmp_path / "back" / "model.bin")
    g = Generator(tmp_path / "back" / "model.bin", tmp_path / "back" / "tokenizer.bin")
    ids = random_ids(g.config, seed=2)[:64]
    theirs = hf_logits(tmp_path, ids, gguf_file="m.gguf")
    assert np.abs(theirs - g.logits(ids)).max() < TOLERANCE
    if kind == "f32":
        assert (tmp_path / "back" / "model.bin").read_bytes() == Path(path).read_bytes()
    else:  # the GGUF's rounding, not ours
        original = Generator(path, tok).logits(ids)
        assert 0 < np.abs(original - g.logits(ids)).max() < 1.0


def test_q8_0_gguf_maps_to_v2_exactly(tok105, tmp_path):
    """A Q8_0 GGUF's blocks of 32 are a v2 file of group size 32: its int8 values and
    scales as they are, so v2 -> GGUF q8_0 gives the same tensors back."""
    first = tmp_path / "a.gguf"
    convert(tok105["model"], first, tokenizer=tok105["tokenizer"], dtype="q8_0")
    convert(first, tmp_path / "q.bin", to="v2")
    config, version, w = read_model(tmp_path / "q.bin", keep_quantized=True)
    assert version == 2 and w["token_embedding"].group_size == 32
    reader = gguf.GGUFReader(str(first))
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    blocks = np.asarray(embd.data).reshape(-1, 34)
    np.testing.assert_array_equal(w["token_embedding"].values, blocks[:, 2:].view(np.int8).ravel())
    np.testing.assert_array_equal(
        w["token_embedding"].scales, blocks[:, :2].copy().view(np.float16).ravel()
    )
    convert(tmp_path / "q.bin", tmp_path / "b.gguf", tokenizer=tok105["tokenizer"], dtype="q8_0")
    again = gguf.GGUFReader(str(tmp_path / "b.gguf"))
    for a, b in zip(reader.tensors, again.tensors, strict=True):
        assert a.name == b.name and a.tensor_type == b.tensor_type
        np.testing.assert_array_equal(a.data, b.data)


def test_q8_0_keeps_rows_that_do_not_split_into_32s_in_f16(tmp_path):
    """As llama.cpp's quantizer falls back: here ffn_down, whose rows are hidden_dim = 80."""
    config = ModelConfig(64, 80, 1, 4, 2, 48, 16)
    model = write_model(tmp_path / "m.bin", config, random_weights(config, seed=5))
    tok = write_tokenizer(tmp_path / "t.bin", *synthetic_vocab(48))
    convert(model, tmp_path / "m.gguf", tokenizer=tok, dtype="q8_0")
    kinds = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(tmp_path / "m.gguf")).tensors}
    assert kinds["blk.0.ffn_down.weight"] == "F16"
    assert kinds["blk.0.ffn_up.weight"] == kinds["token_embd.weight"] == "Q8_0"
    convert(tmp_path / "m.gguf", tmp_path / "v2.bin", to="v2")
    assert read_model(tmp_path / "v2.bin", keep_quantized=True)[2]["w2"][0].group_size == 32
    convert(tmp_path / "m.gguf", tmp_path / "v0.bin")
    ids = random_ids(config)
    theirs = hf_logits(tmp_path, ids, gguf_file="m.gguf")
    assert np.abs(theirs - Generator(tmp_path / "v0.bin", tok).logits(ids)).max() < TOLERANCE


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", ["mqa_unshared", "gqa_shared", "mha"])
@pytest.mark.parametrize("version", [0, 1, 2])
@pytest.mark.parametrize("via", ["hf", "gguf"])
def test_round_trips_are_byte_identical(random_model_files, name, version, via, tmp_path):
    path, tok, _, _ = random_model_files[(name, version)]  # v2 with group size 8
    middle = tmp_path / ("hf" if via == "hf" else "m.gguf")
    convert(path, middle, to=via, tokenizer=tok)
    written = convert(middle, tmp_path / "back" / "model.bin", to=f"v{version}")
    assert (tmp_path / "back" / "model.bin").read_bytes() == Path(path).read_bytes()
    assert written[1].read_bytes() == Path(tok).read_bytes()


@pytest.mark.parametrize("via", ["hf", "gguf"])
@pytest.mark.parametrize("which", ["model", "model_q80"])
def test_tok105_round_trips_are_byte_identical(tok105, via, which, tmp_path):
    """model5000.bin's RoPE tables were computed by llama2.c's train.py with torch (their
    last bits differ from NumPy's); they travel along, so even those bytes come back."""
    middle = tmp_path / ("hf" if via == "hf" else "m.gguf")
    convert(tok105[which], middle, tokenizer=tok105["tokenizer"])
    convert(middle, tmp_path / "back.bin", to="v2" if which == "model_q80" else "v0")
    assert (tmp_path / "back.bin").read_bytes() == tok105[which].read_bytes()
    assert (tmp_path / "tokenizer.bin").read_bytes() == tok105["tokenizer"].read_bytes()


def test_quantizing_a_model_file_is_export_py_s_v2(tok105, tmp_path):
    """model5000_q80.bin is llama2.c export.py's v2 of the same weights."""
    assert convert(tok105["model"], tmp_path / "q80.bin", to="v2") == [tmp_path / "q80.bin"]
    assert (tmp_path / "q80.bin").read_bytes() == tok105["model_q80"].read_bytes()
    on_load = Generator(tok105["model"], tok105["tokenizer"], quantize="q8_0")
    ids = on_load.encode("Once upon a time, there was a little girl named Lily.")
    from_file = Generator(tmp_path / "q80.bin", tok105["tokenizer"])
    np.testing.assert_array_equal(from_file.logits(ids), on_load.logits(ids))
    convert(tok105["model"], tmp_path / "q32.bin", to="v2", group_size=32)
    assert Generator(tmp_path / "q32.bin", tok105["tokenizer"]).config.group_size == 32
    convert(tmp_path / "q80.bin", tmp_path / "v1.bin", to="v1")  # and back to fp32
    assert read_model(tmp_path / "v1.bin")[1] == 1


# ------------------------------------------------------------------ bad input


@pytest.fixture()
def hf_folder(models, tmp_path):
    path, tok, _ = models["gqa_shared"]
    convert(path, tmp_path / "hf", tokenizer=tok)
    return tmp_path / "hf"


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is KeyError:
            del config[key]
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hidden_size": KeyError}, "hidden_size is missing"),
        ({"max_position_embeddings": KeyError}, "max_position_embeddings is missing"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling.*linear"),
        ({"rope_theta": 500000.0}, "rope_theta is 500000"),
        ({"rms_norm_eps": 1e-6}, "rms_norm_eps is 1e-06"),
        ({"rms_norm_eps": KeyError}, "rms_norm_eps is 1e-06"),  # transformers' default
        ({"hidden_act": "gelu"}, "hidden_act is 'gelu'"),
        ({"attention_bias": True}, "attention_bias is true"),
        ({"model_type": "mistral"}, "model_type is 'mistral'"),
        ({"head_dim": 16}, "head_dim is 16"),
        ({"num_key_value_heads": 4}, "num_key_value_heads 4 must divide"),
        ({"intermediate_size": 80}, r"mlp.gate_proj.weight has shape \[72, 48\].*\[80, 48\]"),
        ({"tie_word_embeddings": False}, "lm_head.weight is missing"),
    ],
)
def test_what_llama2c_files_cannot_hold_is_refused_by_name(hf_folder, changes, message):
    _edit_config(hf_folder, **changes)
    out = hf_folder.parent / "out"
    with pytest.raises(ValueError, match=message):
        convert(hf_folder, out / "model.bin")
    assert not out.exists() and leftovers(hf_folder.parent) == []


def test_biases_are_refused(hf_folder):
    st = SafetensorsFile(hf_folder / "model.safetensors")
    tensors = {k: ("F32", st.float32(k)) for k in st.keys()}
    tensors["model.layers.0.self_attn.q_proj.bias"] = ("F32", np.zeros(48, np.float32))
    with open(hf_folder / "model.safetensors", "wb") as out:
        write_safetensors(out, tensors, {"format": "pt"})
    with pytest.raises(ValueError, match=r"q_proj.bias.*no biases"):
        convert(hf_folder, hf_folder.parent / "m.bin")
    assert not (hf_folder.parent / "m.bin").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", r"model.safetensors: tensor .* ends at byte .* \(truncated\)"),
        ("empty", "model.safetensors: file is 0 bytes"),
        ("header_length", "model.safetensors: header length .* does not fit"),
        ("header_json", "model.safetensors: the safetensors header is not JSON"),
        ("config_json", "config.json: not JSON"),
        ("no_weights", "no weights"),
    ],
)
def test_a_damaged_folder_is_a_clear_error_and_writes_nothing(hf_folder, damage, message):
    st = hf_folder / "model.safetensors"
    data = st.read_bytes()
    if damage == "truncate":
        st.write_bytes(data[:-100])
    elif damage == "empty":
        st.write_bytes(b"")
    elif damage == "header_length":
        st.write_bytes(b"\xff" * 8 + data[8:])
    elif damage == "header_json":
        st.write_bytes(data[:8] + b"}" + data[9:])
    elif damage == "config_json":
        (hf_folder / "config.json").write_text("{not json")
    else:
        st.unlink()
    error = FileNotFoundError if damage == "no_weights" else FormatError
    out = hf_folder.parent / "out"
    with pytest.raises(error, match=message):
        convert(hf_folder, out / "model.bin")
    assert not out.exists() and leftovers(hf_folder.parent) == []


@pytest.fixture()
def gguf_file(models, tmp_path):
    path, tok, _ = models["mha"]
    convert(path, tmp_path / "m.gguf", tokenizer=tok)
    return tmp_path / "m.gguf"


@pytest.mark.parametrize("cut", [20, 300, 5000, -4])
def test_a_truncated_gguf_is_a_format_error(gguf_file, cut):
    data = gguf_file.read_bytes()
    gguf_file.write_bytes(data[:cut])
    with pytest.raises(FormatError, match=r"m.gguf: "):
        convert(gguf_file, gguf_file.parent / "out.bin")
    assert sorted(p.name for p in gguf_file.parent.iterdir()) == ["m.gguf"]


def test_a_corrupt_gguf_count_is_a_format_error_not_a_hang(gguf_file):
    data = bytearray(gguf_file.read_bytes())
    key = b"tokenizer.ggml.scores"  # float32s: the gguf reader would loop 2**60 times
    at = data.index(key) + len(key) + 8  # the value type and the item type
    data[at : at + 8] = (1 << 60).to_bytes(8, "little")
    gguf_file.write_bytes(bytes(data))
    # in a process of bounded memory and time: should the check go, this fails, not the machine
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
        "from tinystories import FormatError, convert\n"
        "try:\n"
        "    convert(sys.argv[1], sys.argv[2])\n"
        "except FormatError as err:\n"
        "    sys.exit(f'FormatError: {err}')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(gguf_file), str(gguf_file.parent / "out.bin")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "FormatError: " in done.stderr, done.stderr
    assert "a metadata array of 1152921504606846976 items" in done.stderr
    assert not (gguf_file.parent / "out.bin").exists()


def _rewrite_gguf(src: Path, dst: Path, arch: str = "llama", q4_0: bool = False) -> None:
    """A copy of a GGUF, as the gguf package writes it, with another architecture or
    with one matrix in Q4_0."""
    reader = gguf.GGUFReader(str(src))
    writer = gguf.GGUFWriter(str(dst), arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = field.contents()
        key = key.replace("llama.", f"{arch}.")
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, value, field.types[0], sub_type=field.types[-1])
        else:
            writer.add_key_value(key, value, field.types[0])
    for t in reader.tensors:
        data = np.asarray(t.data)
        if q4_0 and t.name == "blk.0.attn_q.weight":
            quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q4_0)
            writer.add_tensor(t.name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q4_0)
        else:
            writer.add_tensor(t.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_other_tensor_types_and_architectures_are_refused(gguf_file, tmp_path):
    _rewrite_gguf(gguf_file, tmp_path / "q4.gguf", q4_0=True)
    with pytest.raises(ValueError, match="blk.0.attn_q.weight is Q4_0; only F32, F16, BF16"):
        convert(tmp_path / "q4.gguf", tmp_path / "out.bin")
    _rewrite_gguf(gguf_file, tmp_path / "qwen.gguf", arch="qwen2")
    with pytest.raises(ValueError, match="general.architecture is 'qwen2'"):
        convert(tmp_path / "qwen.gguf", tmp_path / "out.bin")
    _rewrite_gguf(gguf_file, tmp_path / "same.gguf")  # the rewriting itself is faithful
    convert(tmp_path / "same.gguf", tmp_path / "out.bin")
    assert (tmp_path / "out.bin").exists()


def test_bad_model_files_and_arguments(models, tmp_path):
    path, tok, _ = models["mha"]
    cut = tmp_path / "cut.bin"
    cut.write_bytes(Path(path).read_bytes()[:-10])
    with pytest.raises(FormatError, match="cut.bin: file is .* bytes, header implies"):
        convert(cut, tmp_path / "hf", tokenizer=tok)
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        convert(tmp_path / "nope.bin", tmp_path / "hf")
    with pytest.raises(ValueError, match="cannot tell the format.*pass to="):
        convert(path, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="to='v3' is not a format"):
        convert(path, tmp_path / "m.bin", to="v3")
    with pytest.raises(ValueError, match="dtype 'q8_0' is not for hf output"):
        convert(path, tmp_path / "hf", tokenizer=tok, dtype="q8_0")
    with pytest.raises(ValueError, match="group_size is for v2"):
        convert(path, tmp_path / "m.bin", group_size=32)
    with pytest.raises(ValueError, match="group size 64 does not divide dim 32"):
        convert(path, tmp_path / "m.bin", to="v2", group_size=64)
    with pytest.raises(ValueError, match="same path"):
        convert(path, path, to="v2")
    other = write_tokenizer(tmp_path / "other.bin", *synthetic_vocab(40))
    with pytest.raises(
        ValueError, match="tokenizer has 40 pieces but the model's vocabulary is 50"
    ):
        convert(path, tmp_path / "hf", tokenizer=other)
    with pytest.raises(ValueError, match="hf output needs a tokenizer"):
        convert(path, tmp_path / "hf")  # no tokenizer.bin beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.bin", "other.bin"]


def test_a_failed_export_leaves_an_existing_folder_as_it_was(models, hf_folder, tmp_path):
    before = {p.name: p.read_bytes() for p in hf_folder.iterdir()}
    path, tok, _ = models["mqa_unshared"]
    with pytest.raises(ValueError, match="tokenizer has 80 pieces"):
        convert(path, hf_folder, tokenizer=models["gqa_shared"][1])
    pieces, scores = read_tokenizer(tok)
    pieces[20] = pieces[19]  # fails while the folder is being written
    twice = write_tokenizer(tmp_path / "twice.bin", pieces, scores)
    with pytest.raises(ValueError, match="is both id 19 and id 20"):
        convert(path, hf_folder, tokenizer=twice)
    assert {p.name: p.read_bytes() for p in hf_folder.iterdir()} == before
    assert leftovers(hf_folder.parent) == []
    convert(path, hf_folder, tokenizer=tok)  # a successful one replaces its files
    assert json.loads((hf_folder / "config.json").read_text())["hidden_size"] == 24


# ------------------------------------------------------------------------ CLI


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tinystories", "convert", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_line(models, tmp_path):
    path, tok, _ = models["gqa_shared"]
    done = _cli(path, tmp_path / "hf/", "--tokenizer", tok)  # a directory: hf
    assert done.returncode == 0, done.stderr
    assert f"wrote {tmp_path / 'hf' / 'config.json'}" in done.stdout
    done = _cli(tmp_path / "hf", tmp_path / "m.gguf", "--type", "f16")  # .gguf: gguf
    assert done.returncode == 0, done.stderr
    assert gguf.GGUFReader(str(tmp_path / "m.gguf")).fields["general.file_type"].contents() == 1
    done = _cli(tmp_path / "m.gguf", tmp_path / "out" / "m.bin", "--to", "v2", "--group-size", "16")
    assert done.returncode == 0, done.stderr
    assert Generator(tmp_path / "out" / "m.bin", tmp_path / "out" / "tokenizer.bin")
    done = _cli(tmp_path / "hf", tmp_path / "x.bin", "--type", "q8_0")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "tinystories: error: dtype 'q8_0' is not for a v0 file (its weights are fixed)"
    ]
    assert not (tmp_path / "x.bin").exists()
    helped = _cli("--help")
    assert helped.returncode == 0 and "--tokenizer" in helped.stdout


def test_convert_is_public():
    assert tinystories.convert is convert
    assert "convert" in tinystories.__all__


def test_the_bench_gives_llama_cpp_our_gguf(tmp_path):
    """Without llama.cpp's converter, bench --shapes makes llama-bench's GGUFs here."""
    from tinystories import bench_shapes

    shape = bench_shapes.make_shape("tiny", tmp_path)
    files = bench_shapes.gguf_files(shape, None, None)
    assert sorted(files) == ["fp32", "q80"]
    for fmt, kind in (("fp32", 0), ("q80", 7)):
        reader = gguf.GGUFReader(str(files[fmt]))
        assert reader.fields["general.file_type"].contents() == kind
        assert len(reader.fields["tokenizer.ggml.tokens"].contents()) == shape.config.vocab_size
    stamp = files["fp32"].stat().st_mtime_ns
    assert bench_shapes.gguf_files(shape, None, None) == files  # made once
    assert files["fp32"].stat().st_mtime_ns == stamp
