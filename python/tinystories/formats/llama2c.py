"""llama2.c model files (v0, v1, v2/Q8_0) written and read with NumPy alone.

The C engine reads these files; this module writes them (for the training
export and for tests) and reads them back (for tests and tools), without
torch. Layouts follow llama2.c's ``export.py``:

* v0 — 7 int32 header (a negative vocab size marks an unshared classifier),
  fp32 weights, two legacy RoPE tables, then the classifier if unshared.
* v1 — 256-byte ``ak42`` header, fp32 weights in export.py's version-1 order.
* v2 — 256-byte ``ak42`` header with a group size, norms in fp32, every
  matrix as int8 values followed by its fp32 group scales (Q8_0).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .. import _core
from .._core import FormatError
from .llama2c_header import (  # noqa: F401  (the header, read without NumPy)
    HEADER_BYTES,
    MAGIC,
    V0_HEADER_BYTES,
    ModelConfig,
    check_header,
    file_size,
    parse_header,
)

LAYER_MATRICES = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
VERSIONS = {"v0": 0, "v1": 1, "v2": 2}  # format names (export --format) -> header version


def random_weights(config: ModelConfig, seed: int = 0, scale: float = 0.2) -> dict[str, np.ndarray]:
    """Small random weights of the right shapes (norm weights near 1)."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in config.shapes().items():
        if name.startswith("rms"):
            weights[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            weights[name] = (scale * rng.standard_normal(shape)).astype(np.float32)
    return weights


def _check_weights(config: ModelConfig, weights: dict, quantized: bool = False) -> dict:
    """The weights as contiguous fp32 arrays of the right shapes. With ``quantized`` (v2),
    matrices may also be :class:`QuantizedTensor` s, layer matrices lists of per-layer
    arrays or ``QuantizedTensor`` s, which are kept as they are."""
    checked = {}
    for name, shape in config.shapes().items():
        if name not in weights:
            raise ValueError(f"missing weight {name!r}")
        value = weights[name]
        if quantized and name in LAYER_MATRICES and isinstance(value, (list, tuple)):
            if len(value) != config.n_layers:
                raise ValueError(f"weight {name!r} has {len(value)} layers, expected {shape[0]}")
            checked[name] = [
                _check_matrix(f"{name}[{i}]", m, shape[1:]) for i, m in enumerate(value)
            ]
        elif quantized and name not in ("rms_att", "rms_ffn", "rms_final"):
            checked[name] = _check_matrix(name, value, shape)
        else:
            array = np.ascontiguousarray(value, dtype=np.float32)
            if array.shape != shape:
                raise ValueError(f"weight {name!r} has shape {array.shape}, expected {shape}")
            checked[name] = array
    return checked


def _check_matrix(name: str, value, shape: tuple[int, ...]):
    if isinstance(value, QuantizedTensor):
        n = int(np.prod(shape))
        if tuple(value.shape) != shape or value.values.size != n or value.group_size <= 0:
            raise ValueError(f"weight {name!r} has shape {value.shape}, expected {shape}")
        if n % value.group_size or value.scales.size != n // value.group_size:
            raise ValueError(f"weight {name!r}: {value.scales.size} scales for {n} values")
        return value
    array = np.ascontiguousarray(value, dtype=np.float32)
    if array.shape != shape:
        raise ValueError(f"weight {name!r} has shape {array.shape}, expected {shape}")
    return array


def rope_tables(config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """The cos and sin tables (``[seq_len, head_size / 2]``) :func:`write_model` puts in a
    v0 file. Legacy v0 files carry precomputed RoPE tables; readers skip them (llama2.c's
    ``train.py`` computes them with torch, whose last bits can differ)."""
    half = config.head_size // 2
    freqs = 1.0 / (10000.0 ** (np.arange(0, config.head_size, 2)[:half] / config.head_size))
    angles = np.outer(np.arange(config.seq_len), freqs)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def _v1_order(config: ModelConfig, w: dict[str, np.ndarray]) -> list[np.ndarray]:
    order = [w["rms_att"], w["rms_ffn"], w["rms_final"], w["token_embedding"]]
    order += [w[name] for name in LAYER_MATRICES]
    if not config.shared_classifier:
        order.append(w["wcls"])
    return order


def quantize_q80(weights: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization in groups of ``group_size`` (llama2.c's Q8_0)."""
    flat = np.asarray(weights, dtype=np.float32).reshape(-1)
    if group_size <= 0 or flat.size % group_size:
        raise ValueError(f"{flat.size} values do not split into groups of {group_size}")
    groups = flat.reshape(-1, group_size)
    scales = (np.abs(groups).max(axis=1) / np.float32(127.0)).astype(np.float32)
    safe = np.where(scales == 0, np.float32(1.0), scales)[:, None]
    values = np.round(groups / safe).astype(np.int8)
    return values.reshape(-1), scales


def dequantize_q80(values: np.ndarray, scales: np.ndarray, group_size: int) -> np.ndarray:
    groups = values.astype(np.float32).reshape(-1, group_size)
    return (groups * scales[:, None]).reshape(-1)


@dataclass(frozen=True)
class QuantizedTensor:
    """One Q8_0 matrix as stored: int8 values (flattened) and one scale per group."""

    values: np.ndarray
    scales: np.ndarray
    group_size: int
    shape: tuple[int, ...]

    def dequantize(self) -> np.ndarray:
        return dequantize_q80(self.values, self.scales, self.group_size).reshape(self.shape)


def default_group_size(config: ModelConfig) -> int:
    """The Q8_0 group size a v2 file gets unless told otherwise: the engine's one rule
    (``ts_default_group_size``), llama2.c export.py's, the largest power of two up to
    ``MAX_GROUP_SIZE`` dividing ``dim``. Where it does not divide ``hidden_dim``, w2's last
    ``hidden_dim % group_size`` inputs are left out of its products, as runq does; pass a
    smaller ``group_size`` dividing both to keep them.
    """
    return _core.default_group_size(config.dim)


def full_group_size(config: ModelConfig) -> int:
    """The largest power of two up to ``MAX_GROUP_SIZE`` dividing both ``dim`` and
    ``hidden_dim``: a v2 file in which every weight takes part in the products. The
    trainer's exports use it (the tok105 preset, dim 128 and hidden 352, gets 32 where
    :func:`default_group_size` gives 64 and drops w2's last 32 inputs: the seed's
    ``model5000_q80.bin`` scores 1.07 on text where its fp32 file scores 0.86)."""
    group_size = default_group_size(config)
    while config.hidden_dim % group_size:
        group_size //= 2
    return group_size


def write_model(
    path: str | Path,
    config: ModelConfig,
    weights: dict[str, np.ndarray],
    version: int = 0,
    group_size: int | None = None,
    rope: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Writes ``weights`` (names and shapes from ``ModelConfig.shapes``) as a model file.

    For v2, matrices may be :class:`QuantizedTensor` s (layer matrices: a list with one
    per layer, as ``read_model(keep_quantized=True)`` returns them); those of group size
    ``group_size`` are written as they are, the others quantized. ``rope`` replaces a v0
    file's legacy RoPE tables (``rope_tables(config)`` by default).
    """
    w = _check_weights(config, weights, quantized=version == 2)
    path = Path(path)
    if rope is None:
        rope = rope_tables(config)
    else:
        rope = tuple(np.ascontiguousarray(t, dtype=np.float32) for t in rope)
        expected = (config.seq_len, config.head_size // 2)
        if len(rope) != 2 or any(t.shape != expected for t in rope):
            raise ValueError(f"the RoPE tables must be two arrays of shape {expected}")
    dims = (config.dim, config.hidden_dim, config.n_layers, config.n_heads, config.n_kv_heads)
    with open(path, "wb") as out:
        if version == 0:
            vocab = config.vocab_size if config.shared_classifier else -config.vocab_size
            out.write(struct.pack("<7i", *dims, vocab, config.seq_len))
            body = [w["token_embedding"], w["rms_att"], w["wq"], w["wk"], w["wv"], w["wo"]]
            body += [w["rms_ffn"], w["w1"], w["w2"], w["w3"], w["rms_final"], *rope]
            if not config.shared_classifier:
                body.append(w["wcls"])
            _write_arrays(out, body)
        elif version == 1:
            _write_header(out, config, 1, b"")
            _write_arrays(out, _v1_order(config, w))
        elif version == 2:
            group_size = group_size or default_group_size(config)
            if group_size <= 0 or config.dim % group_size:
                raise ValueError(f"group size {group_size} must divide dim {config.dim}")
            _write_header(out, config, 2, struct.pack("<i", group_size))
            _write_arrays(out, [w["rms_att"], w["rms_ffn"], w["rms_final"]])
            matrices = [w["token_embedding"]]
            for name in LAYER_MATRICES:
                matrices += list(w[name])  # one tensor per layer, as export.py writes them
            if not config.shared_classifier:
                matrices.append(w["wcls"])
            for matrix in matrices:
                if isinstance(matrix, QuantizedTensor) and matrix.group_size == group_size:
                    values, scales = matrix.values, matrix.scales
                elif isinstance(matrix, QuantizedTensor):
                    values, scales = quantize_q80(matrix.dequantize(), group_size)
                else:
                    values, scales = quantize_q80(matrix, group_size)
                out.write(np.ascontiguousarray(values, dtype=np.int8).tobytes())
                out.write(scales.astype("<f4").tobytes())
        else:
            raise ValueError(f"unknown model file version {version} (expected 0, 1 or 2)")
    return path


def _write_header(out: BinaryIO, config: ModelConfig, version: int, extra: bytes) -> None:
    header = struct.pack(
        "<Ii7iB",
        MAGIC,
        version,
        config.dim,
        config.hidden_dim,
        config.n_layers,
        config.n_heads,
        config.n_kv_heads,
        config.vocab_size,
        config.seq_len,
        int(config.shared_classifier),
    )
    header += extra
    out.write(header + b"\0" * (HEADER_BYTES - len(header)))


def _write_arrays(out: BinaryIO, arrays: list[np.ndarray]) -> None:
    for array in arrays:
        out.write(np.ascontiguousarray(array, dtype="<f4").tobytes())


def read_model(
    path: str | Path, keep_quantized: bool = False
) -> tuple[ModelConfig, int, dict[str, np.ndarray]]:
    """Reads a model file into fp32 arrays (v2 matrices dequantized).

    Returns ``(config, version, weights)``. With ``keep_quantized`` a v2 file's
    matrices stay :class:`QuantizedTensor` (layer matrices as a list, one per
    layer). Meant for tests and tools; the C engine has its own loader.
    """
    data = Path(path).read_bytes()
    config, version, group_size, offset = parse_header(data, path)
    shapes = config.shapes()

    def take(shape: tuple[int, ...], dtype: str = "<f4") -> np.ndarray:
        nonlocal offset
        count = int(np.prod(shape))
        array = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)
        offset += array.nbytes
        return array.astype(np.float32) if dtype == "<f4" else array

    w: dict[str, np.ndarray] = {}
    if version == 0:
        for name in ("token_embedding", "rms_att", "wq", "wk", "wv", "wo"):
            w[name] = take(shapes[name])
        for name in ("rms_ffn", "w1", "w2", "w3", "rms_final"):
            w[name] = take(shapes[name])
        offset += 2 * config.seq_len * (config.head_size // 2) * 4
        if not config.shared_classifier:
            w["wcls"] = take(shapes["wcls"])
    elif version == 1:
        names = ["rms_att", "rms_ffn", "rms_final", "token_embedding", *LAYER_MATRICES]
        if not config.shared_classifier:
            names.append("wcls")
        for name in names:
            w[name] = take(shapes[name])
    elif version == 2:
        for name in ("rms_att", "rms_ffn", "rms_final"):
            w[name] = take(shapes[name])

        def take_q80(shape: tuple[int, ...]):
            values = take((int(np.prod(shape)),), "<i1")
            scales = take((values.size // group_size,))
            tensor = QuantizedTensor(values, scales, group_size, shape)
            return tensor if keep_quantized else tensor.dequantize()

        w["token_embedding"] = take_q80(shapes["token_embedding"])
        for name in LAYER_MATRICES:
            layers = [take_q80(shapes[name][1:]) for _ in range(config.n_layers)]
            w[name] = layers if keep_quantized else np.stack(layers)
        if not config.shared_classifier:
            w["wcls"] = take_q80(shapes["wcls"])
    if offset != len(data):
        raise ValueError(f"{path}: file is {len(data)} bytes, layout implies {offset}")
    return config, version, w


def read_rope_tables(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The legacy RoPE tables of a v0 file (cos, sin), as stored."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
        config, version, _, _ = parse_header(head, path)
        if version != 0:
            raise ValueError(f"{path}: a v{version} file has no RoPE tables")
        c = config
        weights = c.vocab_size * c.dim + c.n_layers * (
            2 * c.dim + c.dim * (2 * c.dim + 2 * c.kv_dim)
        )
        weights += c.n_layers * 3 * c.dim * c.hidden_dim + c.dim
        shape = (c.seq_len, c.head_size // 2)
        f.seek(V0_HEADER_BYTES + 4 * weights)
        raw = f.read(8 * shape[0] * shape[1])
    if len(raw) != 8 * shape[0] * shape[1]:
        raise FormatError(f"{path}: file ends inside the RoPE tables")
    tables = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(2, *shape)
    return tables[0], tables[1]
