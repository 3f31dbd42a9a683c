"""``tinystories serve --modal``: the HTTP server (:mod:`tinystories.server`) deployed as
an autoscaling Modal web endpoint.

:func:`build_serve_app` defines an app of its own (``tinystories-serve``) with one
function, ``web``: ``@modal.asgi_app`` over :func:`.jobs.serve_app`, with
``@modal.concurrent`` inputs per container and the container bounds as flags. Its image is
the training image (:mod:`.image`: this checkout's wheel built inside it), the model comes
from the volume or is the bundled one. :func:`run_serve` deploys it, or prints the plan.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import modal

from . import jobs
from .image import build_image
from .settings import MOUNT, SERVE_APP_NAME, ServeSettings, Settings


@dataclass
class ServeApp:
    settings: Settings
    serve: ServeSettings
    app: modal.App
    web: modal.Function
    image_steps: list[str]


def build_serve_app(settings: Settings, serve: ServeSettings) -> ServeApp:
    """Defines the app, image, volume and web function; contacts nothing."""
    image, steps = build_image(settings)
    app = modal.App(SERVE_APP_NAME, include_source=False)
    volume = modal.Volume.from_name(settings.volume, create_if_missing=True)

    @app.function(
        image=image,
        volumes={MOUNT: volume},
        min_containers=serve.min_containers,
        max_containers=serve.max_containers,
        scaledown_window=serve.scaledown_window,
        serialized=True,
        name="web",
    )
    @modal.concurrent(max_inputs=serve.concurrent)
    @modal.asgi_app()
    def web():
        return jobs.serve_app(
            serve.model,
            serve.tokenizer,
            root=jobs.volume_root(),
            name=serve.name,
            parallel=serve.parallel,
        )

    return ServeApp(settings, serve, app, web, steps)


def describe_serve_plan(sa: ServeApp) -> str:
    s, v = sa.settings, sa.serve
    model = f"{MOUNT}/{v.model} on volume {s.volume}" if v.model else "the bundled default model"
    lines = [
        "Modal plan (dry run: nothing is built, uploaded or deployed; no credentials needed)",
        f"app:      {SERVE_APP_NAME} (deployed: it stays up until `modal app stop`)",
        f"volume:   {s.volume} (created if missing), mounted at {MOUNT}",
        "image:",
        *[f"  {i}. {step}" for i, step in enumerate(sa.image_steps, 1)],
        "function:",
        f"  web      no GPU, an ASGI web endpoint: tinystories.server.create_app over {model}; "
        f"{v.parallel} sequences batched per container, {v.concurrent} requests per container "
        f"at once; {v.min_containers} to {v.max_containers} containers, each stopping after "
        f"{v.scaledown_window} s idle",
        f"url:      https://WORKSPACE--{SERVE_APP_NAME}-web.modal.run (Modal's label for the "
        "web function; printed after the deploy)",
    ]
    return "\n".join(lines)


def run_serve(
    settings: Settings, serve: ServeSettings, *, dry_run: bool, log: Callable[[str], None] = print
) -> int:
    """Deploys the endpoint and prints its URL, or prints the plan."""
    sa = build_serve_app(settings, serve)
    if dry_run:
        log(describe_serve_plan(sa))
        return 0
    try:
        with modal.enable_output():
            sa.app.deploy()
        log(f"serving at {sa.web.get_web_url()} (OpenAI's API under /v1; stop: modal app stop "
            f"{SERVE_APP_NAME})")  # fmt: skip
    except modal.exception.Error as err:
        print(f"tinystories: error: Modal: {err}", file=sys.stderr)
        return 1
    return 0
