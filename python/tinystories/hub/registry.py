"""What can be downloaded: pretrained models (:data:`REGISTRY`) and data sets (:data:`DATASETS`).

Data only: :mod:`.cache` fetches and checks the files, :mod:`.download` moves the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

_HF = "https://huggingface.co/karpathy/tinyllamas/resolve/main"
_LLAMA2C = "https://github.com/karpathy/llama2.c/raw/master"
_TOK105 = "https://huggingface.co/datasets/enio/TinyStories/resolve/main/tok105"


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file."""

    path: str  # where it lives in the cache (and under $TINYSTORIES_MIRROR)
    url: str
    size: int | None  # exact bytes where confirmed; None: the engine's header check alone
    kind: str  # "model" | "tokenizer" | "sentencepiece"


@dataclass(frozen=True)
class Pretrained:
    """A registry entry: a model file and its tokenizer (or a vocabulary alone)."""

    name: str
    description: str
    tokenizer: RemoteFile
    model: RemoteFile | None = None
    extra: tuple[RemoteFile, ...] = ()

    @property
    def files(self) -> tuple[RemoteFile, ...]:
        return ((self.model,) if self.model else ()) + (self.tokenizer,) + self.extra


_TOKENIZER_32000 = RemoteFile(
    "llama2.c/tokenizer.bin", f"{_LLAMA2C}/tokenizer.bin", None, "tokenizer"
)

# Sizes: the Git LFS pointers of karpathy/tinyllamas ("size ..." in the commits that
# added the files); None where only a rounded size is published (the C engine still
# checks the header against the file size).
REGISTRY: dict[str, Pretrained] = {
    p.name: p
    for p in [
        Pretrained(
            "stories260K",
            "260K parameters, vocab 512 (karpathy/tinyllamas), ~1 MB",
            model=RemoteFile(
                "tinyllamas/stories260K/stories260K.bin",
                f"{_HF}/stories260K/stories260K.bin",
                None,
                "model",
            ),
            tokenizer=RemoteFile(
                "tinyllamas/stories260K/tok512.bin",
                f"{_HF}/stories260K/tok512.bin",
                None,
                "tokenizer",
            ),
        ),
        Pretrained(
            "stories15M",
            "15M parameters, Llama 2 vocab 32000 (karpathy/tinyllamas), 61 MB",
            model=RemoteFile(
                "tinyllamas/stories15M.bin", f"{_HF}/stories15M.bin", 60_816_028, "model"
            ),
            tokenizer=_TOKENIZER_32000,
        ),
        Pretrained(
            "stories42M",
            "42M parameters, Llama 2 vocab 32000 (karpathy/tinyllamas), 167 MB",
            model=RemoteFile(
                "tinyllamas/stories42M.bin", f"{_HF}/stories42M.bin", 167_020_572, "model"
            ),
            tokenizer=_TOKENIZER_32000,
        ),
        Pretrained(
            "stories110M",
            "110M parameters, Llama 2 vocab 32000 (karpathy/tinyllamas), 438 MB",
            model=RemoteFile(
                "tinyllamas/stories110M.bin", f"{_HF}/stories110M.bin", 438_381_596, "model"
            ),
            tokenizer=_TOKENIZER_32000,
        ),
        Pretrained(
            "tok105",
            "the seed's 105-piece vocabulary (enio/TinyStories); a vocabulary, no model",
            tokenizer=RemoteFile("tok105/tok105.bin", f"{_TOK105}/tok105.bin", 986, "tokenizer"),
            extra=(
                RemoteFile("tok105/tok105.model", f"{_TOK105}/tok105.model", None, "sentencepiece"),
            ),
        ),
    ]
}

DEFAULT_NAME = "default"  # the model bundled in the wheel; not a registry entry

_TINYSTORIES_DATA = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main"

# What `python -m tinystories.data download NAME` (and `--data NAME`) fetches.
DATASETS: dict[str, str] = {
    # The official JSON shards (about 1.5 GB compressed).
    "tinystories": f"{_TINYSTORIES_DATA}/TinyStories_all_data.tar.gz",
    # The seed's vocabulary and pretokenized shards (EN10/BabyLlama).
    "tok105": f"{_TOK105}/tok105.tar.gz",
    "tok105.model": f"{_TOK105}/tok105.model",
}


def dataset_url(name_or_url: str) -> str | None:
    """The URL of a named data set, ``name_or_url`` itself when it is a URL, else None."""
    url = DATASETS.get(name_or_url, name_or_url)
    return url if "://" in url else None
