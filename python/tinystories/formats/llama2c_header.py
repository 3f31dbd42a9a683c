"""The llama2.c model header: :class:`ModelConfig`, parsing, and the file size it implies.

Apart from :mod:`.llama2c` (the weights, with NumPy) so that inference and the
download check import no NumPy: its BLAS threads start with it and spin for a
while on the cores a fresh process's first generation wants.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from .._core import FormatError

MAGIC = 0x616B3432  # "ak42" read as a little-endian uint32
HEADER_BYTES = 256  # v1 and v2
V0_HEADER_BYTES = 28  # 7 int32


@dataclass(frozen=True)
class ModelConfig:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool = True

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.head_size * self.n_kv_heads

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every weight, PyTorch (out, in) convention, layers stacked."""
        d, h, n, kv = self.dim, self.hidden_dim, self.n_layers, self.kv_dim
        shapes = {
            "token_embedding": (self.vocab_size, d),
            "rms_att": (n, d),
            "wq": (n, d, d),
            "wk": (n, kv, d),
            "wv": (n, kv, d),
            "wo": (n, d, d),
            "rms_ffn": (n, d),
            "w1": (n, h, d),
            "w2": (n, d, h),
            "w3": (n, h, d),
            "rms_final": (d,),
        }
        if not self.shared_classifier:
            shapes["wcls"] = (self.vocab_size, d)
        return shapes


def parse_header(data: bytes, path: str | Path = "model") -> tuple[ModelConfig, int, int, int]:
    """``(config, version, group_size, header bytes)`` from the start of a model file.

    Raises :class:`~tinystories.FormatError` for a header the engine would refuse
    (short file, unknown version, dims that do not fit together).
    """
    if len(data) >= 8 and struct.unpack_from("<I", data, 0)[0] == MAGIC:
        if len(data) < HEADER_BYTES:
            raise FormatError(f"{path}: file is {len(data)} bytes, smaller than the header")
        (version,) = struct.unpack_from("<i", data, 4)
        if version not in (1, 2):
            raise FormatError(f"{path}: unsupported version {version} (expected 1 or 2)")
        dims = struct.unpack_from("<7i", data, 8)
        config = ModelConfig(*dims, shared_classifier=bool(data[36]))
        group_size = struct.unpack_from("<i", data, 37)[0] if version == 2 else 0
        offset = HEADER_BYTES
    else:
        if len(data) < V0_HEADER_BYTES:
            raise FormatError(f"{path}: file is {len(data)} bytes, smaller than the header")
        dims = struct.unpack_from("<7i", data, 0)
        version, group_size, offset = 0, 0, V0_HEADER_BYTES
        config = ModelConfig(*dims[:5], abs(dims[5]), dims[6], shared_classifier=dims[5] > 0)
    c = config
    if min(c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len) <= 0:
        raise FormatError(f"{path}: the header has a dimension <= 0: {config}")
    if c.dim % c.n_heads or c.n_heads % c.n_kv_heads:
        raise FormatError(f"{path}: n_heads must divide dim and n_kv_heads n_heads: {config}")
    if version == 2 and (group_size <= 0 or c.dim % group_size):
        raise FormatError(f"{path}: group_size {group_size} does not divide dim {c.dim}")
    return config, version, group_size, offset


def file_size(config: ModelConfig, version: int, group_size: int = 0) -> int:
    """The exact size in bytes of a model file with this header (what the engine requires)."""
    c, kv = config, config.kv_dim
    n_cls = 0 if c.shared_classifier else 1
    matrices = c.vocab_size * c.dim * (1 + n_cls)
    matrices += c.n_layers * (2 * c.dim * c.dim + 2 * c.dim * kv + 3 * c.dim * c.hidden_dim)
    norms = c.n_layers * 2 * c.dim + c.dim
    if version == 2:
        return HEADER_BYTES + 4 * norms + matrices + 4 * (matrices // group_size)
    rope = c.seq_len * c.head_size if version == 0 else 0
    header = V0_HEADER_BYTES if version == 0 else HEADER_BYTES
    return header + 4 * (norms + matrices + rope)


def check_header(path: str | Path) -> tuple[ModelConfig, int]:
    """``(config, version)`` of a model file whose size is what its header implies.

    Reads only the header: the cheap check of a download; loading the file with the
    engine checks everything else.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    config, version, group_size, _ = parse_header(head, path)
    size, implied = path.stat().st_size, file_size(config, version, group_size)
    if size != implied:
        raise FormatError(f"{path}: file is {size} bytes, header implies {implied}")
    return config, version
