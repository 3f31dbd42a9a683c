"""The training loop: ``train(TrainConfig(...)) -> TrainResult``.

One call runs the whole pipeline: vocabulary (when missing), pretokenized
shards (when missing), training with AdamW + warmup/cosine schedule, periodic
validation, checkpoints, and the export of ``model.bin`` + ``tokenizer.bin``.
``python -m tinystories.train`` only turns flags into a TrainConfig.

Files in ``out_dir``: ``ckpt.pt`` (model, optimizer, iteration; ``resume=True``
continues from it), ``metrics.jsonl`` (one JSON object per logged step),
``model.bin``, ``tokenizer.bin``, and ``data/`` (vocabulary and shards) unless
``data_dir`` points elsewhere.
"""

from __future__ import annotations

import json
import math
import os
import queue
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from . import data as datalib
from .export import export_model, read_checkpoint
from .model import PRESETS, ModelArgs, Transformer


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
    export_format: str = "v0"
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


def learning_rate(config: TrainConfig, it: int) -> float:
    """Linear warmup to the peak, then cosine decay to ``min_lr_ratio`` of it at max_iters."""
    peak, floor = config.learning_rate, config.learning_rate * config.min_lr_ratio
    warmup = config.warmup()
    if it < warmup:
        return peak * (it + 1) / warmup
    if it >= config.max_iters:
        return floor
    progress = (it - warmup) / max(1, config.max_iters - warmup)
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - floor)


# --- setup helpers -------------------------------------------------------------------


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} was asked for but CUDA is not available")
    return device


def cpu_has_bf16_matmul() -> bool:
    """True on CPUs with AMX tiles, where bf16 matmuls run several times faster than fp32."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(check and check())
    except RuntimeError:
        return False


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """The autocast dtype: bf16 where the hardware runs it fast, fp16 (with a GradScaler)
    on GPUs without bf16 such as a T4, fp32 otherwise. Weights stay fp32 either way."""
    if requested != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            requested
        ]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16_matmul() else torch.float32


def should_compile(config: TrainConfig, device: torch.device, n_iters: int) -> bool:
    """torch.compile where it pays: on GPUs, and on CPU for runs long enough to repay the
    compilation (about a minute on 2 cores) with faster steps."""
    if config.compile is not None:
        return config.compile
    return device.type == "cuda" or n_iters >= CPU_COMPILE_MIN_ITERS


CPU_COMPILE_MIN_ITERS = 500


def make_optimizer(model: Transformer, config: TrainConfig, device: torch.device):
    """AdamW with weight decay on matrices only; fused kernels where torch has them."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kwargs = dict(lr=config.learning_rate, betas=(config.beta1, config.beta2))
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # older torch, or no fused kernel here
        return torch.optim.AdamW(groups, foreach=True, **kwargs)


def prepare_data(
    config: TrainConfig, log=print
) -> tuple[Path, Path, datalib.ShardSet, datalib.ShardSet]:
    """Vocabulary and shards for ``config``, made when missing; returns model, bin, shards."""
    vocab_size = config.resolved_vocab_size()
    data_dir = Path(config.data_dir or Path(config.out_dir) / "data")
    model_path, bin_path = datalib.vocab_paths(data_dir, vocab_size)
    shard_dir = data_dir / f"tok{vocab_size}"
    docs = None
    if not (model_path.exists() and bin_path.exists()):
        if not config.data:
            raise datalib.DataError("no --data given and no vocabulary/shards to reuse")
        docs = datalib.load_documents(config.data)
        log(f"training a {vocab_size}-piece vocabulary on {len(docs):,} stories")
        datalib.train_vocab(docs, vocab_size, data_dir)
    train_shards = datalib.load_shards(shard_dir, "train", model_path)
    val_shards = datalib.load_shards(shard_dir, "val", model_path)
    if train_shards is None or val_shards is None:
        if not config.data:
            raise datalib.DataError(f"no --data given and no shards in {shard_dir}")
        if docs is None:
            docs = datalib.load_documents(config.data)
        if config.val_data:
            train_docs, val_docs = docs, datalib.load_documents(config.val_data)
        else:
            n_val = max(1, round(config.val_fraction * len(docs)))
            if n_val >= len(docs):
                raise datalib.DataError(
                    f"{config.data} has {len(docs)} stor{'y' if len(docs) == 1 else 'ies'}; "
                    "need at least 2 to hold some out for validation (or give --val-data)"
                )
            train_docs, val_docs = docs[:-n_val], docs[-n_val:]
        log(f"pretokenizing {len(train_docs):,} train / {len(val_docs):,} val stories")
        train_shards = datalib.pretokenize(
            train_docs, model_path, shard_dir, "train", progress=config.progress
        )
        val_shards = datalib.pretokenize(
            val_docs, model_path, shard_dir, "val", progress=config.progress
        )
    return model_path, bin_path, train_shards, val_shards


class Prefetcher:
    """Builds the next batches on a background thread, off the training critical path."""

    def __init__(self, make_batch, first_step: int, last_step: int, depth: int = 3):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(make_batch, first_step, last_step), daemon=True
        )
        self._thread.start()

    def _run(self, make_batch, first_step: int, last_step: int) -> None:
        try:
            for step in range(first_step, last_step):
                item = make_batch(step)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as err:  # surfaced to the consumer
            self._queue.put(err)

    def get(self):
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _read_metrics(path: Path, up_to_iter: int) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["iter"] <= up_to_iter]


# --- the loop ------------------------------------------------------------------------


def train(config: TrainConfig, log=print, on_checkpoint=None) -> TrainResult:
    """Runs data preparation, training and export as ``config`` says; see the module doc.

    ``on_checkpoint(path)``, when given, is called after each checkpoint is written (and
    after the export); ``--modal`` commits the volume there so a lost container loses
    nothing that was checkpointed.
    """
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, metrics_path = out_dir / "ckpt.pt", out_dir / "metrics.jsonl"
    if config.num_threads:
        torch.set_num_threads(config.num_threads)

    checkpoint = None
    if config.resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        checkpoint = read_checkpoint(ckpt_path, ("model", "optimizer", "model_args", "iter"))
    vocab_model, vocab_bin, train_shards, val_shards = prepare_data(config, log)
    vocab_size = config.resolved_vocab_size()
    if checkpoint is not None:
        args = ModelArgs(**checkpoint["model_args"])
        if args.vocab_size != vocab_size:
            raise ValueError(f"{ckpt_path} has vocab size {args.vocab_size}, this run {vocab_size}")
    else:
        args = config.model_args(vocab_size)

    device = pick_device(config.device)
    dtype = pick_dtype(config.dtype, device)
    torch.manual_seed(config.seed)
    model = Transformer(args).to(device)
    optimizer = make_optimizer(model, config, device)
    use_scaler = dtype == torch.float16
    if hasattr(torch.amp, "GradScaler"):
        scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    else:  # torch < 2.3
        scaler = torch.cuda.amp.GradScaler(enabled=use_scaler)
    autocast = (
        torch.autocast(device_type=device.type, dtype=dtype)
        if dtype != torch.float32
        else nullcontext()
    )
    start_iter = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if use_scaler and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        start_iter = int(checkpoint["iter"])
        log(f"resuming from {ckpt_path} at iteration {start_iter}")
    checkpoint = None
    last_iter = min(config.max_iters, config.stop_iter or config.max_iters)
    compiled = should_compile(config, device, last_iter - start_iter)
    step_model = torch.compile(model) if compiled else model

    train_stream = datalib.TokenStream(train_shards.paths, args.seq_len, args.vocab_size)
    val_stream = datalib.TokenStream(val_shards.paths, args.seq_len, args.vocab_size)
    sampler = datalib.BatchSampler(train_stream, config.batch_size, config.seed)
    val_batches = datalib.eval_batches(
        val_stream, config.batch_size, config.eval_iters, config.seed
    )
    tokens_per_iter = config.batch_size * config.grad_accum_steps * args.seq_len
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"model {n_params:,} parameters; {train_stream.n_tokens:,} train tokens; "
        f"{tokens_per_iter:,} tokens per iteration; {device} {str(dtype)[6:]}"
        f"{' compiled' if compiled else ''}"
    )

    def to_device(batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.from_numpy(batch)
        if device.type == "cuda":
            t = t.pin_memory().to(device, non_blocking=True)
        return t[:, :-1], t[:, 1:]

    @torch.no_grad()
    def estimate_val_loss() -> float:
        model.eval()
        losses = []
        for batch in val_batches:
            x, y = to_device(batch)
            with autocast:
                losses.append(float(step_model_loss(x, y)))
        model.train()
        return float(np.mean(losses))

    def step_model_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = step_model(x)
        return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())

    metrics = _read_metrics(metrics_path, start_iter)
    metrics_path.write_text("".join(json.dumps(row) + "\n" for row in metrics))

    def make_batches(it: int) -> list[np.ndarray]:
        return [sampler.batch(it, micro) for micro in range(config.grad_accum_steps)]

    prefetch = Prefetcher(make_batches, start_iter, last_iter)
    bar = None
    if config.progress:
        from tqdm import tqdm

        bar = tqdm(total=config.max_iters, initial=start_iter, desc="train", unit="it")
    model.train()
    loss_value = float("nan")
    val_loss = None
    tokens_per_sec = 0.0
    it = start_iter
    try:
        with open(metrics_path, "a") as metrics_file:
            while it < last_iter:
                t0 = time.perf_counter()
                lr = learning_rate(config, it)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = torch.zeros((), device=device)
                for batch in prefetch.get():
                    x, y = to_device(batch)
                    with autocast:
                        loss = step_model_loss(x, y) / config.grad_accum_steps
                    scaler.scale(loss).backward()
                    loss_sum += loss.detach()
                if config.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                it += 1

                loss_value = float(loss_sum)  # syncs with the device, so the timing is real
                dt = time.perf_counter() - t0
                tokens_per_sec = tokens_per_iter / dt
                evaluate = it % config.eval_every() == 0 or it == config.max_iters
                row = None
                if it % config.log_interval == 0 or evaluate:
                    row = {
                        "iter": it,
                        "loss": round(loss_value, 6),
                        "lr": lr,
                        "tokens_per_sec": round(tokens_per_sec, 1),
                    }
                if evaluate:
                    val_loss = estimate_val_loss()
                    row["val_loss"] = round(val_loss, 6)
                    log(f"iter {it}: train loss {loss_value:.4f}, val loss {val_loss:.4f}")
                if evaluate or it == last_iter:
                    _save_checkpoint(
                        ckpt_path,
                        {
                            "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scaler": scaler.state_dict() if use_scaler else None,
                            "model_args": args.to_dict(),
                            "iter": it,
                            "config": asdict(config),
                            "tokenizer_bin": vocab_bin.read_bytes(),
                        },
                    )
                if row is not None:
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
                    metrics.append(row)
                if on_checkpoint is not None and (evaluate or it == last_iter):
                    on_checkpoint(ckpt_path)  # after the metrics row, which it covers
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tokens_per_sec:,.0f}")
                    bar.update(1)
    finally:
        prefetch.close()
        if bar is not None:
            bar.close()

    model_path, tokenizer_path = export_model(
        model, out_dir / "model.bin", vocab_bin, fmt=config.export_format
    )
    log(f"wrote {model_path} and {tokenizer_path}")
    if on_checkpoint is not None:
        on_checkpoint(model_path)
    return TrainResult(
        out_dir=out_dir,
        model_path=model_path,
        tokenizer_path=tokenizer_path,
        checkpoint_path=ckpt_path,
        metrics_path=metrics_path,
        iters=it,
        final_loss=loss_value,
        final_val_loss=val_loss,
        tokens_per_sec=tokens_per_sec,
        metrics=metrics,
    )
