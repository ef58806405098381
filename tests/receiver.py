"""A webhook receiver on 127.0.0.1 for the tests: answers with the status codes it is scripted
to, in turn (200 after the script runs out), records every request, and checks signatures."""

from __future__ import annotations

import hashlib
import hmac
import socket
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


class Trickler:
    """A hostile receiver on 127.0.0.1: it reads the request, then answers one byte every `every`
    seconds (a status line that never ends) for at most `for_seconds`, or with `huge` sends a
    200 with a body of that many bytes as fast as it can. Bounded in time and count."""

    def __init__(self, every: float = 0.5, for_seconds: float = 60.0, huge: int = 0) -> None:
        self.every, self.for_seconds, self.huge = every, for_seconds, huge
        self.connections: list[float] = []  # time.monotonic() of each accepted request
        self.closed: list[float] = []  # when each one was cut off by the sender
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/slow"
        self.stopping = threading.Event()

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        self.connections.append(time.monotonic())
        conn.settimeout(5)
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            if self.huge:
                conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {self.huge}\r\n\r\n".encode())
                block = b"x" * 1_048_576
                for _ in range(self.huge // len(block)):
                    conn.sendall(block)
                return
            line = b"HTTP/1.1 200 OK\r\n" * 1000
            ends = time.monotonic() + self.for_seconds
            for byte in line:
                if time.monotonic() > ends or self.stopping.is_set():
                    break
                conn.sendall(bytes([byte]))
                time.sleep(self.every)
        except OSError:
            pass  # the sender gave up on us: what the tests want to see
        finally:
            self.closed.append(time.monotonic())
            conn.close()


@contextmanager
def trickling(every: float = 0.5, for_seconds: float = 60.0, huge: int = 0) -> Iterator[Trickler]:
    trickler = Trickler(every, for_seconds, huge)
    thread = threading.Thread(target=trickler.serve, daemon=True)
    thread.start()
    try:
        yield trickler
    finally:
        trickler.stopping.set()
        thread.join(5)
        trickler.server.close()
