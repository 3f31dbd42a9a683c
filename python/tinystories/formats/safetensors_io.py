"""``.safetensors`` files read and written with NumPy alone (bf16 included).

Layout: a little-endian uint64 ``n``, ``n`` bytes of JSON (``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {str: str}}``), then the tensors' bytes,
little-endian and row-major, covering the data section exactly.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .._core import FormatError

# safetensors dtype -> (NumPy dtype of the stored bytes, bytes per element); BF16 is read as
# its uint16 bit patterns and widened by to_float32.
DTYPES = {
    "F32": ("<f4", 4),
    "F16": ("<f2", 2),
    "BF16": ("<u2", 2),
    "F64": ("<f8", 8),
}
MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own bound


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16(values: np.ndarray) -> np.ndarray:
    """bf16 bit patterns of ``values``, rounded to nearest even (NaNs stay NaN)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    nan = np.isnan(values)
    return np.where(nan, (bits >> 16) | 0x40, rounded).astype(np.uint16)


class SafetensorsFile:
    """One ``.safetensors`` file: its header checked on open, tensors read on demand."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise FormatError(f"{self.path}: file is {len(head)} bytes, not safetensors")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise FormatError(
                    f"{self.path}: header length {n} does not fit the file of {size} bytes "
                    "(truncated, or not safetensors)"
                )
            raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise FormatError(f"{self.path}: the safetensors header is not JSON ({err})") from None
        if not isinstance(header, dict):
            raise FormatError(f"{self.path}: the safetensors header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            raise FormatError(f"{self.path}: __metadata__ is not an object")
        self.metadata: dict[str, str] = {str(k): str(v) for k, v in metadata.items()}
        self.data_start = 8 + n
        data_size = size - self.data_start
        self.entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        spans = []
        for name, info in header.items():
            try:
                dtype, shape = info["dtype"], tuple(int(d) for d in info["shape"])
                begin, end = (int(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise FormatError(f"{self.path}: tensor {name!r} has a malformed entry") from None
            if any(d < 0 for d in shape) or not 0 <= begin <= end:
                raise FormatError(f"{self.path}: tensor {name!r} has a bad shape or offsets")
            if end > data_size:
                raise FormatError(
                    f"{self.path}: tensor {name!r} ends at byte {end} of a data section of "
                    f"{data_size} (truncated)"
                )
            if dtype in DTYPES and end - begin != int(np.prod(shape)) * DTYPES[dtype][1]:
                raise FormatError(
                    f"{self.path}: tensor {name!r} ({dtype} {list(shape)}) has {end - begin} bytes"
                )
            self.entries[name] = (dtype, shape, begin, end)
            spans.append((begin, end, name))
        spans.sort()
        at = 0
        for begin, end, name in spans:
            if begin != at:
                raise FormatError(
                    f"{self.path}: tensor {name!r} starts at byte {begin}, not {at} "
                    "(overlapping tensors or a hole)"
                )
            at = end
        if at != data_size:
            raise FormatError(f"{self.path}: {data_size - at} bytes after the last tensor")

    def keys(self) -> list[str]:
        return list(self.entries)

    def dtype(self, name: str) -> str:
        return self.entries[name][0]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][1]

    def read(self, name: str) -> np.ndarray:
        """Tensor ``name`` as stored (BF16 as uint16 bits); see :meth:`float32`."""
        dtype, shape, begin, end = self.entries[name]
        if dtype not in DTYPES:
            raise ValueError(
                f"{self.path}: tensor {name!r} is {dtype}; only {', '.join(DTYPES)} are read"
            )
        with open(self.path, "rb") as f:
            f.seek(self.data_start + begin)
            raw = f.read(end - begin)
        if len(raw) != end - begin:
            raise FormatError(f"{self.path}: tensor {name!r} is cut short (file changed?)")
        return np.frombuffer(raw, dtype=DTYPES[dtype][0]).reshape(shape)

    def float32(self, name: str) -> np.ndarray:
        array = self.read(name)
        if self.dtype(name) == "BF16":
            return bf16_to_float32(array)
        return array.astype(np.float32)


def write_safetensors(
    out: BinaryIO, tensors: Mapping[str, tuple[str, np.ndarray]], metadata: Mapping[str, str]
) -> None:
    """Writes ``{name: (dtype, array)}`` in the given order (BF16 arrays as uint16 bits)."""
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    at = 0
    arrays = []
    for name, (dtype, array) in tensors.items():
        stored = np.ascontiguousarray(array, dtype=DTYPES[dtype][0])
        header[name] = {
            "dtype": dtype,
            "shape": list(stored.shape),
            "data_offsets": [at, at + stored.nbytes],
        }
        at += stored.nbytes
        arrays.append(stored)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
    out.write(struct.pack("<Q", len(raw)))
    out.write(raw)
    for stored in arrays:
        out.write(stored.tobytes())
