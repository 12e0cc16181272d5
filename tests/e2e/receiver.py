"""A real webhook receiver for the WebSub tests: ``http.server`` on a free loopback port,
in a thread of its own, keep-alive (HTTP/1.1).

Per callback path it answers verification GETs (echo the challenge, or not), records
denials and deliveries, and answers POSTs with a scripted status sequence; a POST can be
held open until the test releases it (a delivery in flight when the gateway dies).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Delivery:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Behaviour:
    verify: str = "echo"  # echo | wrong | 404
    statuses: list[int] = field(default_factory=list)  # consumed per POST; then default
    default: int = 204
    hold: threading.Event | None = None  # POSTs wait for it when set


class Receiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.gets: list[Delivery] = []
        self.posts: list[Delivery] = []
        self.behaviours: dict[str, Behaviour] = {}
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def behaviour(self, path: str) -> Behaviour:
        with self.lock:
            return self.behaviours.setdefault(path, Behaviour())

    def posts_to(self, path: str) -> list[Delivery]:
        with self.lock:
            return [p for p in self.posts if p.path == path]

    def gets_to(self, path: str, mode: str | None = None) -> list[Delivery]:
        with self.lock:
            return [
                g
                for g in self.gets
                if g.path == path and (mode is None or g.query.get("hub.mode") == mode)
            ]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body)

        def _record(self, into: list[Delivery], body: bytes) -> Delivery:
            parts = urlsplit(self.path)
            delivery = Delivery(
                parts.path,
                dict(parse_qsl(parts.query, keep_blank_values=True)),
                {k.lower(): v for k, v in self.headers.items()},
                body,
            )
            with receiver.lock:
                into.append(delivery)
            return delivery

        def do_GET(self) -> None:
            got = self._record(receiver.gets, b"")
            behaviour = receiver.behaviour(got.path)
            mode = got.query.get("hub.mode")
            if mode in ("subscribe", "unsubscribe"):
                if behaviour.verify == "404":
                    self._answer(404)
                elif behaviour.verify == "wrong":
                    self._answer(200, b"not-the-challenge")
                else:
                    self._answer(200, got.query.get("hub.challenge", "").encode())
            else:
                self._answer(200)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            path = urlsplit(self.path).path
            behaviour = receiver.behaviour(path)
            if behaviour.hold is not None:
                self._record(receiver.posts, body)
                behaviour.hold.wait(30)
                self._answer(204)
                return
            with receiver.lock:
                status = behaviour.statuses.pop(0) if behaviour.statuses else behaviour.default
            self._record(receiver.posts, body)
            self._answer(status)

    return Handler


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
