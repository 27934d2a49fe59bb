import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import override_settings


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes


@dataclass
class Receiver:
    """A real HTTP server on loopback. `answers[path]`: (status, seconds to wait) per request, in
    order; then 200 at once. `finished` names the paths in the order their answers were sent."""

    host: str = "127.0.0.1"
    port: int = 0
    received: list[Received] = field(default_factory=list)
    answers: dict = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def on(self, path: str, *answers) -> None:
        self.answers[path] = list(answers)

    def ids(self, path: str | None = None) -> list[str]:
        return [r.headers["webhook-id"] for r in self.received if path is None or r.path == path]


def serve(receiver: Receiver):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with receiver.lock:
                receiver.received.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                queued = receiver.answers.get(self.path) or []
                status, delay = queued.pop(0) if queued else (200, 0)
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(f"answered {status}".encode())
            except OSError:
                pass  # the sender gave up (timeout) and closed the connection
            with receiver.lock:
                receiver.finished.append(self.path)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server


@pytest.fixture
def receiver():
    receiver = Receiver()
    server = serve(receiver)
    with override_settings(WEBHOOKS_ALLOW_PRIVATE_NETWORKS=True):
        yield receiver
    server.shutdown()
    server.server_close()
