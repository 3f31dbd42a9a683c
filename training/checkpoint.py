"""Checkpoints: ``ckpt.pt`` written and read, and exported to ``model.bin`` + ``tokenizer.bin``.

``v0`` is the legacy llama2.c format that its ``run`` and the seed use; ``v1``
is fp32 with the 256-byte header; ``v2`` is Q8_0 (int8 groups + fp32 scales).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..formats.llama2c import VERSIONS, full_group_size, write_model
from .config import ModelArgs
from .model import Transformer, to_numpy_weights


def _version(fmt: str | int) -> int:
    if isinstance(fmt, int) and fmt in VERSIONS.values():
        return fmt
    if fmt not in VERSIONS:
        raise ValueError(f"unknown export format {fmt!r} (expected v0, v1 or v2)")
    return VERSIONS[fmt]


def save_checkpoint(path: Path, state: dict) -> None:
    """Writes ``state`` to ``path`` atomically: a ``.tmp`` beside it, flushed to the disk,
    then renamed over the old file (and the rename itself flushed), so a process killed
    at any moment, or a machine losing power, leaves the previous checkpoint whole."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    if hasattr(os, "O_DIRECTORY"):  # POSIX: the directory entry is what the rename changed
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def export_model(
    model: Transformer,
    model_path: str | Path,
    tokenizer: str | Path | bytes | None = None,
    *,
    fmt: str | int = "v0",
    group_size: int | None = None,
) -> tuple[Path, Path | None]:
    """Writes ``model_path`` and, given a tokenizer (path or bytes), ``tokenizer.bin`` beside it.
    A v2 file's group size defaults to one that divides every matrix's rows
    (:func:`~tinystories.formats.llama2c.full_group_size`), so no weight is left out."""
    version = _version(fmt)
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    config, weights = to_numpy_weights(model)
    if version == 2:
        group_size = group_size or full_group_size(config)
    write_model(model_path, config, weights, version=version, group_size=group_size)
    tokenizer_path = None
    if tokenizer is not None:
        tokenizer_path = model_path.parent / "tokenizer.bin"
        if isinstance(tokenizer, bytes):
            tokenizer_path.write_bytes(tokenizer)
        elif Path(tokenizer).resolve() != tokenizer_path.resolve():
            shutil.copyfile(tokenizer, tokenizer_path)
    return model_path, tokenizer_path


def read_checkpoint(ckpt_path: str | Path, required: tuple[str, ...] = ("model", "model_args")):
    """The dict in a ``ckpt.pt``; clear errors for a missing, damaged or foreign file."""
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt_path}")
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many kinds of errors for a damaged file
        raise ValueError(
            f"{ckpt_path}: not a readable checkpoint, the file is damaged or truncated "
            f"({type(err).__name__}: {err})"
        ) from err
    if not isinstance(checkpoint, dict) or not set(required) <= set(checkpoint):
        raise ValueError(f"{ckpt_path}: not a tinystories checkpoint (expected {list(required)})")
    return checkpoint


def load_checkpoint_model(ckpt_path: str | Path) -> tuple[Transformer, dict]:
    """The model stored in a ``ckpt.pt`` and the checkpoint dict itself."""
    checkpoint = read_checkpoint(ckpt_path)
    model = Transformer(ModelArgs(**checkpoint["model_args"]))
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint


def export_checkpoint(
    ckpt_path: str | Path,
    model_path: str | Path | None = None,
    *,
    fmt: str | int = "v0",
    tokenizer: str | Path | None = None,
    group_size: int | None = None,
) -> tuple[Path, Path | None]:
    """``ckpt.pt`` -> ``model.bin`` (default: beside the checkpoint) and ``tokenizer.bin``.

    The tokenizer is the one stored in the checkpoint unless ``tokenizer`` names a file.
    """
    ckpt_path = Path(ckpt_path)
    model, checkpoint = load_checkpoint_model(ckpt_path)
    model_path = Path(model_path) if model_path else ckpt_path.parent / "model.bin"
    source = tokenizer if tokenizer is not None else checkpoint.get("tokenizer_bin")
    return export_model(model, model_path, source, fmt=fmt, group_size=group_size)
