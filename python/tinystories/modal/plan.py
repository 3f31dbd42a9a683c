"""What a ``--modal`` training run will do, worked out on the client before anything
starts: where each ``--data`` comes from and lands on the volume (:func:`plan_data`), the
remote TrainConfig (:func:`plan_training`), and the ``--dry-run`` text
(:func:`describe_plan`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ..hub.registry import DATASETS, dataset_url
from .settings import APP_NAME, MOUNT, PATH_FIELDS, RESULT_FILES, volume_path
from .volume import human_size, tree_size

if TYPE_CHECKING:
    from .app import ModalApp


@dataclass
class DataPlan:
    """Where one ``--data``/``--val-data`` value comes from and where it lands on the volume."""

    flag: str
    value: str
    dest: str  # relative to the volume root; what the remote TrainConfig gets
    upload: Path | None = None
    url: str | None = None

    def describe(self) -> str:
        where = f"{MOUNT}/{self.dest}"
        if self.upload is not None:
            size = tree_size(self.upload)
            return (
                f"{self.flag}: upload {self.upload} ({human_size(size)}) to {where}, skipped "
                "when already there (the folder name is a hash of the content)"
            )
        if self.url is not None:
            return (
                f"{self.flag}: the prepare function downloads {self.url} to {where} "
                "(skipped when there, resumed when partial)"
            )
        return f"{self.flag}: {where}, already on the volume"


def content_digest(path: Path) -> str:
    """A short sha256 of a file, or of a folder's file names and contents."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() if file != path else b"")
        digest.update(b"\0")
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def plan_data(flag: str, value: str | None) -> DataPlan | None:
    """``value`` is ``volume:PATH`` (already on the volume), a named source of
    ``python -m tinystories.data download`` (e.g. ``tinystories``) or a URL (fetched
    remotely), or a local corpus (uploaded)."""
    if not value:
        return None
    if value.startswith("volume:"):
        return DataPlan(flag, value, volume_path(value[len("volume:") :], flag))
    url = dataset_url(value)
    if url is not None:
        name = url.rsplit("/", 1)[-1].split("?")[0] or "corpus"
        return DataPlan(flag, value, f"downloads/{name}", url=url)
    path = Path(value).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"{flag} {value}: no such local file or folder (give a local corpus, a named "
            f"source ({', '.join(DATASETS)}), a URL, or volume:PATH)"
        )
    return DataPlan(flag, value, f"corpus/{content_digest(path)}/{path.name}", upload=path)


def remote_dir(local: str) -> str:
    """The volume folder for a local ``--out``/``--data-dir``: the same relative path, or the
    last component of an absolute one."""
    path = PurePosixPath(local.replace("\\", "/"))
    if path.is_absolute():
        path = PurePosixPath(path.name)
    return volume_path(str(path), "output folder") or "out"


@dataclass
class TrainingPlan:
    config: dict  # TrainConfig keyword arguments, paths relative to the volume root
    data: list[DataPlan]
    local_out: Path
    download: bool

    @property
    def fetch(self) -> list[dict]:
        return [{"url": d.url, "dest": d.dest} for d in self.data if d.url is not None]


def plan_training(
    train_kwargs: dict, *, out: str, data_dir: str | None, download: bool = True
) -> TrainingPlan:
    """Maps the local command's TrainConfig arguments onto the volume."""
    config = dict(train_kwargs)
    plans = []
    for name, flag in (("data", "--data"), ("val_data", "--val-data")):
        plan = plan_data(flag, config.get(name))
        config[name] = plan.dest if plan else (config.get(name) or ("" if name == "data" else None))
        if plan:
            plans.append(plan)
    config["out_dir"] = remote_dir(out)
    config["data_dir"] = remote_dir(data_dir) if data_dir else None
    return TrainingPlan(config, plans, Path(out), download)


def _fmt_time(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def describe_plan(ma: ModalApp, training: TrainingPlan | None = None) -> str:
    """What a run will do: image steps, volume, functions with GPU and timeouts, this run."""
    s = ma.settings
    lines = [
        "Modal plan (dry run: nothing is built, uploaded or started; no credentials needed)",
        f"app:      {APP_NAME} (ephemeral: it exists for the duration of the command)",
        f"volume:   {s.volume} (created if missing), mounted at {MOUNT}",
        "image:",
    ]
    lines += [f"  {i}. {step}" for i, step in enumerate(ma.image_steps, 1)]
    lines += [
        "functions:",
        f"  prepare  no GPU, {s.prepare_cpu:g} CPUs, {s.prepare_memory // 1024} GiB, "
        f"timeout {_fmt_time(s.prepare_timeout)}: "
        "download a corpus URL into the volume, train the vocabulary and pretokenize when "
        "missing (tinystories.training.corpus.prepare_data); commits the volume",
        f"  train    GPU {s.gpu}, timeout {_fmt_time(s.train_timeout)}: "
        "tinystories.training.loop.train(TrainConfig) on the volume, committing after every "
        "checkpoint; a restarted (preempted) call resumes from its checkpoint"
        + _torchrun_note(s.gpu, s.volume),
        f"  sample   no GPU, timeout {_fmt_time(s.sample_timeout)}: "
        "tinystories.Generator(model, tokenizer).stream(prompt) on the volume, piece by piece",
        f"  sample_batch  no GPU, timeout {_fmt_time(s.sample_timeout)}: "
        "Generator.complete_batch(prompt, seeds) on the volume; --samples N maps it over "
        "containers",
    ]
    if training is not None:
        c = training.config
        out = f"{MOUNT}/{c['out_dir']}"
        lines.append("this run:")
        lines += [f"  {d.describe()}" for d in training.data]
        if not training.data:
            lines.append(
                f"  data: vocabulary and shards already on the volume "
                f"({MOUNT}/{c['data_dir'] or c['out_dir'] + '/data'})"
            )
        lines.append(
            f"  1. prepare: vocabulary and shards in "
            f"{MOUNT}/{c['data_dir'] or c['out_dir'] + '/data'}"
        )
        resume = f"resume from {out}/ckpt.pt" if c.get("resume") else "start from scratch"
        lines.append(
            f"  2. train on {s.gpu}: {c.get('max_iters')} iterations, {resume}; "
            f"ckpt.pt, metrics.jsonl, model.bin, tokenizer.bin in {out}"
        )
        if training.download:
            lines.append(
                f"  3. download {', '.join(RESULT_FILES)} from {out} to {training.local_out}"
            )
        else:
            lines.append(f"  3. no download (--no-download): the files stay in {out}")
        settings = ", ".join(
            f"{k}={v}" for k, v in sorted(c.items()) if v not in (None, "") and k not in PATH_FIELDS
        )
        lines.append(f"  config: {settings}")
    return "\n".join(lines)


def split_seeds(seed: int, samples: int, containers: int) -> list[list[int]]:
    """Seeds seed, seed + 1, ... for ``samples`` samples, in contiguous runs, one per
    container (as even as can be; never an empty one)."""
    if samples < 1 or containers < 1:
        raise ValueError(f"samples and containers must be >= 1, got {samples} and {containers}")
    containers = min(containers, samples)
    base, extra = divmod(samples, containers)
    runs, start = [], seed
    for i in range(containers):
        size = base + (i < extra)
        runs.append(list(range(start, start + size)))
        start += size
    return runs


def _torchrun_note(gpu: str, volume: str) -> str:
    """For ``--gpu TYPE:N``: the torchrun command the train function runs."""
    from .jobs import gpu_count, torchrun_command

    n = gpu_count(gpu)
    if n == 1:
        return ""
    command = torchrun_command(n, "CONFIG.json", "RESULT.json", volume)
    return f"; with {n} GPUs, in {n} processes (DDP, NCCL): " + " ".join(["python", *command[1:]])
