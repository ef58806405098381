"""A webhook receiver on 127.0.0.1 for the tests: answers with the status codes it is scripted
to, in turn (200 after the script runs out), records every request, and checks signatures."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    at: float  # time.monotonic() on arrival
    wall: float  # time.time() on arrival, to compare with the service's timestamps
    headers: dict[str, str]
    body: bytes

    def signed_by(self, secret: str) -> bool:
        """Whether Calib-Signature is the HMAC-SHA256 of "<t>.<body>" under `secret`."""
        fields = dict(part.split("=", 1) for part in self.headers["Calib-Signature"].split(","))
        expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, fields["v1"])


class Receiver:
    def __init__(self, script: list[int], hold_first_seconds: float = 0.0) -> None:
        self.script = list(script)
        self.hold_first_seconds = hold_first_seconds
        self.received: list[Received] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append(Received(time.monotonic(), time.time(), dict(self.headers.items()), body))
                receiver.arrived.set()
                if len(receiver.received) == 1 and receiver.hold_first_seconds:
                    time.sleep(receiver.hold_first_seconds)  # the worker delivering is killed meanwhile
                status = receiver.script.pop(0) if receiver.script else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, count: int, timeout: float) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.received) >= count, f"{len(self.received)} of {count} deliveries arrived in {timeout} s"
        return self.received


@contextmanager
def receiving(script: list[int], hold_first_seconds: float = 0.0) -> Iterator[Receiver]:
    receiver = Receiver(script, hold_first_seconds)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
