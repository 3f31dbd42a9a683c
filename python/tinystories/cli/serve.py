"""``tinystories serve``: the OpenAI-compatible server (tinystories.server) under uvicorn."""

from __future__ import annotations

import argparse
import os
import signal

from ..modal.settings import DEFAULT_VOLUME, ServeSettings
from .common import add_debug_argument

SERVE_EXAMPLES = """\
examples:
  tinystories serve                                   the bundled model on 127.0.0.1:8000
  tinystories serve --model model.bin --tokenizer tok105.bin --port 8080 --parallel 32
  tinystories serve --pretrained stories15M --host 0.0.0.0 --api-key "$KEY"
  tinystories serve --modal --dry-run                 what a Modal deployment would be
  tinystories serve --modal --model-path out/model.bin --max-containers 8
"""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    serve = commands.add_parser(
        "serve",
        help="serve a model over HTTP (OpenAI's API, a playground page)",
        description="Serve a model with OpenAI's completions and chat completions API, "
        "continuously batched, and a playground page at /. Needs the server extra: "
        "pip install 'tinystories[server]'.",
        epilog=SERVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--model", "-m", help="llama2.c model file (v0/v1/v2)")
    serve.add_argument("--tokenizer", "-z", help="llama2.c tokenizer.bin")
    serve.add_argument("--pretrained", metavar="NAME", help="a registry model, downloaded once")
    serve.add_argument("--offline", action="store_true", help="--pretrained: the cache only")
    serve.add_argument("--name", help="the model id clients pass (default: the file's stem)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--parallel", type=int, default=8, help="sequences generated together (default 8)"
    )
    serve.add_argument(
        "--max-queue",
        type=int,
        default=64,
        help="requests waiting beyond --parallel before 503s (default 64)",
    )
    serve.add_argument(
        "--api-key",
        default=os.environ.get("TINYSTORIES_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default: $TINYSTORIES_API_KEY, else none)",
    )
    serve.add_argument(
        "--cors", action="append", default=[], metavar="ORIGIN", help="allow this origin"
    )
    serve.add_argument(
        "--stream-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="least time between two chunks of a stream (0: what the engine has, at once; "
        "default: 10 ms alone, 2 ms per stream running, at most 100 ms)",
    )
    serve.add_argument("--n-threads", type=int, default=None, help="engine threads")
    modal_group = serve.add_argument_group("Modal (--modal: deploy as a web endpoint)")
    modal_group.add_argument("--modal", action="store_true", help="deploy on Modal instead")
    modal_group.add_argument(
        "--dry-run", action="store_true", help="--modal: print the plan, deploy nothing"
    )
    modal_group.add_argument(
        "--model-path", help="--modal: model on the volume (default: the bundled model)"
    )
    modal_group.add_argument("--volume", default=DEFAULT_VOLUME, help="--modal: the volume")
    d = ServeSettings()
    modal_group.add_argument("--min-containers", type=int, default=d.min_containers)
    modal_group.add_argument("--max-containers", type=int, default=d.max_containers)
    modal_group.add_argument(
        "--scaledown-window",
        type=int,
        default=d.scaledown_window,
        help=f"seconds an idle container stays up (default {d.scaledown_window})",
    )
    modal_group.add_argument(
        "--concurrent",
        type=int,
        default=d.concurrent,
        help=f"requests one container takes at once (default {d.concurrent})",
    )
    add_debug_argument(serve)
    serve.set_defaults(run=run)
    return serve


def run(args: argparse.Namespace) -> int:
    if args.modal:
        return run_modal(args)
    try:
        import uvicorn

        from ..server import create_app
    except ImportError as error:
        raise RuntimeError(
            f"serving needs the server extra ({error.name} is missing): "
            "pip install 'tinystories[server]'"
        ) from None
    from .generate import load_generator

    app = create_app(
        load_generator(args),
        name=args.name,
        parallel=args.parallel,
        max_queue=args.max_queue,
        api_key=args.api_key,
        cors_origins=args.cors,
        stream_interval=args.stream_interval,
    )
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    # uvicorn stops on SIGINT/SIGTERM, then raises the signal again for the handler it
    # found; a quiet one makes a requested stop exit 0.
    quiet = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in quiet.items():
            signal.signal(sig, handler)
    return 0 if server.started else 1


def run_modal(args: argparse.Namespace) -> int:
    """``serve --modal``: deploy the same app as a Modal web endpoint."""
    from ..modal.check import require_modal

    require_modal("serve --modal", credentials=not args.dry_run)
    from ..modal.serve import run_serve
    from ..modal.settings import Settings, find_source

    serve = ServeSettings(
        model=args.model_path,
        tokenizer=args.tokenizer,
        name=args.name,
        parallel=args.parallel,
        concurrent=args.concurrent,
        min_containers=args.min_containers,
        max_containers=args.max_containers,
        scaledown_window=args.scaledown_window,
    )
    settings = Settings(volume=args.volume, source=find_source())
    return run_serve(settings, serve, dry_run=args.dry_run)
