"""What a training run is: :class:`ModelArgs` (the shape), :class:`TrainConfig` (every
setting, with its default written once here) and :class:`TrainResult`.

Imports no torch, so the command line (:mod:`tinystories.cli.train`) and the Modal
plan read the defaults from here without the ``train`` extra.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ..formats.llama2c import ModelConfig

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelArgs:
    """Shape of a model. ``hidden_dim`` None = llama2.c's rule from ``multiple_of``."""

    dim: int = 128
    n_layers: int = 5
    n_heads: int = 8
    n_kv_heads: int = 4
    vocab_size: int = 105
    seq_len: int = 256
    hidden_dim: int | None = None
    multiple_of: int = 32
    shared_classifier: bool = True
    norm_eps: float = 1e-5
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not a multiple of n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}"
            )
        if (self.dim // self.n_heads) % 2:
            raise ValueError("the head size (dim / n_heads) must be even for rotary embeddings")

    @property
    def ffn_dim(self) -> int:
        """SwiGLU hidden size: 2/3 of 4*dim rounded up to a multiple of ``multiple_of``."""
        if self.hidden_dim is not None:
            return self.hidden_dim
        hidden = int(2 * (4 * self.dim) / 3)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads

    def file_config(self) -> ModelConfig:
        """The model file's view of this shape."""
        return ModelConfig(
            dim=self.dim,
            hidden_dim=self.ffn_dim,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads,
            vocab_size=self.vocab_size,
            seq_len=self.seq_len,
            shared_classifier=self.shared_classifier,
        )

    def to_dict(self) -> dict:
        return asdict(self)


# The seed's configuration: llama2.c's train.py with a 105-token vocabulary.
PRESETS: dict[str, ModelArgs] = {
    "tok105": ModelArgs(dim=128, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=105, seq_len=256),
}


@dataclass
class TrainConfig:
    # data
    data: str = ""  # corpus: .txt / JSON shard / .tar.gz / directory of them
    val_data: str | None = None  # held-out corpus; None = hold out val_fraction of `data`
    val_fraction: float = 0.05
    out_dir: str = "out"
    data_dir: str | None = None  # vocabulary and shards; None = <out_dir>/data
    # model: a preset, then any of these overrides
    preset: str = "tok105"
    vocab_size: int | None = None
    dim: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    hidden_dim: int | None = None
    seq_len: int | None = None
    shared_classifier: bool | None = None
    dropout: float = 0.0
    # optimization
    batch_size: int = 32
    grad_accum_steps: int = 1
    max_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr_ratio: float = 0.1  # the cosine decays to learning_rate * min_lr_ratio
    warmup_iters: int | None = None  # None = 5% of max_iters, at most 1000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    # evaluation, logging, checkpoints
    eval_interval: int | None = None  # None = about 10 evaluations per run
    eval_iters: int = 20
    log_interval: int = 1
    stop_iter: int | None = None  # end this run after this iteration (resume continues)
    resume: bool = False
    export_format: str = "v0"  # one of VERSIONS: v0, v1, v2 (Q8_0)
    # system
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (see pick_dtype) | float32 | bfloat16 | float16
    compile: bool | None = None  # None = on CUDA, and on CPU for runs of 500+ iterations
    seed: int = 1337
    num_threads: int | None = None
    progress: bool = True
    extra: dict = field(default_factory=dict)  # free-form, stored in the checkpoint

    def model_args(self, vocab_size: int) -> ModelArgs:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r} (known: {', '.join(PRESETS)})")
        overrides = {
            f.name: getattr(self, f.name)
            for f in fields(ModelArgs)
            if hasattr(self, f.name) and getattr(self, f.name) is not None
        }
        overrides["vocab_size"] = vocab_size
        return replace(PRESETS[self.preset], **overrides)

    def resolved_vocab_size(self) -> int:
        return self.vocab_size or PRESETS[self.preset].vocab_size

    def warmup(self) -> int:
        if self.warmup_iters is not None:
            return self.warmup_iters
        return max(1, min(1000, round(0.05 * self.max_iters)))

    def eval_every(self) -> int:
        return self.eval_interval or max(1, self.max_iters // 10)


@dataclass
class TrainResult:
    out_dir: Path
    model_path: Path
    tokenizer_path: Path
    checkpoint_path: Path
    metrics_path: Path
    iters: int
    final_loss: float
    final_val_loss: float | None
    tokens_per_sec: float
    metrics: list[dict]
