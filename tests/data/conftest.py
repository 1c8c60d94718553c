"""The data tests' loopback server: ``server`` serves files from memory on 127.0.0.1, with and
without range requests, and can cut an answer short, as downloads meet them on real networks."""

from __future__ import annotations

import http.server
import threading

import pytest


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves ``files`` (name -> bytes), honouring ``Range: bytes=N-`` when ``ranges`` is on."""

    files: dict[str, bytes] = {}
    ranges = True
    cut: int | None = None  # the next answer stops after this many bytes and closes (once)
    requests: list[str | None] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = self.files.get(self.path.lstrip("/"))
        rng = self.headers.get("Range")
        type(self).requests.append(rng)
        if body is None:
            self.send_error(404)
            return
        start = int(rng.split("=")[1].rstrip("-")) if rng and self.ranges else 0
        if start >= len(body) and start:
            self.send_error(416)
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut, type(self).cut = type(self).cut, None
        self.wfile.write(body[start:] if cut is None else body[start:start + cut])
        self.close_connection = cut is not None

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    RangeHandler.files, RangeHandler.requests, RangeHandler.ranges, RangeHandler.cut = {}, [], True, None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", RangeHandler
    httpd.shutdown()
    httpd.server_close()
