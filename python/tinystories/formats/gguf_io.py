"""GGUF files of llama-architecture models, written and read with the ``gguf`` package
(llama.cpp's own Python library, imported when a GGUF is converted).

GGUF keeps llama2.c's (Meta's) row order for the rotary pairs, so the matrices go over as
they are: ``token_embd``, ``blk.N.attn_q/attn_k/attn_v/attn_output``,
``blk.N.ffn_gate/ffn_up/ffn_down`` (llama2.c's w1/w3/w2), ``blk.N.attn_norm``,
``blk.N.ffn_norm``, ``output_norm`` and ``output`` (omitted when the classifier is the
embedding, as llama.cpp then reads ``token_embd``). Matrices are F32, F16 or Q8_0 (blocks of
32: an fp16 scale and 32 int8s; a matrix whose rows do not split into 32s stays F16, as
llama.cpp's quantizer falls back); norms are always F32.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

import numpy as np

from .._core import FormatError
from .llama2c import LAYER_MATRICES, ModelConfig, QuantizedTensor
from .spm import NORMAL, TYPE_NAMES, Vocab

Q8_BLOCK = 32
TYPES = ("f32", "f16", "q8_0")
NORM_EPS = 1e-5
ROPE_THETA = 10000.0
GROUP_SIZE_KEY = "tinystories.group_size"  # a v2 source's Q8_0 group size
ROPE_TABLES_KEY = "tinystories.rope_tables"  # a v0 source's RoPE tables, when not the usual
LAYER_NAMES = {
    "rms_att": "attn_norm",
    "wq": "attn_q",
    "wk": "attn_k",
    "wv": "attn_v",
    "wo": "attn_output",
    "rms_ffn": "ffn_norm",
    "w1": "ffn_gate",
    "w3": "ffn_up",
    "w2": "ffn_down",
}
GLOBAL_NAMES = {"token_embedding": "token_embd", "rms_final": "output_norm", "wcls": "output"}


def require_gguf():
    try:
        import gguf
    except ImportError:
        raise ImportError(
            "GGUF files need the gguf package: pip install 'tinystories[convert]' (or gguf)"
        ) from None
    return gguf


# ------------------------------------------------------------------- writing


def write_gguf(
    path: Path,
    config: ModelConfig,
    weights: dict,
    vocab: Vocab,
    kind: str = "f32",
    extra: dict | None = None,
    name: str = "tinystories",
) -> None:
    """Writes a llama GGUF. ``weights`` are llama2.c's names: fp32 arrays (layers stacked)
    or, for layer matrices, lists with a ``QuantizedTensor`` or an array per layer; Q8_0
    tensors of group size 32 are written as they are (their scales rounded to fp16)."""
    gguf = require_gguf()
    if kind not in TYPES:
        raise ValueError(f"unknown GGUF type {kind!r} (expected one of {', '.join(TYPES)})")
    writer = gguf.GGUFWriter(str(path), "llama")
    try:
        writer.add_name(name)
        writer.add_context_length(config.seq_len)
        writer.add_embedding_length(config.dim)
        writer.add_block_count(config.n_layers)
        writer.add_feed_forward_length(config.hidden_dim)
        writer.add_head_count(config.n_heads)
        writer.add_head_count_kv(config.n_kv_heads)
        writer.add_rope_dimension_count(config.head_size)
        writer.add_rope_freq_base(ROPE_THETA)
        writer.add_layer_norm_rms_eps(NORM_EPS)
        writer.add_vocab_size(config.vocab_size)
        file_types = {"f32": 0, "f16": 1, "q8_0": 7}  # llama.cpp's LlamaFileType
        writer.add_file_type(file_types[kind])
        if kind == "q8_0":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_tokenizer_model("llama")
        writer.add_token_list(vocab.pieces)
        writer.add_token_scores([float(s) for s in vocab.scores])
        writer.add_token_types([int(t) for t in vocab.types])
        writer.add_unk_token_id(vocab.unk_id)
        writer.add_bos_token_id(vocab.bos_id)
        writer.add_eos_token_id(vocab.eos_id)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_add_space_prefix(True)
        for key, value in (extra or {}).items():
            if isinstance(value, int):
                writer.add_uint32(key, value)
            else:
                writer.add_array(key, [float(x) for x in value])
        for tensor_name, array, matrix in _tensors(config, weights):
            rows_of_32 = tuple(array.shape)[-1] % Q8_BLOCK == 0
            if not matrix or kind == "f32":
                writer.add_tensor(tensor_name, _dense(array))
            elif kind == "f16" or not rows_of_32:  # q8_0: F16 where rows are not 32s
                writer.add_tensor(tensor_name, _dense(array).astype(np.float16))
            else:
                writer.add_tensor(
                    tensor_name, _q8_0_bytes(gguf, array), raw_dtype=gguf.GGMLQuantizationType.Q8_0
                )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _tensors(config: ModelConfig, w: dict):
    """(GGUF name, weight, is a matrix) in llama.cpp's order."""
    yield "token_embd.weight", w["token_embedding"], True
    for layer in range(config.n_layers):
        for name, short in LAYER_NAMES.items():
            yield f"blk.{layer}.{short}.weight", w[name][layer], name in LAYER_MATRICES
    yield "output_norm.weight", w["rms_final"], False
    if not config.shared_classifier:
        yield "output.weight", w["wcls"], True


def tensor_names(config: ModelConfig) -> list[str]:
    """Every tensor a llama GGUF of ``config`` holds, in the order written."""
    names = ["token_embd.weight"]
    for layer in range(config.n_layers):
        names += [f"blk.{layer}.{short}.weight" for short in LAYER_NAMES.values()]
    names.append("output_norm.weight")
    if not config.shared_classifier:
        names.append("output.weight")
    return names


def _dense(array) -> np.ndarray:
    if isinstance(array, QuantizedTensor):
        return array.dequantize()
    return np.ascontiguousarray(array, dtype=np.float32)


def _q8_0_bytes(gguf, array) -> np.ndarray:
    """The Q8_0 blocks of a matrix as uint8 rows: kept when already in groups of 32,
    quantized by gguf's copy of ggml's reference routine otherwise."""
    if isinstance(array, QuantizedTensor) and array.group_size == Q8_BLOCK:
        rows = array.shape[0]
        scales = array.scales.astype(np.float16).view(np.uint8).reshape(-1, 2)
        values = array.values.view(np.uint8).reshape(-1, Q8_BLOCK)
        return np.concatenate([scales, values], axis=1).reshape(rows, -1)
    return gguf.quants.quantize(_dense(array), gguf.GGMLQuantizationType.Q8_0)


# ------------------------------------------------------------------- reading

# GGUF value types -> bytes (8: string, 9: array)
SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def check_layout(path: Path) -> None:
    """Walks a GGUF's header, metadata and tensor infos, checking every count and length
    against the file's size (the gguf reader trusts them: a corrupt array count makes it
    loop for ever). Raises :class:`~tinystories.FormatError`."""
    size = path.stat().st_size
    if size < 24:
        raise FormatError(f"{path}: file is {size} bytes, too short for a GGUF header")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        _walk(path, data, size)


def _walk(path: Path, data, size: int) -> None:
    at = 0

    def take(n: int) -> bytes:
        nonlocal at
        if n < 0 or at + n > size:
            raise FormatError(f"{path}: ends at byte {size}, inside the GGUF header (truncated)")
        chunk = data[at : at + n]
        at += n
        return chunk

    def u32() -> int:
        return struct.unpack("<I", take(4))[0]

    def u64() -> int:
        return struct.unpack("<Q", take(8))[0]

    def value(kind: int, depth: int = 0) -> None:
        if kind in SCALAR_BYTES:
            take(SCALAR_BYTES[kind])
        elif kind == 8:
            take(u64())
        elif kind == 9 and depth < 4:
            item, count = u32(), u64()
            if count * SCALAR_BYTES.get(item, 1) > size - at:  # an item is a byte at least
                raise FormatError(
                    f"{path}: a metadata array of {count} items runs past the end of the file "
                    "(corrupt or truncated)"
                )
            if item in SCALAR_BYTES:
                take(count * SCALAR_BYTES[item])
            else:
                for _ in range(count):
                    value(item, depth + 1)
        else:
            raise FormatError(f"{path}: metadata value type {kind} (corrupt)")

    if take(4) != b"GGUF":
        raise FormatError(f"{path}: not a GGUF file (no GGUF magic)")
    version = u32()
    if version not in (2, 3):
        raise FormatError(f"{path}: GGUF version {version} (expected 2 or 3)")
    n_tensors, n_kv = u64(), u64()
    if n_tensors > size or n_kv > size:
        raise FormatError(f"{path}: {n_tensors} tensors and {n_kv} metadata keys (corrupt)")
    for _ in range(n_kv):
        take(u64())  # the key
        value(u32())
    for _ in range(n_tensors):
        take(u64())  # the name
        n_dims = u32()
        if n_dims > 8:
            raise FormatError(f"{path}: a tensor with {n_dims} dimensions (corrupt)")
        take(8 * n_dims + 4 + 8)  # dims, type, offset


class GGUFModel:
    """A llama GGUF's configuration, tensors and vocabulary, checked on open."""

    def __init__(self, path: str | Path) -> None:
        gguf = require_gguf()
        self.path = path = Path(path)
        self._gguf = gguf
        size = path.stat().st_size
        check_layout(path)  # so that the reader meets no count it would loop over
        try:
            reader = gguf.GGUFReader(str(path))
        except (
            ValueError,
            IndexError,
            KeyError,
            OverflowError,
            TypeError,
            UnicodeDecodeError,
        ) as err:
            raise FormatError(
                f"{path}: not a readable GGUF file ({err or type(err).__name__})"
            ) from None
        if reader.byte_order != "I":
            raise ValueError(f"{path}: a big-endian GGUF; only little-endian ones convert")
        self.reader = reader
        self.fields = {}
        for key, field in reader.fields.items():
            try:
                self.fields[key] = field.contents()
            except (ValueError, IndexError, UnicodeDecodeError) as err:
                raise FormatError(f"{path}: metadata {key} is unreadable ({err})") from None
        self.tensors = {t.name: t for t in reader.tensors}
        for t in reader.tensors:
            end = t.data_offset + t.n_bytes
            if end > size or t.data.nbytes != t.n_bytes:
                raise FormatError(
                    f"{path}: tensor {t.name} ends at byte {end} of {size} (truncated)"
                )
        self.config = self._config()

    def _key(self, name: str, kind=int, required: bool = True):
        value = self.fields.get(name)
        if value is None:
            if required:
                raise ValueError(f"{self.path}: metadata {name} is missing")
            return None
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{self.path}: metadata {name} is {value!r}, not an integer")
        if kind is float and not isinstance(value, (int, float)):
            raise ValueError(f"{self.path}: metadata {name} is {value!r}, not a number")
        if kind is str and not isinstance(value, str):
            raise ValueError(f"{self.path}: metadata {name} is {value!r}, not a string")
        return value

    def _config(self) -> ModelConfig:
        arch = self._key("general.architecture", str)
        if arch != "llama":
            raise ValueError(
                f"{self.path}: general.architecture is {arch!r}; only 'llama' converts"
            )
        for key in self.fields:
            if key.startswith(("llama.rope.scaling.", "llama.expert_")) and key not in (
                "llama.rope.scaling.type",
            ):
                raise ValueError(
                    f"{self.path}: metadata {key} is set; llama2.c has plain RoPE and no experts"
                )
        scaling = self.fields.get("llama.rope.scaling.type")
        if scaling not in (None, "none"):
            raise ValueError(
                f"{self.path}: llama.rope.scaling.type is {scaling!r}; llama2.c "
                "files have plain RoPE"
            )
        dim = self._key("llama.embedding_length")
        n_heads = self._key("llama.attention.head_count")
        n_kv = self._key("llama.attention.head_count_kv", required=False)
        n_kv = n_heads if n_kv is None else n_kv
        embd = self.tensors.get("token_embd.weight")
        if embd is None:
            raise ValueError(f"{self.path}: tensor token_embd.weight is missing")
        vocab_size = int(embd.shape[1]) if len(embd.shape) == 2 else -1
        config = ModelConfig(
            dim=dim,
            hidden_dim=self._key("llama.feed_forward_length"),
            n_layers=self._key("llama.block_count"),
            n_heads=n_heads,
            n_kv_heads=n_kv,
            vocab_size=vocab_size,
            seq_len=self._key("llama.context_length"),
            shared_classifier="output.weight" not in self.tensors,
        )
        values = (config.dim, config.hidden_dim, config.n_layers, n_heads, n_kv, config.seq_len)
        if min(values) <= 0 or vocab_size <= 0:
            raise ValueError(f"{self.path}: a dimension is not positive: {config}")
        if dim % n_heads or n_heads % n_kv:
            raise ValueError(
                f"{self.path}: llama.attention.head_count {n_heads} must divide "
                f"llama.embedding_length {dim} and head_count_kv {n_kv} must divide it"
            )
        if config.head_size % 2:
            raise ValueError(f"{self.path}: the head size {config.head_size} is odd")
        rope_dim = self._key("llama.rope.dimension_count", required=False)
        if rope_dim is not None and rope_dim != config.head_size:
            raise ValueError(
                f"{self.path}: llama.rope.dimension_count is {rope_dim}; llama2.c rotates "
                f"the whole head ({config.head_size})"
            )
        theta = self._key("llama.rope.freq_base", float, required=False)
        if theta is not None and theta != ROPE_THETA:
            raise ValueError(f"{self.path}: llama.rope.freq_base is {theta}; llama2.c uses 10000")
        eps = self._key("llama.attention.layer_norm_rms_epsilon", float, required=False)
        if eps is not None and abs(eps - NORM_EPS) > 1e-9:
            raise ValueError(
                f"{self.path}: llama.attention.layer_norm_rms_epsilon is {eps:g}; llama2.c "
                "uses 1e-5"
            )
        expected = set(tensor_names(config))
        extra = sorted(set(self.tensors) - expected)
        if extra:
            raise ValueError(f"{self.path}: tensors llama2.c files cannot hold: {extra[:3]}")
        missing = sorted(expected - set(self.tensors))
        if missing:
            raise ValueError(f"{self.path}: tensor {missing[0]} is missing")
        return config

    # ---------------------------------------------------------------- tensors

    def tensor(self, name: str, shape: tuple[int, ...], keep_q8_0: bool = False):
        """Tensor ``name`` (PyTorch's (out, in) order) as fp32, or as a ``QuantizedTensor``
        of group size 32 when it is Q8_0 and ``keep_q8_0``."""
        t = self.tensors[name]
        qtype = self._gguf.GGMLQuantizationType
        found = tuple(int(d) for d in reversed(t.shape.tolist()))
        if found != shape:
            raise ValueError(
                f"{self.path}: tensor {name} has shape {list(found)}; the metadata implies "
                f"{list(shape)}"
            )
        kind = t.tensor_type
        if kind == qtype.F32:
            return np.array(t.data, dtype=np.float32).reshape(shape)
        if kind == qtype.F16:
            return np.asarray(t.data).astype(np.float32).reshape(shape)
        if kind == qtype.BF16:
            bits = np.asarray(t.data).view(np.uint16)
            return (bits.astype(np.uint32) << 16).view(np.float32).reshape(shape)
        if kind == qtype.Q8_0:
            blocks = np.asarray(t.data, dtype=np.uint8).reshape(-1, 2 + Q8_BLOCK)
            scales = blocks[:, :2].copy().view(np.float16).reshape(-1).astype(np.float32)
            values = blocks[:, 2:].copy().view(np.int8).reshape(-1)
            q = QuantizedTensor(values, scales, Q8_BLOCK, shape)
            return q if keep_q8_0 else q.dequantize()
        raise ValueError(
            f"{self.path}: tensor {name} is {kind.name}; only F32, F16, BF16 and Q8_0 "
            "tensors convert"
        )

    def weights(self, keep_q8_0: bool = False) -> dict:
        """llama2.c's weights: fp32 arrays, layer matrices as per-layer lists when
        ``keep_q8_0`` (Q8_0 ones as ``QuantizedTensor``)."""
        config = self.config
        shapes = config.shapes()
        w: dict = {}
        for name in ("token_embedding", "rms_final", "wcls"):
            if name in shapes:
                w[name] = self.tensor(f"{GLOBAL_NAMES[name]}.weight", shapes[name], keep_q8_0)
        for name, short in LAYER_NAMES.items():
            layers = [
                self.tensor(f"blk.{layer}.{short}.weight", shapes[name][1:], keep_q8_0)
                for layer in range(config.n_layers)
            ]
            if name.startswith("rms"):
                if any(isinstance(x, QuantizedTensor) for x in layers):
                    layers = [
                        x.dequantize() if isinstance(x, QuantizedTensor) else x for x in layers
                    ]
                w[name] = np.stack(layers)
            else:
                w[name] = layers if keep_q8_0 else np.stack(layers)
        return w

    # ------------------------------------------------------------------ vocab

    def vocab(self) -> Vocab | None:
        """The sentencepiece vocabulary in the metadata; None when there is none."""
        tokens = self.fields.get("tokenizer.ggml.tokens")
        if tokens is None:
            return None
        model = self.fields.get("tokenizer.ggml.model")
        if model != "llama":
            raise ValueError(
                f"{self.path}: tokenizer.ggml.model is {model!r}; llama2.c tokenizers are "
                "sentencepiece ('llama'): pass a tokenizer"
            )
        n = len(tokens)
        scores = self.fields.get("tokenizer.ggml.scores")
        types = self.fields.get("tokenizer.ggml.token_type")
        if scores is None or len(scores) != n:
            raise ValueError(f"{self.path}: tokenizer.ggml.scores does not match the {n} tokens")
        if types is None:
            types = [NORMAL] * n
        if len(types) != n or any(t not in TYPE_NAMES for t in types):
            raise ValueError(f"{self.path}: tokenizer.ggml.token_type is not {n} token types")
        ids = {}
        for key, default in (("unknown", 0), ("bos", 1), ("eos", 2)):
            value = self.fields.get(f"tokenizer.ggml.{key}_token_id", default)
            if not isinstance(value, int) or not 0 <= value < n:
                raise ValueError(f"{self.path}: tokenizer.ggml.{key}_token_id is {value!r}")
            ids[key] = value
        return Vocab(
            list(tokens),
            [float(s) for s in scores],
            [int(t) for t in types],
            unk_id=ids["unknown"],
            bos_id=ids["bos"],
            eos_id=ids["eos"],
        )
