"""Deprecated: :mod:`tinystories.formats.corpus`, ``training.vocab``, ``training.shards``."""

from .._deprecated import moved

moved(__name__, "tinystories.formats.corpus, tinystories.training.vocab and .shards")

from ..formats.constants import BOS as BOS_ID  # noqa: E402
from ..formats.constants import N_SPECIAL  # noqa: E402
from ..formats.corpus import END_OF_TEXT, DataError, load_documents, read_documents, unpack  # noqa: E402
from ..hub.download import DownloadError, download, progress_bar  # noqa: E402
from ..hub.registry import DATASETS as SOURCES  # noqa: E402
from .shards import (  # noqa: E402
    TOKEN_DTYPE,
    BatchSampler,
    ShardSet,
    TokenStream,
    eval_batches,
    file_digest,
    load_shards,
    pretokenize,
)
from .vocab import corpus_characters, train_vocab, vocab_paths  # noqa: E402

__all__ = [
    "BOS_ID",
    "END_OF_TEXT",
    "N_SPECIAL",
    "SOURCES",
    "TOKEN_DTYPE",
    "BatchSampler",
    "DataError",
    "DownloadError",
    "ShardSet",
    "TokenStream",
    "corpus_characters",
    "download",
    "eval_batches",
    "file_digest",
    "load_documents",
    "load_shards",
    "pretokenize",
    "progress_bar",
    "read_documents",
    "train_vocab",
    "unpack",
    "vocab_paths",
]
