"""The corpus as training needs it: fetched (``data download``), then made into a
vocabulary and pretokenized shards for a :class:`~.config.TrainConfig`, each step
skipped when its output is already there.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from ..formats.corpus import DataError, load_documents, unpack
from ..hub.download import download
from ..hub.registry import DATASETS, dataset_url
from .config import TrainConfig
from .shards import ShardSet, load_shards, pretokenize
from .vocab import train_vocab, vocab_paths

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def fetch(
    what: Sequence[str],
    dest_dir: str | Path,
    *,
    unpack_archives: bool = True,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Each of ``what`` into ``dest_dir``: a named data set of
    :data:`~tinystories.hub.registry.DATASETS` or a URL (downloaded, resumable), or a
    local file (copied; nothing is fetched). Archives are unpacked beside themselves."""
    dest_dir = Path(dest_dir)
    fetched = []
    for item in what:
        if Path(item).exists():  # offline: a local file is taken as it is
            target = dest_dir / Path(item).name
            dest_dir.mkdir(parents=True, exist_ok=True)
            if Path(item).resolve() != target.resolve():
                shutil.copyfile(item, target)
        else:
            url = dataset_url(item)
            if url is None:
                raise ValueError(f"unknown source {item!r}: one of {', '.join(DATASETS)} or a URL")
            target = download(url, dest_dir / url.rsplit("/", 1)[-1].split("?")[0])
        log(f"have {target}")
        fetched.append(target)
        if unpack_archives and target.name.endswith(ARCHIVE_SUFFIXES):
            out = dest_dir / target.name.split(".tar")[0].removesuffix(".tgz")
            unpack(target, out)
            log(f"unpacked into {out}")
    return fetched


def prepare_data(
    config: TrainConfig, log: Callable[[str], None] = print
) -> tuple[Path, Path, ShardSet, ShardSet]:
    """Vocabulary and shards for ``config``, made when missing.

    Returns ``(tokN.model, tokN.bin, train shards, val shards)``.
    """
    vocab_size = config.resolved_vocab_size()
    data_dir = config.data_path()
    model_path, bin_path = vocab_paths(data_dir, vocab_size)
    shard_dir = data_dir / f"tok{vocab_size}"
    docs = None
    if not (model_path.exists() and bin_path.exists()):
        if not config.data:
            raise DataError("no --data given and no vocabulary/shards to reuse")
        docs = load_documents(config.data)
        log(f"training a {vocab_size}-piece vocabulary on {len(docs):,} stories")
        train_vocab(docs, vocab_size, data_dir)
    train_shards = load_shards(shard_dir, "train", model_path)
    val_shards = load_shards(shard_dir, "val", model_path)
    if train_shards is None or val_shards is None:
        if not config.data:
            raise DataError(f"no --data given and no shards in {shard_dir}")
        if docs is None:
            docs = load_documents(config.data)
        train_docs, val_docs = split_validation(docs, config)
        log(f"pretokenizing {len(train_docs):,} train / {len(val_docs):,} val stories")
        train_shards = pretokenize(
            train_docs, model_path, shard_dir, "train", progress=config.progress
        )
        val_shards = pretokenize(val_docs, model_path, shard_dir, "val", progress=config.progress)
    return model_path, bin_path, train_shards, val_shards


def split_validation(docs: list[str], config: TrainConfig) -> tuple[list[str], list[str]]:
    """(train, validation) stories: ``config.val_data``'s, else the last
    ``val_fraction`` of ``docs`` held out."""
    if config.val_data:
        return docs, load_documents(config.val_data)
    n_val = max(1, round(config.val_fraction * len(docs)))
    if n_val >= len(docs):
        raise DataError(
            f"{config.data} has {len(docs)} stor{'y' if len(docs) == 1 else 'ies'}; "
            "need at least 2 to hold some out for validation (or give --val-data)"
        )
    return docs[:-n_val], docs[-n_val:]
