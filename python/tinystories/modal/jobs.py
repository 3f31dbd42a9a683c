"""The bodies of the Modal functions: what runs in the container (or locally, through
``.local()``, in the tests).

Each calls the same entry points as the local commands:

- ``prepare`` (CPU): fetch a corpus URL into the volume (resumable), then
  :func:`tinystories.training.corpus.prepare_data` (vocabulary and shards, each skipped
  when already on the volume);
- ``train`` (GPU): :func:`tinystories.training.loop.train`, committing the volume after
  every checkpoint;
- ``sample`` (CPU): :meth:`tinystories.Generator.stream`, streamed back piece by piece.

The bodies take the volume's root as an argument (the functions pass
``$TINYSTORIES_VOLUME_ROOT``, default ``/data``). Paths handed to them are relative to
the volume root.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import modal

from .settings import MOUNT, PATH_FIELDS, ROOT_ENV, volume_path


def volume_root() -> Path:
    """Where the volume is mounted: ``$TINYSTORIES_VOLUME_ROOT``, default ``/data``."""
    return Path(os.environ.get(ROOT_ENV, MOUNT))


def committer(volume_name: str) -> Callable[[], None]:
    """Commits the volume when running in a Modal container; does nothing elsewhere
    (``.local()`` has no volume to commit)."""

    def commit() -> None:
        if not modal.is_local():
            modal.Volume.from_name(volume_name).commit()

    return commit


def resolve_paths(config: dict, root: Path) -> dict:
    """TrainConfig keyword arguments with their volume-relative paths made absolute."""
    resolved = dict(config)
    for name in PATH_FIELDS:
        value = resolved.get(name)
        if value:
            resolved[name] = str(root / volume_path(value, name))
    return resolved


def prepare_body(
    config: dict,
    fetch: Sequence[dict],
    *,
    root: Path,
    commit: Callable[[], None] = lambda: None,
    log: Callable[[str], None] = print,
) -> dict:
    """Fetches corpus URLs into the volume (skipped when there, resumed when partial), then
    trains the vocabulary and pretokenizes when they are missing; commits after each step."""
    from ..hub.download import download
    from ..training.config import TrainConfig
    from ..training.corpus import prepare_data

    for item in fetch:
        dest = root / volume_path(item["dest"], "download")
        if dest.exists():
            log(f"have {dest}")
            continue
        log(f"downloading {item['url']} to {dest}")
        download(item["url"], dest, progress=bool(config.get("progress", True)))
        commit()
    train_config = TrainConfig(**resolve_paths(config, root))
    vocab_model, vocab_bin, train_shards, val_shards = prepare_data(train_config, log)
    commit()
    log(
        f"data ready: {vocab_bin.relative_to(root)}, {train_shards.n_tokens:,} train and "
        f"{val_shards.n_tokens:,} val tokens"
    )
    return {
        "tokenizer": str(vocab_bin.relative_to(root)),
        "train_tokens": int(train_shards.n_tokens),
        "val_tokens": int(val_shards.n_tokens),
    }


def train_body(
    config: dict,
    *,
    root: Path,
    commit: Callable[[], None] = lambda: None,
    log: Callable[[str], None] = print,
) -> dict:
    """:func:`tinystories.training.loop.train` with the volume committed after every
    checkpoint and after the export; returns a summary with volume-relative paths."""
    from ..training.config import TrainConfig
    from ..training.loop import train

    result = train(
        TrainConfig(**resolve_paths(config, root)), log=log, on_checkpoint=lambda path: commit()
    )
    return {
        "iters": result.iters,
        "final_loss": result.final_loss,
        "final_val_loss": result.final_val_loss,
        "tokens_per_sec": result.tokens_per_sec,
        "out_dir": str(result.out_dir.relative_to(root)),
        "model": str(result.model_path.relative_to(root)),
        "tokenizer": str(result.tokenizer_path.relative_to(root)),
    }


def resume_if_rescheduled(config: dict, root: Path) -> dict:
    """A call that Modal restarts (preemption) resumes from its own checkpoint instead of
    starting over: the first attempt writes its call id beside the checkpoint."""
    call_id = modal.current_function_call_id()
    if not call_id or config.get("resume"):
        return config
    out = root / volume_path(config.get("out_dir") or "out", "out_dir")
    marker = out / ".modal-call"
    if marker.is_file() and marker.read_text() == call_id and (out / "ckpt.pt").is_file():
        print(f"restarted call {call_id}: resuming from {out / 'ckpt.pt'}")
        return {**config, "resume": True}
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(call_id)
    return config


def sample_body(
    model: str, tokenizer: str, prompt: str, options: dict, *, root: Path
) -> Iterator[str]:
    """:meth:`Generator.stream` on files of the volume (arguments checked before the first
    piece). Imports neither torch nor modal's runtime beyond this module."""
    from ..inference import Generator

    generator = Generator(
        root / volume_path(model, "model"), root / volume_path(tokenizer, "tokenizer")
    )
    yield from generator.stream(prompt, **options)


def serve_app(
    model: str | None, tokenizer: str | None, *, root: Path, name: str | None, parallel: int
):
    """The server's ASGI app (:func:`tinystories.server.create_app`) over files of the
    volume, or the bundled model when ``model`` is None."""
    from ..inference import Generator
    from ..server import create_app

    if model is None:
        generator = Generator()
    else:
        model_path = root / volume_path(model, "model")
        tokenizer_path = (
            model_path.parent / "tokenizer.bin"
            if tokenizer is None
            else root / volume_path(tokenizer, "tokenizer")
        )
        generator = Generator(model_path, tokenizer_path)
    return create_app(generator, name=name, parallel=parallel)


def sample_batch_body(
    model: str, tokenizer: str, prompt: str, options: dict, seeds: list[int], *, root: Path
) -> list[dict]:
    """Samples of ``prompt`` with each of ``seeds``, generated together
    (:meth:`Generator.complete_batch`): one record per seed, in order."""
    from ..inference import Generator

    generator = Generator(
        root / volume_path(model, "model"), root / volume_path(tokenizer, "tokenizer")
    )
    completions = generator.complete_batch([prompt] * len(seeds), seed=list(seeds), **options)
    return [
        {"seed": c.seed, "text": c.text, "tokens": len(c.token_ids),
         "finish_reason": c.finish_reason}
        for c in completions
    ]  # fmt: skip


def gpu_count(gpu: str | None) -> int:
    """The GPUs a ``--gpu`` value asks for: ``A100:4`` is 4, ``T4`` is 1."""
    _, colon, count = (gpu or "").partition(":")
    return int(count) if colon else 1


def torchrun_command(processes: int, config_path: str, result_path: str, volume: str) -> list[str]:
    """The torchrun command a multi-GPU ``train`` call runs: one process per GPU."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={processes}", "-m", "tinystories.modal.worker",
        config_path, result_path, volume,
    ]  # fmt: skip


def distributed_train_body(config: dict, processes: int, *, root: Path, volume: str) -> dict:
    """:func:`train_body` in ``processes`` torchrun processes (DistributedDataParallel,
    NCCL on the GPUs); the summary is rank 0's."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        config_path, result_path = Path(scratch, "config.json"), Path(scratch, "result.json")
        config_path.write_text(json.dumps(config))
        command = torchrun_command(processes, str(config_path), str(result_path), volume)
        env = {**os.environ, ROOT_ENV: str(root)}
        done = subprocess.run(command, env=env)
        if done.returncode != 0 or not result_path.exists():
            raise RuntimeError(f"torchrun exited with status {done.returncode}")
        return json.loads(result_path.read_text())
