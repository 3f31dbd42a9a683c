"""The training loop: ``train(TrainConfig(...)) -> TrainResult``.

One call runs the whole pipeline: vocabulary (when missing), pretokenized
shards (when missing), training with AdamW + warmup/cosine schedule, periodic
validation, checkpoints, and the export of ``model.bin`` + ``tokenizer.bin``.
``python -m tinystories.train`` only turns flags into a TrainConfig; under
``torchrun`` every process runs this same function (see the distributed block).

Files in ``out_dir``: ``ckpt.pt`` (model, optimizer, iteration; ``resume=True``
continues from it), ``metrics.jsonl`` (one JSON object per logged step),
``model.bin``, ``tokenizer.bin``, and ``data/`` (vocabulary and shards) unless
``data_dir`` points elsewhere.

SIGINT and SIGTERM stop training after the current iteration with a checkpoint
(:class:`StopSignals`); :func:`train` then raises :class:`TrainingInterrupted`.

:func:`train` reads top to bottom: set-up, the loop, the export. What it calls is
below it in this module (device, precision, optimizer, one step's loss) or in
:mod:`.corpus` (data), :mod:`.shards` (batches), :mod:`.checkpoint` (files) and
:mod:`.runlog` (metrics).
"""

from __future__ import annotations

import inspect
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..formats.llama2c import read_model
from ..hub.download import progress_bar
from . import require
from .checkpoint import export_model, read_checkpoint, save_checkpoint
from .config import ConfigError, ModelArgs, TrainConfig, TrainResult
from .corpus import prepare_data
from .model import Transformer, load_numpy_weights
from .runlog import RunLog
from .shards import BatchSampler, Prefetcher, TokenStream, eval_batches
from .vocab import vocab_paths

# CPU runs at least this long are compiled: about a minute of compiling on 2 cores
# is repaid by the faster steps.
CPU_COMPILE_MIN_ITERS = 500
# The signals that stop training with a checkpoint, the first one winning when the
# processes of a distributed run received different ones.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training at ``iteration``, after writing a checkpoint
    there (in the main process). ``exit_status`` is the shell's 128 + signal number."""

    def __init__(self, signum: int, iteration: int, checkpoint_path: Path, main_process: bool):
        name = signal.Signals(signum).name
        super().__init__(f"{name}: stopped at iteration {iteration}; checkpoint {checkpoint_path}")
        self.signum, self.iteration = signum, iteration
        self.checkpoint_path, self.main_process = checkpoint_path, main_process
        self.exit_status = 128 + signum


def train(
    config: TrainConfig,
    log: Callable[[str], None] = print,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> TrainResult:
    """Runs data preparation, training and export as ``config`` says; see the module doc.

    ``on_checkpoint(path)``, when given, is called after each checkpoint is written (and
    after the export); ``--modal`` commits the volume there so a lost container loses
    nothing that was checkpointed.
    """
    config.validate()
    if config.tensorboard_dir:
        require(("tensorboard",), what="--tensorboard")

    # --- distributed set-up --------------------------------------------------------------
    # torchrun starts one process per device and sets RANK, LOCAL_RANK and WORLD_SIZE.
    # Each process trains its share of every iteration's micro-batches (micro-batch m
    # goes to process m % WORLD_SIZE), so N processes see exactly the batches one process
    # would; the main process (rank 0) alone logs, evaluates, checkpoints and exports.
    distributed = "RANK" in os.environ
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    master_process = rank == 0
    device = pick_device(config.device, int(os.environ["LOCAL_RANK"]) if distributed else None)
    dtype = pick_dtype(config.dtype, device)
    if config.grad_accum_steps < world_size:
        raise ConfigError(
            f"--grad-accum {config.grad_accum_steps} is fewer than the {world_size} processes: "
            f"each trains whole micro-batches of --batch-size, so give --grad-accum "
            f"{world_size} or a multiple of it (and a smaller --batch-size to keep the "
            "tokens per iteration)"
        )
    micro_steps = range(rank, config.grad_accum_steps, world_size)  # this process's share
    if distributed:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if not master_process:
        log = _quiet
    if config.grad_accum_steps % world_size:
        most = -(-config.grad_accum_steps // world_size)
        log(
            f"--grad-accum {config.grad_accum_steps} over {world_size} processes: "
            f"{config.grad_accum_steps % world_size} of them train {most} micro-batches per "
            f"iteration, the others {most - 1} and wait (a multiple of {world_size} wastes nothing)"
        )

    # --- set-up: files, data, model, optimizer --------------------------------------
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
        args = ModelArgs(**checkpoint["model_args"])
        config = config.resumed(checkpoint.get("config", {}), args)
    init_weights = None
    if config.init_from:  # a model file's weights start the run (config.initialized)
        file_config, _, init_weights = read_model(config.init_from)
        config = config.initialized(file_config)
        vocab_files = vocab_paths(config.data_path(), file_config.vocab_size)
        if not all(path.exists() for path in vocab_files):
            raise ConfigError(
                f"--init-from {config.init_from}: its vocabulary ({vocab_files[0].name} and "
                f"{vocab_files[1].name}) must be in {vocab_files[0].parent}: a new one would "
                "not match the model's token ids"
            )
    # the main process makes the vocabulary and shards; the others wait, then find them
    if distributed and not master_process:
        dist.barrier()
    _, vocab_bin, train_shards, val_shards = prepare_data(config, log)
    if distributed and master_process:
        dist.barrier()
    if checkpoint is None:
        args = config.model_args(config.resolved_vocab_size())
    elif checkpoint.get("tokenizer_bin", vocab_bin.read_bytes()) != vocab_bin.read_bytes():
        raise ConfigError(
            f"{vocab_bin} is not the vocabulary {ckpt_path} was trained with: give the "
            "--data-dir it was trained from"
        )

    torch.manual_seed(config.seed)
    model = Transformer(args)
    if init_weights is not None:
        load_numpy_weights(model, init_weights)
        log(f"starting from the weights of {config.init_from} (seq_len {args.seq_len})")
        init_weights = None  # the weights are in the model now; free the copy
    model = model.to(device)
    optimizer = make_optimizer(model, config)
    use_scaler = dtype == torch.float16  # fp16 needs loss scaling; bf16 and fp32 do not
    scaler = make_grad_scaler(device, use_scaler)
    autocast = autocast_context(device, dtype)
    start_iter, tokens_seen = 0, 0
    tokens_per_iter = config.batch_size * config.grad_accum_steps * args.seq_len
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if use_scaler and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        start_iter = int(checkpoint["iter"])
        tokens_seen = int(checkpoint.get("tokens", start_iter * tokens_per_iter))
        log(f"resuming from {ckpt_path} at iteration {start_iter}")
        checkpoint = None  # the tensors are in the model and optimizer now; free the copy
    last_iter = min(config.max_iters, config.stop_iter or config.max_iters)
    compiled = should_compile(config, device, last_iter - start_iter)
    eval_model = torch.compile(model) if compiled else model
    step_model = eval_model
    if distributed:
        step_model = data_parallel(eval_model, device)
        torch.manual_seed(config.seed + rank)  # dropout masks differ between processes

    train_stream = TokenStream(train_shards.paths, args.seq_len, args.vocab_size)
    val_stream = TokenStream(val_shards.paths, args.seq_len, args.vocab_size)
    sampler = BatchSampler(train_stream, config.batch_size, config.seed)
    val_batches = eval_batches(val_stream, config.batch_size, config.eval_iters, config.seed)
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"model {n_params:,} parameters; {train_stream.n_tokens:,} train tokens; "
        f"{tokens_per_iter:,} tokens per iteration; {device} {str(dtype)[6:]}"
        f"{' compiled' if compiled else ''}"
        f"{f'; {world_size} processes' if distributed else ''}"
    )
    runlog = RunLog(metrics_path, start_iter, config.tensorboard_dir) if master_process else None
    checkpoint_iters, checkpoint_minutes = config.checkpoint_every()

    # --- the loop ---------------------------------------------------------------------
    batches = partial(sampler.step_batches, micro_steps=micro_steps)
    prefetch = Prefetcher(batches, start_iter, last_iter)
    bar = progress_bar(
        config.max_iters, start_iter, "train", master_process and config.progress, "it"
    )
    model.train()
    loss_value, val_loss, tokens_per_sec = float("nan"), None, 0.0
    it, stop_signal, last_save = start_iter, None, time.monotonic()
    try:
        with StopSignals(announce=master_process, under_torchrun=distributed) as signals:
            while it < last_iter and stop_signal is None:
                t0 = time.perf_counter()
                lr = learning_rate(config, it)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = torch.zeros((), device=device)
                for micro, batch in enumerate(prefetch.get()):
                    last_micro = micro == len(micro_steps) - 1
                    # under DDP, only the last backward of the iteration syncs gradients
                    with nullcontext() if last_micro or not distributed else step_model.no_sync():
                        x, y = to_device(batch, device)
                        with autocast:
                            loss = batch_loss(step_model, x, y) / config.grad_accum_steps
                        # DDP averages over the processes; times world_size makes it the sum
                        scaler.scale(loss * world_size).backward()
                    loss_sum += loss.detach()
                if config.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                it += 1
                tokens_seen += tokens_per_iter

                # syncs with the device (and the other processes), so the timing is real
                loss_value, stop_signal = agree(loss_sum, signals.received, distributed)
                tokens_per_sec = tokens_per_iter / (time.perf_counter() - t0)
                if not master_process:
                    continue
                evaluate = it % config.eval_every() == 0 or it == config.max_iters
                save = (
                    evaluate
                    or it == last_iter
                    or stop_signal is not None
                    or (checkpoint_iters is not None and it % checkpoint_iters == 0)
                    or (
                        checkpoint_minutes is not None
                        and time.monotonic() - last_save >= 60 * checkpoint_minutes
                    )
                )
                row = None
                if it % config.log_interval == 0 or evaluate:
                    row = {
                        "iter": it,
                        "tokens": tokens_seen,
                        "loss": round(loss_value, 6),
                        "lr": lr,
                        "tokens_per_sec": round(tokens_per_sec, 1),
                    }
                if evaluate:
                    val_loss = estimate_loss(model, eval_model, val_batches, device, autocast)
                    row["val_loss"] = round(val_loss, 6)
                    log(f"iter {it}: train loss {loss_value:.4f}, val loss {val_loss:.4f}")
                if save:
                    state = {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict() if use_scaler else None,
                        "model_args": args.to_dict(),
                        "iter": it,
                        "tokens": tokens_seen,
                        "config": asdict(config),
                        "tokenizer_bin": vocab_bin.read_bytes(),
                    }
                    save_checkpoint(ckpt_path, state)
                    last_save = time.monotonic()
                if row is not None:
                    runlog.write(row)
                if save:
                    runlog.flush()
                    if on_checkpoint is not None:
                        on_checkpoint(ckpt_path)  # after the metrics row, which it covers
                bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tokens_per_sec:,.0f}")
                bar.update(1)
    finally:
        prefetch.close()
        bar.close()
        if runlog is not None:
            runlog.close()

    # --- export -----------------------------------------------------------------------
    model_path, tokenizer_path = out_dir / "model.bin", out_dir / "tokenizer.bin"
    if master_process and stop_signal is None:
        model_path, tokenizer_path = export_model(
            model, model_path, vocab_bin, fmt=config.export_format
        )
        log(f"wrote {model_path} and {tokenizer_path}")
        if on_checkpoint is not None:
            on_checkpoint(model_path)
    if distributed:
        dist.barrier()  # the processes leave together (gloo aborts one that leaves early)
        dist.destroy_process_group()
    if stop_signal is not None:
        raise TrainingInterrupted(stop_signal, it, ckpt_path, master_process)
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
        metrics=runlog.rows if runlog is not None else [],
    )


# --- what train() calls --------------------------------------------------------------


def data_parallel(model: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    """``model`` under DDP, which averages the gradients over the processes in the last
    micro-batch's backward. Buffers are not synced before each forward: the only ones (the
    RoPE tables) are equal everywhere, and processes may run different numbers of
    micro-batches, so a collective per forward would not pair up."""
    unsynced = {"broadcast_buffers": False}  # torch 2.13 renamed it forward_sync_buffers
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
        unsynced = {"forward_sync_buffers": False}
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, **unsynced)


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


def pick_device(requested: str, local_rank: int | None = None) -> torch.device:
    """The device of ``--device``; under torchrun (``local_rank`` given) a GPU run puts
    each process on ``cuda:LOCAL_RANK``. A device that is not here is a ConfigError."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {requested}: CUDA is not available here")
    if local_rank is not None:
        if device.index is not None:
            raise ConfigError(
                f"--device {requested}: under torchrun each process takes the GPU of its "
                "LOCAL_RANK; give --device cuda (or auto)"
            )
        device = torch.device("cuda", local_rank)
    if (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: there are {torch.cuda.device_count()} GPU(s) here")
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
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        if requested == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(
                f"--dtype bfloat16: {torch.cuda.get_device_name(device)} does not support it; "
                "give --dtype float16 (with loss scaling) or auto"
            )
        return dtype[requested]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16_matmul() else torch.float32


def should_compile(config: TrainConfig, device: torch.device, n_iters: int) -> bool:
    """torch.compile where it pays: on GPUs, and on CPU for runs long enough to repay the
    compilation with faster steps."""
    if config.compile is not None:
        return config.compile
    return device.type == "cuda" or n_iters >= CPU_COMPILE_MIN_ITERS


def make_optimizer(model: Transformer, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only; fused kernels where torch has them."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    kwargs = dict(lr=config.learning_rate, betas=(config.beta1, config.beta2))
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # older torch, or no fused kernel here
        return torch.optim.AdamW(groups, foreach=True, **kwargs)


def make_grad_scaler(device: torch.device, enabled: bool):
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device.type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)  # torch < 2.3


def autocast_context(device: torch.device, dtype: torch.dtype) -> AbstractContextManager:
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(batch: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of a (B, seq_len + 1) batch of windows, on ``device``."""
    t = torch.from_numpy(batch)
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return t[:, :-1], t[:, 1:]


def batch_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the next tokens, computed in fp32 whatever the autocast."""
    logits = model(x)
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())


@torch.no_grad()
def estimate_loss(
    model: Transformer,
    step_model: torch.nn.Module,
    batches: Sequence[np.ndarray],
    device: torch.device,
    autocast: AbstractContextManager,
) -> float:
    """Mean loss over fixed validation ``batches``, run by ``step_model`` (compiled or
    not) with ``model`` in eval mode for the duration."""
    model.eval()
    losses = []
    for batch in batches:
        x, y = to_device(batch, device)
        with autocast:
            losses.append(float(batch_loss(step_model, x, y)))
    model.train()
    return float(np.mean(losses))


def agree(
    loss_sum: torch.Tensor, received: int | None, distributed: bool
) -> tuple[float, int | None]:
    """The iteration's loss (summed over the processes) and the signal that stops training
    after it, if any process received one: one all-reduce, so every process stops at the
    same iteration."""
    if not distributed:
        return float(loss_sum), received
    flags = [float(received == signum) for signum in STOP_SIGNALS]
    values = torch.cat([loss_sum.reshape(1), torch.tensor(flags, device=loss_sum.device)])
    dist.all_reduce(values)
    loss, *counts = values.tolist()
    stop = next((signum for signum, count in zip(STOP_SIGNALS, counts, strict=True) if count), None)
    return loss, stop


class StopSignals:
    """SIGINT and SIGTERM while training: the first asks the loop to stop after the
    current iteration (``received`` is set), a second one exits at once (status 128 +
    signal). Under torchrun a repeat within ``REPEAT_GRACE`` seconds is taken as the same
    request: a machine being shut down signals every process, and torchrun forwards its
    own signal to its workers too. Handlers can only be set in the main thread; elsewhere
    this does nothing."""

    REPEAT_GRACE = 1.0

    def __init__(self, announce: bool, under_torchrun: bool):
        self.announce = announce
        self.grace = self.REPEAT_GRACE if under_torchrun else 0.0
        self.received: int | None = None
        self._first_at = 0.0
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._receive) for s in STOP_SIGNALS}
        return self

    def _receive(self, signum: int, frame: object) -> None:
        now = time.monotonic()
        if self.received is None:
            self.received, self._first_at = signum, now
            if self.announce:  # os.write: print could re-enter a write it interrupted
                name = signal.Signals(signum).name
                message = f"\n{name}: stopping after this iteration with a checkpoint"
                with suppress(OSError):  # no stderr to tell: stop all the same
                    os.write(2, f"{message} (again to quit at once)\n".encode())
        elif now - self._first_at > self.grace:
            os._exit(128 + signum)

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _quiet(*args: object) -> None:
    pass
