"""A read-only HTTP mirror of a local data copy on 127.0.0.1, for the download tests (tests/test_fetch*.py).

It logs every request path and can serve chosen files with their first byte flipped (same size, wrong hash).
"""
from __future__ import annotations

import contextlib
import functools
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Server:
    url: str
    requests: list[str] = field(default_factory=list)
    corrupt: set[str] = field(default_factory=set)  # URL paths served with a flipped first byte


class _Handler(SimpleHTTPRequestHandler):
    state: Server

    def do_GET(self) -> None:
        self.state.requests.append(self.path)
        if self.path in self.state.corrupt:
            body = bytearray(Path(self.translate_path(self.path)).read_bytes())
            body[0] ^= 0xFF
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(bytes(body))
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[Server]:
    """Serve `directory` (GET only: nothing can be written) until the block ends."""
    state = Server(url="")
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def dead_url() -> str:
    """A loopback URL nothing listens on: connections are refused, as without network."""
    with socket.socket() as sock:  # grab a free port, then close it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
