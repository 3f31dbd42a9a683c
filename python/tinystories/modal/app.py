"""The Modal app behind the ``--modal`` commands: :func:`build_app` defines it, and
:func:`run_training` / :func:`run_sampling` run it from the client.

:func:`build_app` defines the image (:mod:`.image`), the volume (default
``tinystories-volume``, created if missing) mounted at ``/data``, and three functions,
thin wrappers over the bodies in :mod:`.jobs`. The functions are defined inside
:func:`build_app` (the GPU, volume and timeouts are per-command settings), so they are
``serialized=True``: the image runs the local Python version, which cloudpickle needs.

Nothing else of tinystories imports this package's Modal modules; ``settings`` and
``check`` import without ``modal``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import modal

from . import jobs
from .image import build_image
from .plan import describe_plan, plan_training
from .settings import APP_NAME, MOUNT, RESULT_FILES, Settings, volume_path
from .volume import download_file, upload


@dataclass
class ModalApp:
    """The Modal objects for one command, and what :func:`describe_plan` prints about them."""

    settings: Settings
    app: modal.App
    image: modal.Image
    volume: modal.Volume
    prepare: modal.Function
    train: modal.Function
    sample: modal.Function
    sample_batch: modal.Function
    image_steps: list[str] = field(default_factory=list)


def build_app(settings: Settings) -> ModalApp:
    """Defines the app, image, volume and functions for ``settings``; contacts nothing."""
    image, steps = build_image(settings)
    app = modal.App(APP_NAME, include_source=False)  # the code comes with the wheel
    volume = modal.Volume.from_name(settings.volume, create_if_missing=True)
    mounts = {MOUNT: volume}
    volume_name = settings.volume
    processes = jobs.gpu_count(settings.gpu)

    @app.function(
        image=image,
        volumes=mounts,
        cpu=settings.prepare_cpu,
        memory=settings.prepare_memory,
        timeout=settings.prepare_timeout,
        serialized=True,
        name="prepare",
    )
    def prepare(config: dict, fetch: list[dict]) -> dict:
        root, commit = jobs.volume_root(), jobs.committer(volume_name)
        return jobs.prepare_body(config, fetch, root=root, commit=commit)

    @app.function(
        image=image,
        volumes=mounts,
        gpu=settings.gpu,
        timeout=settings.train_timeout,
        serialized=True,
        name="train",
    )
    def train(config: dict) -> dict:
        root = jobs.volume_root()
        config = jobs.resume_if_rescheduled(config, root)
        if processes > 1:  # --gpu TYPE:N: one torchrun process per GPU
            return jobs.distributed_train_body(config, processes, root=root, volume=volume_name)
        return jobs.train_body(config, root=root, commit=jobs.committer(volume_name))

    @app.function(
        image=image,
        volumes=mounts,
        timeout=settings.sample_timeout,
        serialized=True,
        name="sample",
    )
    def sample(model: str, tokenizer: str, prompt: str, options: dict) -> Iterator[str]:
        yield from jobs.sample_body(model, tokenizer, prompt, options, root=jobs.volume_root())

    @app.function(
        image=image,
        volumes=mounts,
        timeout=settings.sample_timeout,
        serialized=True,
        name="sample_batch",
    )
    def sample_batch(
        model: str, tokenizer: str, prompt: str, options: dict, seeds: list[int]
    ) -> list[dict]:
        return jobs.sample_batch_body(
            model, tokenizer, prompt, options, seeds, root=jobs.volume_root()
        )

    return ModalApp(settings, app, image, volume, prepare, train, sample, sample_batch, steps)


def run_training(
    train_kwargs: dict,
    settings: Settings,
    *,
    out: str,
    data_dir: str | None = None,
    download: bool = True,
    dry_run: bool = False,
    log: Callable[[str], None] = print,
) -> int:
    """``python -m tinystories.train --modal``: upload or plan the data, run prepare and
    train remotely with logs streamed here, then download the results to ``out``."""
    plan = plan_training(train_kwargs, out=out, data_dir=data_dir, download=download)
    ma = build_app(settings)
    if dry_run:
        log(describe_plan(ma, plan))
        return 0
    try:
        for data in plan.data:
            if data.upload is not None:
                upload(ma.volume, data.upload, data.dest, skip_existing=True, log=log)
        with modal.enable_output(), ma.app.run():
            ma.prepare.remote(plan.config, plan.fetch)
            result = ma.train.remote(plan.config)
        val = result["final_val_loss"]
        log(
            f"done on Modal: {result['iters']} iterations"
            + (f", val loss {val:.4f}" if val is not None else "")
            + f"; {MOUNT}/{result['model']} on volume {settings.volume}"
        )
        if download:
            for name in RESULT_FILES:
                remote = f"{result['out_dir']}/{name}"
                download_file(ma.volume, remote, plan.local_out / name, log=log)
            log(f"wrote {plan.local_out / 'model.bin'} and {plan.local_out / 'tokenizer.bin'}")
    except modal.exception.Error as err:
        print(f"tinystories: error: Modal: {err}", file=sys.stderr)
        return 1
    return 0


def fan_out_samples(
    ma: ModalApp,
    model: str,
    tokenizer: str,
    prompt: str,
    options: dict,
    seed_runs: list[list[int]],
) -> Iterator[dict]:
    """Every run of seeds in its own container (``Function.map``, in order): one record per
    sample, seed by seed, each what ``Generator.complete(prompt, seed=s, **options)`` gives
    here. Call inside ``ma.app.run()``."""
    k = len(seed_runs)
    for records in ma.sample_batch.map([model] * k, [tokenizer] * k, [prompt] * k,
                                       [options] * k, seed_runs):  # fmt: skip
        yield from records


def run_fanout(
    settings: Settings,
    model: str,
    tokenizer: str | None,
    prompt: str,
    options: dict,
    seed_runs: list[list[int]],
    *,
    dry_run: bool = False,
    out=None,
) -> int:
    """``generate --modal --samples N``: the samples split over containers, printed as JSON
    lines in seed order (or, with ``dry_run``, the plan and the split)."""
    out = out or sys.stdout
    model, tokenizer = _volume_model(model, tokenizer)
    ma = build_app(settings)
    if dry_run:
        samples = sum(len(run) for run in seed_runs)
        lines = [
            describe_plan(ma),
            "this run:",
            f"  {samples} samples of {prompt!r} from {MOUNT}/{model} over "
            f"{len(seed_runs)} containers (sample_batch.map), one batch each:",
        ]
        lines += [f"    container {i + 1}: seeds {run[0]}..{run[-1]} ({len(run)})"
                  for i, run in enumerate(seed_runs)]  # fmt: skip
        out.write("\n".join(lines) + "\n")
        return 0
    import json

    try:
        with modal.enable_output(), ma.app.run():
            for record in fan_out_samples(ma, model, tokenizer, prompt, options, seed_runs):
                record = {"prompt": prompt, **record, "model": model}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.flush()
    except modal.exception.Error as err:
        print(f"tinystories: error: Modal: {err}", file=sys.stderr)
        return 1
    return 0


def _volume_model(model: str, tokenizer: str | None) -> tuple[str, str]:
    """The model's and tokenizer's paths on the volume (tokenizer.bin beside the model
    when none is given)."""
    model = volume_path(model, "--model-path")
    if tokenizer:
        return model, volume_path(tokenizer, "--tokenizer")
    return model, str(PurePosixPath(model).with_name("tokenizer.bin"))


def run_sampling(
    settings: Settings,
    model: str,
    tokenizer: str | None,
    prompt: str,
    options: dict,
    out=None,
) -> int:
    """``python -m tinystories generate --modal``: streams a story from the volume's model.
    As locally, nothing is printed before the remote side has checked its arguments."""
    out = out or sys.stdout
    model, tokenizer = _volume_model(model, tokenizer)
    ma = build_app(settings)
    try:
        with modal.enable_output(), ma.app.run():
            pieces = iter(ma.sample.remote_gen(model, tokenizer, prompt, options))
            first = next(pieces, "")
            out.write(prompt + first)
            out.flush()
            for piece in pieces:
                out.write(piece)
                out.flush()
    except modal.exception.Error as err:
        print(f"tinystories: error: Modal: {err}", file=sys.stderr)
        return 1
    out.write("\n")
    return 0
