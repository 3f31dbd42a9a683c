"""An OpenAI-compatible HTTP server over the engine's continuous batching.

``create_app(generator)`` returns the ASGI app (FastAPI): ``/v1/completions``,
``/v1/chat/completions``, ``/v1/models``, ``/tokenize``, ``/detokenize``, ``/health``,
``/metrics`` and a playground page at ``/``. ``tinystories serve`` runs it with uvicorn.
Needs the ``server`` extra (``pip install 'tinystories[server]'``); nothing else in the
package imports this.
"""

from .app import create_app, model_name
from .background import serve_in_background, serve_in_subprocess, server_process

__all__ = [
    "create_app",
    "model_name",
    "serve_in_background",
    "serve_in_subprocess",
    "server_process",
]
