"""``tinystories.convert``: llama2.c model files (v0, v1, v2), Hugging Face transformers
folders and GGUF files into one another, and a model file into another version (an fp32
file quantized to v2, say).

Every output is written under a temporary name beside its destination and renamed into
place only once all of it is written, so a failure leaves nothing behind.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._core import FormatError
from . import gguf_io, hf
from .llama2c import (
    LAYER_MATRICES,
    VERSIONS,
    ModelConfig,
    QuantizedTensor,
    check_header,
    default_group_size,
    read_model,
    read_rope_tables,
    rope_tables,
    write_model,
)
from .spm import Vocab, is_model_proto, read_vocab
from .tokenizer_bin import write_tokenizer

FORMATS = ("v0", "v1", "v2", "hf", "gguf")
HF_TYPES = tuple(hf.DTYPES)  # f32, f16, bf16
GGUF_TYPES = gguf_io.TYPES  # f32, f16, q8_0
TOKENIZER_NAME = "tokenizer.bin"  # written beside a model file converted from HF or GGUF
GROUP_SIZE_KEY = gguf_io.GROUP_SIZE_KEY
ROPE_TABLES_KEY = gguf_io.ROPE_TABLES_KEY


@dataclass
class Model:
    """A model between formats: fp32 weights under llama2.c's names (a v2 file's or a
    Q8_0 GGUF's matrices kept as ``QuantizedTensor`` s, layer matrices as per-layer lists),
    its vocabulary, and what a llama2.c file holds beyond the weights."""

    config: ModelConfig
    weights: dict
    vocab: Vocab | None = None
    sp_model: bytes | None = None  # the sentencepiece .model the vocabulary came from
    group_size: int | None = None  # a v2 source's Q8_0 group size
    rope: tuple[np.ndarray, np.ndarray] | None = None  # a v0 source's unusual RoPE tables
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def dense(self) -> dict[str, np.ndarray]:
        """fp32 weights, layers stacked (quantized matrices dequantized)."""
        out = {}
        for name, value in self.weights.items():
            if isinstance(value, QuantizedTensor):
                out[name] = value.dequantize()
            elif isinstance(value, (list, tuple)):
                out[name] = np.stack(
                    [v.dequantize() if isinstance(v, QuantizedTensor) else v for v in value]
                )
            else:
                out[name] = value
        return out


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    to: str | None = None,
    tokenizer: str | os.PathLike | None = None,
    *,
    dtype: str | None = None,
    group_size: int | None = None,
) -> list[Path]:
    """Converts the model at ``src`` to ``dst``; returns the paths written.

    ``src``: a llama2.c model file (v0, v1 or v2), a GGUF file or a Hugging Face folder
    (told apart by content). ``to``: ``"v0"``, ``"v1"``, ``"v2"``, ``"hf"`` or ``"gguf"``;
    by default ``dst`` decides (a directory or a name ending in ``/``: hf; ``.gguf``:
    gguf; ``.bin``: v0). ``tokenizer``: a ``tokenizer.bin`` or sentencepiece ``.model``
    (default: the source's own, or ``tokenizer.bin`` beside a llama2.c file); a model
    file converted from HF or GGUF gets ``tokenizer.bin`` beside it. ``dtype``: the
    weights of an HF folder (``f32``, ``f16``, ``bf16``) or a GGUF (``f32``, ``f16``,
    ``q8_0``); f32 by default. ``group_size``: v2's Q8_0 group size (default: the
    source's, 32 for a Q8_0 GGUF, else :func:`~tinystories.formats.llama2c.default_group_size`).
    """
    src_path, dst_path = Path(src), Path(dst)
    to = _target(dst, to)
    if not src_path.exists():
        raise FileNotFoundError(f"{src_path}: no such file or directory")
    if src_path.resolve() == dst_path.resolve():
        raise ValueError(f"{src_path}: source and destination are the same path")
    if dtype is not None:
        allowed = {"hf": HF_TYPES, "gguf": GGUF_TYPES}.get(to, ())
        if dtype not in allowed:
            where = f"{to} output" if allowed else f"a {to} file (its weights are fixed)"
            choices = f": one of {', '.join(allowed)}" if allowed else ""
            raise ValueError(f"dtype {dtype!r} is not for {where}{choices}")
    if group_size is not None:
        if to != "v2":
            raise ValueError("group_size is for v2 output only")
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
            raise ValueError(f"group_size must be a positive integer, not {group_size!r}")
    if to == "hf":
        if dst_path.exists() and not dst_path.is_dir():
            raise ValueError(f"{dst_path}: exists and is not a directory (hf output is a folder)")
    elif dst_path.is_dir():
        raise IsADirectoryError(f"{dst_path}: is a directory ({to} output is a file)")
    elif to in VERSIONS and dst_path.name == TOKENIZER_NAME:
        raise ValueError(f"{dst_path}: a model file cannot be named {TOKENIZER_NAME}")

    if to == "gguf":
        gguf_io.require_gguf()  # before the work, not after it
    model = load(src_path, tokenizer)
    with _Staging() as stage:
        if to in VERSIONS:
            _write_llama2c(stage, model, dst_path, VERSIONS[to], group_size)
        elif to == "hf":
            _write_hf(stage, model, dst_path, dtype or "f32")
        else:
            _write_gguf(stage, model, dst_path, dtype or "f32")
        return stage.commit()


def _target(dst: str | os.PathLike, to: str | None) -> str:
    if to is not None:
        if to not in FORMATS:
            raise ValueError(f"to={to!r} is not a format: one of {', '.join(FORMATS)}")
        return to
    text, path = os.fspath(dst), Path(dst)
    if text.endswith(("/", os.sep)) or path.is_dir():
        return "hf"
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        return "gguf"
    if suffix == ".bin":
        return "v0"
    if not suffix:
        return "hf"
    raise ValueError(f"{dst}: cannot tell the format from the name; pass to= (--to)")


# ------------------------------------------------------------------- reading


def load(path: Path, tokenizer: str | os.PathLike | None = None) -> Model:
    """The model at ``path`` (any format) with its vocabulary, or ``tokenizer`` 's."""
    if path.is_dir():
        model = _load_hf(path)
    else:
        with open(path, "rb") as f:
            head = f.read(4)
        model = _load_gguf(path) if head == b"GGUF" else _load_llama2c(path, tokenizer is None)
    if tokenizer is not None:
        model.vocab, model.sp_model = _read_tokenizer(Path(tokenizer))
    if model.vocab is not None and len(model.vocab) != model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(model.vocab)} pieces but the model's vocabulary is "
            f"{model.config.vocab_size}"
        )
    return model


def _read_tokenizer(path: Path) -> tuple[Vocab, bytes | None]:
    data = path.read_bytes()
    vocab = read_vocab(path)
    return vocab, data if is_model_proto(data) else None


def _load_llama2c(path: Path, find_tokenizer: bool) -> Model:
    check_header(path)  # a FormatError naming the file for a short or padded one
    config, version, weights = read_model(path, keep_quantized=True)
    model = Model(config, weights, source=f"llama2.c v{version}")
    if version == 2:
        model.group_size = weights["token_embedding"].group_size
    if version == 0:
        cos, sin = read_rope_tables(path)
        usual = rope_tables(config)
        if not (np.array_equal(cos, usual[0]) and np.array_equal(sin, usual[1])):
            model.rope = (cos, sin)  # kept so that v0 -> hf/gguf -> v0 is byte-identical
    beside = path.with_name(TOKENIZER_NAME)
    if find_tokenizer and beside.is_file():
        model.vocab, model.sp_model = _read_tokenizer(beside)
    return model


def _load_hf(folder: Path) -> Model:
    config, weights, metadata = hf.read_folder(folder)
    model = Model(config, weights, source="Hugging Face")
    sp_path = folder / "tokenizer.model"
    if sp_path.is_file():
        model.sp_model = sp_path.read_bytes()
        model.vocab = Vocab.from_model_proto(model.sp_model, sp_path)
    else:
        model.notes.append(f"{folder} has no tokenizer.model")
    model.group_size = _group_size(metadata.get(GROUP_SIZE_KEY), folder)
    tables = metadata.get(ROPE_TABLES_KEY)
    if tables is not None:
        try:
            raw = base64.b64decode(tables, validate=True)
        except ValueError:
            raise FormatError(f"{folder}: metadata {ROPE_TABLES_KEY} is not base64") from None
        model.rope = _rope(np.frombuffer(raw, dtype="<f4"), config)
    return model


def _load_gguf(path: Path) -> Model:
    g = gguf_io.GGUFModel(path)
    weights = g.weights(keep_q8_0=True)
    model = Model(g.config, weights, vocab=g.vocab(), source="GGUF")
    if model.vocab is None:
        model.notes.append(f"{path} has no tokenizer metadata")
    recorded = g.fields.get(GROUP_SIZE_KEY)
    q8_0 = any(isinstance(v, QuantizedTensor) for v in _matrices(weights))
    if q8_0 and g.config.dim % gguf_io.Q8_BLOCK == 0:
        q8_0_groups = gguf_io.Q8_BLOCK  # v2 then holds its blocks exactly
    else:
        q8_0_groups = None
    model.group_size = _group_size(recorded, path) or q8_0_groups
    tables = g.fields.get(ROPE_TABLES_KEY)
    if tables is not None:
        model.rope = _rope(np.asarray(tables, dtype=np.float32), g.config)
    return model


def _matrices(weights: dict):
    for name, value in weights.items():
        if name in LAYER_MATRICES and isinstance(value, (list, tuple)):
            yield from value
        else:
            yield value


def _group_size(value, where: Path) -> int | None:
    if value is None:
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise FormatError(f"{where}: metadata {GROUP_SIZE_KEY} is {value!r}") from None
    return size if size > 0 else None


def _rope(flat: np.ndarray, config: ModelConfig) -> tuple[np.ndarray, np.ndarray] | None:
    shape = (config.seq_len, config.head_size // 2)
    if flat.size != 2 * shape[0] * shape[1]:
        return None  # not this model's: the usual tables then
    tables = flat.astype(np.float32).reshape(2, *shape)
    return tables[0], tables[1]


# ------------------------------------------------------------------- writing


def _write_llama2c(
    stage: _Staging, model: Model, dst: Path, version: int, group_size: int | None
) -> None:
    config = model.config
    out = stage.file(dst)
    if version == 2:
        size = group_size or model.group_size or default_group_size(config)
        if config.dim % size:
            raise ValueError(f"group size {size} does not divide dim {config.dim}")
        write_model(out, config, model.weights, version=2, group_size=size)
    else:
        write_model(out, config, model.dense(), version=version, rope=model.rope)
    if model.source.startswith("llama2.c"):
        return  # a model file's tokenizer is its own file already
    if model.vocab is not None:
        tok = stage.file(dst.with_name(TOKENIZER_NAME))
        write_tokenizer(tok, model.vocab.llama2c_pieces(), model.vocab.scores)


def _extras(model: Model) -> dict:
    extras: dict = {}
    if model.group_size is not None and model.source == "llama2.c v2":
        extras[GROUP_SIZE_KEY] = model.group_size
    if model.rope is not None:
        extras[ROPE_TABLES_KEY] = np.concatenate([t.reshape(-1) for t in model.rope])
    return extras


def _need_vocab(model: Model, what: str) -> Vocab:
    if model.vocab is None:
        raise ValueError(
            f"{what} output needs a tokenizer: pass tokenizer= (--tokenizer) with a "
            f"tokenizer.bin or sentencepiece .model"
            + (f" ({'; '.join(model.notes)})" if model.notes else "")
        )
    return model.vocab


def _write_hf(stage: _Staging, model: Model, dst: Path, dtype: str) -> None:
    vocab = _need_vocab(model, "hf")
    folder = stage.folder(dst)
    config = model.config
    metadata = {}
    for key, value in _extras(model).items():
        if isinstance(value, int):
            metadata[key] = str(value)
        else:
            metadata[key] = base64.b64encode(value.astype("<f4").tobytes()).decode("ascii")
    files = {
        "config.json": hf.to_json(hf.hf_config(config, dtype)),
        "generation_config.json": hf.generation_config(),
        **hf.tokenizer_files(vocab, config.seq_len),
    }
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "tokenizer.model").write_bytes(model.sp_model or vocab.to_model_proto())
    with open(folder / "model.safetensors", "wb") as out:
        hf.write_weights(out, config, model.dense(), dtype, metadata)


def _write_gguf(stage: _Staging, model: Model, dst: Path, kind: str) -> None:
    vocab = _need_vocab(model, "gguf")
    extras = _extras(model)
    if kind == "q8_0":
        extras.pop(GROUP_SIZE_KEY, None)  # its Q8_0 blocks are groups of 32 now
    weights = model.weights if kind == "q8_0" else model.dense()
    gguf_io.write_gguf(stage.file(dst), model.config, weights, vocab, kind, extras)


class _Staging:
    """Temporary outputs beside their destinations, renamed into place by ``commit``;
    removed (with any directory made for them) if the block fails."""

    def __init__(self) -> None:
        self.files: list[tuple[Path, Path]] = []  # (temporary, final)
        self.folders: list[tuple[Path, Path]] = []
        self.made: list[Path] = []

    def __enter__(self) -> _Staging:
        return self

    def _parent(self, final: Path) -> Path:
        parent = final.parent
        missing = []
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for d in reversed(missing):
            d.mkdir()
            self.made.append(d)
        return final.parent

    def _temporary(self, final: Path) -> Path:
        return self._parent(final) / f".{final.name}.{secrets.token_hex(4)}.tmp"

    def file(self, final: Path) -> Path:
        tmp = self._temporary(final)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
        self.files.append((tmp, final))
        return tmp

    def folder(self, final: Path) -> Path:
        tmp = self._temporary(final)
        tmp.mkdir()
        self.folders.append((tmp, final))
        return tmp

    def commit(self) -> list[Path]:
        written = []
        for tmp, final in self.files:
            os.replace(tmp, final)
            written.append(final)
        for tmp, final in self.folders:
            if not final.exists():
                os.rename(tmp, final)
                written += sorted(final.iterdir())
            else:
                for item in sorted(tmp.iterdir()):
                    os.replace(item, final / item.name)
                    written.append(final / item.name)
                tmp.rmdir()
        self.files, self.folders, self.made = [], [], []
        return written

    def __exit__(self, kind, error, trace) -> None:
        for tmp, _ in self.files:
            tmp.unlink(missing_ok=True)
        for tmp, _ in self.folders:
            shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(self.made):
            try:
                d.rmdir()
            except OSError:
                pass
