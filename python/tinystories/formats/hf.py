"""Hugging Face transformers folders of a ``LlamaForCausalLM``, written and read without torch.

A folder holds ``config.json``, ``generation_config.json``, ``model.safetensors`` and the
tokenizer: ``tokenizer.model`` (sentencepiece), ``tokenizer.json`` (the ``tokenizers``
library's BPE, encoding as llama2.c's ``encode`` does), ``tokenizer_config.json`` and
``special_tokens_map.json``. Reading also takes sharded safetensors and, with torch,
``pytorch_model.bin`` files.

The weights are llama2.c's under Hugging Face's names, except that HF's rotary embedding
pairs dimension ``i`` of a head with ``i + head_size/2`` where llama2.c pairs ``2i`` with
``2i + 1``: the rows of ``q_proj`` (per head) and ``k_proj`` (per kv head) are permuted
from one order to the other (:func:`to_hf_rows`, :func:`from_hf_rows`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._core import FormatError
from .llama2c import ModelConfig
from .safetensors_io import SafetensorsFile, float32_to_bf16, write_safetensors
from .spm import BYTE, CONTROL, NORMAL, SPACE, UNKNOWN, USER_DEFINED, Vocab

NORM_EPS = 1e-5  # the engine's RMSNorm epsilon (run.c's)
ROPE_THETA = 10000.0  # the engine's RoPE base
DTYPES = {"f32": ("F32", "float32"), "f16": ("F16", "float16"), "bf16": ("BF16", "bfloat16")}
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# llama2.c name -> HF name within a layer (``model.layers.N.``)
LAYER_NAMES = {
    "rms_att": "input_layernorm.weight",
    "wq": "self_attn.q_proj.weight",
    "wk": "self_attn.k_proj.weight",
    "wv": "self_attn.v_proj.weight",
    "wo": "self_attn.o_proj.weight",
    "rms_ffn": "post_attention_layernorm.weight",
    "w1": "mlp.gate_proj.weight",
    "w3": "mlp.up_proj.weight",
    "w2": "mlp.down_proj.weight",
}
GLOBAL_NAMES = {
    "token_embedding": "model.embed_tokens.weight",
    "rms_final": "model.norm.weight",
    "wcls": "lm_head.weight",
}


# ------------------------------------------------------------------ q/k rows


def to_hf_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama2.c's interleaved rotary pairs -> HF's halves, per head (rows of q or k)."""
    rows, cols = w.shape
    half = rows // n_heads // 2
    return w.reshape(n_heads, half, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def from_hf_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of :func:`to_hf_rows`."""
    rows, cols = w.shape
    half = rows // n_heads // 2
    return w.reshape(n_heads, 2, half, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


# -------------------------------------------------------------------- config


def hf_config(config: ModelConfig, dtype: str = "f32") -> dict:
    """``config.json`` of a ``LlamaForCausalLM`` computing what the engine computes."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.dim,
        "intermediate_size": config.hidden_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_size,
        "hidden_act": "silu",
        "max_position_embeddings": config.seq_len,
        "rms_norm_eps": NORM_EPS,
        "rope_theta": ROPE_THETA,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": config.shared_classifier,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": DTYPES[dtype][1],
    }


def model_config(cfg: dict, path: Path) -> ModelConfig:
    """The llama2.c configuration of an HF ``config.json``, refusing what llama2.c files
    cannot hold (the message names the field)."""

    def field(name: str, default=None, required: bool = False):
        if name not in cfg or cfg[name] is None:
            if required:
                raise ValueError(f"{path}: {name} is missing")
            return default
        return cfg[name]

    def positive(name: str, default=None) -> int:
        value = field(name, default, required=default is None)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{path}: {name} is {value!r}, expected a positive integer")
        return value

    model_type = field("model_type", required=True)
    if model_type != "llama":
        raise ValueError(f"{path}: model_type is {model_type!r}; only 'llama' converts")
    architectures = field("architectures", [])
    if architectures and "LlamaForCausalLM" not in architectures:
        raise ValueError(f"{path}: architectures is {architectures!r}, not LlamaForCausalLM")
    dim = positive("hidden_size")
    n_heads = positive("num_attention_heads")
    config = ModelConfig(
        dim=dim,
        hidden_dim=positive("intermediate_size"),
        n_layers=positive("num_hidden_layers"),
        n_heads=n_heads,
        n_kv_heads=positive("num_key_value_heads", n_heads),
        vocab_size=positive("vocab_size"),
        seq_len=positive("max_position_embeddings"),
        shared_classifier=bool(field("tie_word_embeddings", False)),
    )
    if dim % n_heads or n_heads % config.n_kv_heads:
        raise ValueError(
            f"{path}: num_attention_heads {n_heads} must divide hidden_size {dim} and "
            f"num_key_value_heads {config.n_kv_heads} must divide num_attention_heads"
        )
    if config.head_size % 2:
        raise ValueError(f"{path}: the head size {config.head_size} is odd (RoPE needs pairs)")
    head_dim = field("head_dim")
    if head_dim is not None and head_dim != config.head_size:
        raise ValueError(
            f"{path}: head_dim is {head_dim}; llama2.c files need hidden_size / "
            f"num_attention_heads = {config.head_size}"
        )
    act = field("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"{path}: hidden_act is {act!r}; llama2.c files use silu")
    eps = field("rms_norm_eps", 1e-6)  # transformers' LlamaConfig default
    if not isinstance(eps, (int, float)) or not math.isclose(eps, NORM_EPS, rel_tol=1e-6):
        raise ValueError(f"{path}: rms_norm_eps is {eps!r}; llama2.c files use {NORM_EPS}")
    for flag in ("attention_bias", "mlp_bias"):
        if field(flag, False):
            raise ValueError(f"{path}: {flag} is true; llama2.c files have no biases")
    if field("quantization_config") is not None:
        raise ValueError(f"{path}: quantization_config is set; only plain weights convert")
    rope = field("rope_parameters") or {}
    scaling = field("rope_scaling") or {}
    for name, value in (("rope_parameters", rope), ("rope_scaling", scaling)):
        if not isinstance(value, dict):
            raise ValueError(f"{path}: {name} is {value!r}")
        kind = value.get("rope_type", value.get("type", "default"))
        if kind != "default":
            raise ValueError(
                f"{path}: {name} has rope_type {kind!r}; llama2.c files have plain RoPE"
            )
    theta = rope.get("rope_theta", field("rope_theta", ROPE_THETA))
    if not isinstance(theta, (int, float)) or theta != ROPE_THETA:
        raise ValueError(f"{path}: rope_theta is {theta!r}; llama2.c files use {ROPE_THETA:g}")
    return config


# ------------------------------------------------------------------- weights


def hf_tensors(config: ModelConfig, w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The fp32 weights under HF's names, in HF's order (q and k rows permuted)."""
    out = {GLOBAL_NAMES["token_embedding"]: w["token_embedding"]}
    for layer in range(config.n_layers):
        for name, hf_name in LAYER_NAMES.items():
            array = w[name][layer]
            if name == "wq":
                array = to_hf_rows(array, config.n_heads)
            elif name == "wk":
                array = to_hf_rows(array, config.n_kv_heads)
            out[f"model.layers.{layer}.{hf_name}"] = array
    out[GLOBAL_NAMES["rms_final"]] = w["rms_final"]
    if not config.shared_classifier:
        out[GLOBAL_NAMES["wcls"]] = w["wcls"]
    return out


def write_weights(out, config: ModelConfig, w: dict, dtype: str, metadata: dict) -> None:
    """``model.safetensors`` of the fp32 weights ``w`` in ``dtype`` (f32, f16 or bf16)."""
    st_dtype = DTYPES[dtype][0]
    tensors = {}
    for name, array in hf_tensors(config, w).items():
        if dtype == "f16":
            array = array.astype(np.float16)
        elif dtype == "bf16":
            array = float32_to_bf16(array)
        tensors[name] = (st_dtype, array)
    write_safetensors(out, tensors, {"format": "pt", **metadata})


class _Weights:
    """The tensors of an HF folder by name, whichever files hold them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.metadata: dict[str, str] = {}
        self._readers: dict[str, Callable[[], np.ndarray]] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        for name in WEIGHT_FILES:
            if (folder / name).is_file():
                break
        else:
            raise FileNotFoundError(f"{folder}: no weights ({' or '.join(WEIGHT_FILES)})")
        files = [folder / name]
        if name.endswith(".index.json"):
            try:
                weight_map = json.loads((folder / name).read_text(encoding="utf-8"))["weight_map"]
                files = [folder / f for f in dict.fromkeys(weight_map.values())]
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
                raise FormatError(f"{folder / name}: not a weight index ({err})") from None
        for file in files:
            if not file.is_file():
                raise FileNotFoundError(f"{file}: missing (named by {folder / name})")
            if file.suffix == ".safetensors":
                self._add_safetensors(file)
            else:
                self._add_torch(file)

    def _add_safetensors(self, file: Path) -> None:
        st = SafetensorsFile(file)
        self.metadata.update(st.metadata)
        for key in st.keys():
            self._readers[key] = lambda key=key: st.float32(key)
            self._shapes[key] = st.shape(key)

    def _add_torch(self, file: Path) -> None:
        try:
            import torch
        except ImportError:
            raise ImportError(
                f"{file}: reading pytorch_model.bin files needs torch (pip install torch), "
                "or save the model as safetensors"
            ) from None
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # torch raises many kinds for a bad file
            raise FormatError(f"{file}: not a readable PyTorch state dict ({err})") from None
        if not isinstance(state, dict):
            raise FormatError(f"{file}: holds a {type(state).__name__}, not a state dict")
        for key, tensor in state.items():
            if not isinstance(tensor, torch.Tensor):
                raise FormatError(f"{file}: {key} is not a tensor")
            self._readers[key] = lambda t=tensor: t.detach().float().numpy()
            self._shapes[key] = tuple(tensor.shape)

    def names(self) -> list[str]:
        return list(self._readers)

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self._readers:
            raise ValueError(f"{self.folder}: tensor {name} is missing")
        if self._shapes[name] != shape:
            raise ValueError(
                f"{self.folder}: tensor {name} has shape {list(self._shapes[name])}; "
                f"config.json implies {list(shape)}"
            )
        return self._readers[name]()


def read_folder(folder: str | Path) -> tuple[ModelConfig, dict[str, np.ndarray], dict]:
    """``(config, fp32 weights by llama2.c name, safetensors metadata)`` of an HF folder."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: missing (not a Hugging Face model folder)")
    try:
        cfg = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FormatError(f"{config_path}: not JSON ({err})") from None
    if not isinstance(cfg, dict):
        raise FormatError(f"{config_path}: not a JSON object")
    config = model_config(cfg, config_path)
    weights = _Weights(folder)
    shapes = config.shapes()
    names = set(weights.names())
    extra = sorted(
        n for n in names - set(expected_names(config)) if not n.endswith("rotary_emb.inv_freq")
    )
    if config.shared_classifier:
        extra = [n for n in extra if n != GLOBAL_NAMES["wcls"]]  # tied: transformers ignores it
    if extra:
        more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
        hint = " (llama2.c files have no biases)" if any(n.endswith(".bias") for n in extra) else ""
        raise ValueError(f"{folder}: tensors llama2.c files cannot hold: {extra[:3]}{more}{hint}")
    if not config.shared_classifier and GLOBAL_NAMES["wcls"] not in names:
        raise ValueError(
            f"{folder}: lm_head.weight is missing and config.json's tie_word_embeddings is false"
        )
    w: dict[str, np.ndarray] = {}
    for name in ("token_embedding", "rms_final", "wcls"):
        if name in shapes:
            w[name] = weights.get(GLOBAL_NAMES[name], shapes[name])
    for name, hf_name in LAYER_NAMES.items():
        layers = []
        for layer in range(config.n_layers):
            array = weights.get(f"model.layers.{layer}.{hf_name}", shapes[name][1:])
            if name == "wq":
                array = from_hf_rows(array, config.n_heads)
            elif name == "wk":
                array = from_hf_rows(array, config.n_kv_heads)
            layers.append(array)
        w[name] = np.stack(layers)
    return config, w, weights.metadata


def expected_names(config: ModelConfig) -> list[str]:
    names = [GLOBAL_NAMES["token_embedding"], GLOBAL_NAMES["rms_final"]]
    if not config.shared_classifier:
        names.append(GLOBAL_NAMES["wcls"])
    for layer in range(config.n_layers):
        names += [f"model.layers.{layer}.{n}" for n in LAYER_NAMES.values()]
    return names


# ----------------------------------------------------------------- tokenizer


def tokenizer_files(vocab: Vocab, seq_len: int) -> dict[str, str]:
    """``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``.

    ``tokenizer.json`` is a ``tokenizers`` BPE whose merges are every split of every
    piece, ranked by the piece's score: it encodes as llama2.c's ``encode`` does (a
    dummy-prefix space, no other normalization, one ``<unk>`` per missing character or
    byte fallback, merges by score) wherever the merged pieces' scores differ, as
    sentencepiece's trainer makes them. The class is ``PreTrainedTokenizerFast``, which
    loads that file as it is (``LlamaTokenizer`` would rebuild its own pipeline).
    """
    ids: dict[str, int] = {}
    for i, piece in enumerate(vocab.pieces):
        if piece in ids:
            raise ValueError(
                f"piece {piece!r} is both id {ids[piece]} and id {i}; Hugging Face tokenizers "
                "need distinct pieces"
            )
        ids[piece] = i
    mergeable = {NORMAL, USER_DEFINED, BYTE}
    candidates = []
    for i, piece in enumerate(vocab.pieces):
        if vocab.types[i] not in (NORMAL, USER_DEFINED) or len(piece) < 2:
            continue
        if not vocab.scores[i] > -1e10:  # llama2.c never picks these
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            a, b = ids.get(left), ids.get(right)
            if a is not None and b is not None and {vocab.types[a], vocab.types[b]} <= mergeable:
                candidates.append((-vocab.scores[i], i, cut, left, right))
    candidates.sort()
    merges = [f"{left} {right}" for *_, left, right in candidates]
    if any(" " in left or " " in right for *_, left, right in candidates):
        raise ValueError("a piece holds a plain space; Hugging Face merges cannot spell it")
    special = [i for i, t in enumerate(vocab.types) if t in (CONTROL, UNKNOWN)]
    bos, eos, unk = (vocab.pieces[i] for i in (vocab.bos_id, vocab.eos_id, vocab.unk_id))
    if SPACE in ids:
        normalizer = {
            "type": "Sequence",
            "normalizers": [
                {"type": "Prepend", "prepend": SPACE},
                {"type": "Replace", "pattern": {"String": " "}, "content": SPACE},
            ],
        }
    else:
        normalizer = None  # llama2.c adds no dummy prefix without a space piece
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": vocab.pieces[i],
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i in special
        ],
        "normalizer": normalizer,
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": bos, "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {bos: {"id": bos, "ids": [vocab.bos_id], "tokens": [bos]}},
        },
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ],
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": unk,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": vocab.byte_fallback,
            "ignore_merges": False,
            "vocab": ids,
            "merges": merges,
        },
    }
    specials = {"bos_token": bos, "eos_token": eos, "unk_token": unk}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "pad_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": seq_len,
        "added_tokens_decoder": {
            str(i): {
                "content": vocab.pieces[i],
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for i in special
        },
    }
    return {
        "tokenizer.json": to_json(tokenizer),
        "tokenizer_config.json": to_json(tokenizer_config),
        "special_tokens_map.json": to_json(specials),
    }


def generation_config() -> str:
    # llama2.c stops at BOS (a new story); EOS ends a sequence as in HF.
    return to_json({"bos_token_id": 1, "eos_token_id": [2, 1]})


def to_json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"
