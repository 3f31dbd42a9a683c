"""What a training run is: :class:`ModelArgs` (the shape), :class:`TrainConfig` (every
setting, with its default written once here) and :class:`TrainResult`.

Imports no torch, so the command line (:mod:`tinystories.cli.train`) and the Modal
plan read the defaults from here without the ``train`` extra.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ..formats.llama2c import VERSIONS, ModelConfig

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
MAX_VOCAB_SIZE = 65_536  # the shards store token ids as uint16


class ConfigError(ValueError):
    """A setting that cannot work: a flag's value, or a flag that contradicts the checkpoint
    being resumed. The command line reports it as a usage error (exit status 2)."""


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

    @classmethod
    def of_file(cls, config: ModelConfig) -> ModelArgs:
        """The shape a model file's header describes (the inverse of :meth:`file_config`)."""
        return cls(
            dim=config.dim,
            n_layers=config.n_layers,
            n_heads=config.n_heads,
            n_kv_heads=config.n_kv_heads,
            vocab_size=config.vocab_size,
            seq_len=config.seq_len,
            hidden_dim=config.hidden_dim,
            shared_classifier=config.shared_classifier,
        )


# The seed's configuration: llama2.c's train.py with a 105-token vocabulary.
PRESETS: dict[str, ModelArgs] = {
    "tok105": ModelArgs(dim=128, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=105, seq_len=256),
}
DEFAULT_PRESET = "tok105"

# What --resume takes from the checkpoint: the shape of the saved weights. A flag may
# repeat the checkpoint's value but not contradict it.
ARCHITECTURE = (
    "dim",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "hidden_dim",
    "vocab_size",
    "seq_len",
    "shared_classifier",
)
# TrainConfig fields whose command-line flag is not --field-name.
FLAGS = {
    "out_dir": "--out",
    "grad_accum_steps": "--grad-accum",
    "learning_rate": "--lr",
    "num_threads": "--threads",
    "export_format": "--format",
    "shared_classifier": "--untied",
    "tensorboard_dir": "--tensorboard",
}


def flag_name(name: str) -> str:
    """The command-line flag of TrainConfig field ``name``; errors name settings by it."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def parse_interval(text: str) -> tuple[int | None, float | None]:
    """``--checkpoint-interval``: ``"200"`` is every 200 iterations, ``"5m"`` every 5
    minutes; returns ``(iterations, minutes)``, one of them None."""
    match = re.fullmatch(r"(\d+)|(\d+(?:\.\d+)?)m(?:in)?", text.strip())
    if match is None:
        raise ConfigError(
            f"--checkpoint-interval {text!r}: give iterations (e.g. 500) or minutes (e.g. 5m)"
        )
    iterations, minutes = match.groups()
    if iterations is not None and int(iterations) >= 1:
        return int(iterations), None
    if minutes is not None and float(minutes) > 0:
        return None, float(minutes)
    raise ConfigError(f"--checkpoint-interval {text!r} must be more than 0")


@dataclass
class TrainConfig:
    # data
    data: str = ""  # corpus: .txt / JSON shard / .tar.gz / directory of them
    val_data: str | None = None  # held-out corpus; None = hold out val_fraction of `data`
    val_fraction: float = 0.05
    out_dir: str = "out"
    data_dir: str | None = None  # vocabulary and shards; None = <out_dir>/data
    # model: a preset (None: DEFAULT_PRESET, or the checkpoint's), then any of these overrides
    preset: str | None = None
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
    checkpoint_interval: str = "5m"  # see parse_interval; also at each evaluation and the end
    stop_iter: int | None = None  # end this run after this iteration (resume continues)
    resume: bool = False  # continue from out_dir/ckpt.pt; see resumed()
    init_from: str | None = None  # a model file whose weights start the run; see initialized()
    tensorboard_dir: str | None = None  # also write the metrics as TensorBoard events there
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
        preset = self.preset or DEFAULT_PRESET
        if preset not in PRESETS:
            raise ConfigError(f"unknown --preset {preset!r} (known: {', '.join(PRESETS)})")
        overrides = {
            f.name: getattr(self, f.name)
            for f in fields(ModelArgs)
            if hasattr(self, f.name) and getattr(self, f.name) is not None
        }
        overrides["vocab_size"] = vocab_size
        return replace(PRESETS[preset], **overrides)

    def data_path(self) -> Path:
        """Where the vocabulary and shards are: ``data_dir``, else ``out_dir/data``."""
        return Path(self.data_dir or Path(self.out_dir) / "data")

    def resolved_vocab_size(self) -> int:
        return self.vocab_size or PRESETS[self.preset or DEFAULT_PRESET].vocab_size

    def warmup(self) -> int:
        if self.warmup_iters is not None:
            return self.warmup_iters
        return max(1, min(1000, round(0.05 * self.max_iters)))

    def eval_every(self) -> int:
        return self.eval_interval or max(1, self.max_iters // 10)

    def checkpoint_every(self) -> tuple[int | None, float | None]:
        """``(iterations, minutes)`` between checkpoints, one of them None."""
        return parse_interval(self.checkpoint_interval)

    def validate(self) -> None:
        """Raises a ConfigError naming (by its flag) every setting that cannot work, before
        any work is done. What needs torch (is the device here, does it run the dtype) is
        checked by the loop's ``pick_device`` and ``pick_dtype``."""
        problems = []
        positive = (*ARCHITECTURE[:-1], "batch_size", "grad_accum_steps", "max_iters")
        positive += ("eval_interval", "eval_iters", "log_interval", "stop_iter", "num_threads")
        for name in positive:
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                problems.append(f"{flag_name(name)} must be a positive integer, not {value}")
        if self.vocab_size is not None and self.vocab_size > MAX_VOCAB_SIZE:
            problems.append(
                f"--vocab-size must be at most {MAX_VOCAB_SIZE:,} (the shards store uint16 "
                f"ids), not {self.vocab_size:,}"
            )
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            problems.append(f"--lr must be more than 0, not {self.learning_rate}")
        if self.warmup_iters is not None and not self.warmup_iters >= 0:
            problems.append(f"--warmup-iters must be 0 or more, not {self.warmup_iters}")
        for name, low, high in (  # low <= value < high
            ("weight_decay", 0, math.inf),
            ("grad_clip", 0, math.inf),
            ("beta1", 0, 1),
            ("beta2", 0, 1),
            ("dropout", 0, 1),
            ("val_fraction", 0, 1),
        ):
            value = getattr(self, name)
            if not low <= value < high:
                problems.append(f"{flag_name(name)} must be in [{low}, {high}), not {value}")
        if not 0 <= self.min_lr_ratio <= 1:
            problems.append(f"--min-lr-ratio must be in [0, 1], not {self.min_lr_ratio}")
        preset = self.preset or DEFAULT_PRESET
        if preset not in PRESETS:
            problems.append(f"unknown --preset {preset!r} (known: {', '.join(PRESETS)})")
        elif not problems:  # the shape the preset and the overrides give
            base = PRESETS[preset]
            dim, heads = self.dim or base.dim, self.n_heads or base.n_heads
            kv_heads = self.n_kv_heads or base.n_kv_heads
            if dim % heads:
                problems.append(f"--n-heads {heads} does not divide --dim {dim}")
            elif heads % kv_heads:
                problems.append(f"--n-kv-heads {kv_heads} does not divide --n-heads {heads}")
            elif (dim // heads) % 2:
                problems.append(
                    f"the head size --dim / --n-heads = {dim // heads} must be even (rotary "
                    "embeddings turn pairs of numbers)"
                )
        if self.export_format not in VERSIONS:
            known = ", ".join(VERSIONS)
            problems.append(f"--format must be one of {known}, not {self.export_format!r}")
        if self.dtype not in DTYPES:
            problems.append(f"--dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        if not DEVICE_PATTERN.fullmatch(self.device):
            problems.append(f"--device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        if self.init_from is not None and not self.resume and not Path(self.init_from).is_file():
            problems.append(f"--init-from {self.init_from}: no such file")
        try:
            parse_interval(self.checkpoint_interval)
        except ConfigError as err:
            problems.append(str(err))
        if problems:
            raise ConfigError("; ".join(problems))

    def _contradictions(self, saved_args: ModelArgs, whose: str, names=ARCHITECTURE) -> list[str]:
        """The architecture flags given here that differ from ``saved_args``, each as
        ``--flag value (whose: saved value)``."""
        contradictions = []
        for name in names:
            given, saved = getattr(self, name), getattr(saved_args, name)
            if name == "hidden_dim":
                saved = saved_args.ffn_dim
            if given is None or given == saved:
                continue
            if name == "shared_classifier":
                contradictions.append(f"--untied ({whose} classifier is shared)")
            else:
                contradictions.append(f"{flag_name(name)} {given} ({whose}: {saved})")
        return contradictions

    def initialized(self, file_config: ModelConfig) -> TrainConfig:
        """This config starting from the weights of ``--init-from``'s file: the
        architecture and the vocabulary size are the file's (a flag that contradicts them
        is a ConfigError naming each), except ``--seq-len``, which may differ: the rotary
        positions are computed, not learned, so a model trained on short windows can be
        trained further on longer ones. The preset is not used."""
        saved = ModelArgs.of_file(file_config)
        names = tuple(name for name in ARCHITECTURE if name != "seq_len")
        contradictions = self._contradictions(saved, "the file's", names)
        if contradictions:
            raise ConfigError(
                f"--init-from {self.init_from} has its own architecture, and these flags "
                "contradict it: " + ", ".join(contradictions) + "; leave them out"
            )
        return replace(
            self,
            **{name: getattr(saved, name) for name in names},
            seq_len=self.seq_len or saved.seq_len,
        )

    def resumed(self, checkpoint_config: dict, checkpoint_args: ModelArgs) -> TrainConfig:
        """This config continuing a checkpoint: the architecture, the vocabulary, the preset
        and the data (directory and corpus) are the checkpoint's, and a flag here that
        contradicts them is a ConfigError naming each. Everything else (max_iters, the
        learning-rate schedule, the intervals, the batch size, ...) is this config's.
        ``--init-from`` is dropped: the checkpoint's weights began from it."""
        contradictions = self._contradictions(checkpoint_args, "the checkpoint's")
        saved_preset = checkpoint_config.get("preset")
        if self.preset is not None and self.preset != (saved_preset or DEFAULT_PRESET):
            saved = saved_preset or DEFAULT_PRESET
            contradictions.append(f"--preset {self.preset} (the checkpoint's: {saved})")
        if contradictions:
            raise ConfigError(
                "--resume continues the checkpoint's model, and these flags contradict it: "
                + ", ".join(contradictions)
                + "; leave them out, or train a new model into another --out"
            )
        return replace(
            self,
            preset=saved_preset,
            init_from=None,
            vocab_size=checkpoint_args.vocab_size,
            data=self.data or checkpoint_config.get("data") or "",
            val_data=self.val_data or checkpoint_config.get("val_data"),
            data_dir=self.data_dir or checkpoint_config.get("data_dir"),
        )


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
