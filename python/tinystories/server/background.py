"""Running the server for tests, benchmarks and notebooks: the app on a thread of this
process (:func:`serve_in_background`), or ``tinystories serve`` as a process of its own
(:func:`serve_in_subprocess`; :func:`server_process` for any server binary)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager


@contextmanager
def serve_in_background(app, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serves ``app`` with uvicorn on a thread (port 0: a free one); yields the base URL
    and stops the server on exit."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="tinystories-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()
    try:
        yield f"http://{bound[0]}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def server_process(
    name: str, command: Callable[[int], Sequence[str]]
) -> Iterator[tuple[str, subprocess.Popen]]:
    """An HTTP server as a process of its own: ``command(port)`` on a free loopback port,
    once its ``/health`` answers 200; yields its base URL and the process, and stops it
    (SIGTERM, then SIGKILL after 30 s) on exit unless it has. ``name`` words the error
    when it does not start, with the end of its log."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # its log goes to a file: a server writes lines per request, which would fill a pipe
    # nobody reads and block it
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(list(command(port)), stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass  # not listening yet, or 503 while it loads
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                server.wait()
                log.seek(0)
                tail = log.read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"{name} did not start: {tail}")
            time.sleep(0.1)
        yield url, server
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        log.close()


@contextmanager
def serve_in_subprocess(args: Sequence[str] = ()) -> Iterator[tuple[str, subprocess.Popen]]:
    """``tinystories serve ARGS`` on a free loopback port (see :func:`server_process`)."""
    command = [sys.executable, "-m", "tinystories", "serve", *args]
    with server_process("tinystories serve", lambda port: [*command, "--port", str(port)]) as out:
        yield out
