"""A loopback HTTP server for download tests: {path: bytes} on 127.0.0.1, with Range
requests (206/416), 404s, and fault modes (a truncated body, a server ignoring Range)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Mirror:
    """Serves ``files`` ({path without leading slash: bytes}) at ``url`` while entered."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.truncate: dict[str, int] = {}  # path -> send only this many body bytes, once
        self.ignore_range = False  # answer Range requests with the whole file (200)
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.lstrip("/")
                rng = self.headers.get("Range")
                mirror.requests.append((path, rng))
                body = mirror.files.get(path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                if rng and not mirror.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                chunk = body[start:]
                if path in mirror.truncate:
                    chunk = chunk[: mirror.truncate.pop(path)]
                    self.close_connection = True
                self.wfile.write(chunk)
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Mirror:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
