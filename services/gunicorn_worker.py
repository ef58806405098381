"""The API's gevent worker (PostgreSQL): gunicorn's, except that a stopping process closes the
connections that sit idle between requests at once, instead of waiting for them.

gunicorn's gevent worker stops by waiting until every connection is gone, up to its graceful
timeout (30 s), and then kills whatever is left. A client that keeps a connection alive for its
next request (every pooled HTTP client does) therefore held each stop or deploy for the whole
30 s, and the requests still running at the end were cut off. Here a SIGTERM shuts the read side
of each connection that has had its answer and waits for another request, so the client sees the
usual close of an idle keep-alive connection, and the stop waits only for the requests in flight
(these answer with `Connection: close`). A fresh connection whose first request may be on its way
is left to be served. Outside services.api like services.gunicorn_conf, for the same reason.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import gevent
from gunicorn.workers.ggevent import GeventWorker


class QuickStopGeventWorker(GeventWorker):  # type: ignore[misc]  # gunicorn has no type hints
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connections: dict[Any, socket.socket] = {}  # greenlet -> its client socket
        self._answered: set[Any] = set()  # greenlets whose connection has had a request read
        self._idle: set[Any] = set()  # greenlets waiting for a connection's next request

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        me = gevent.getcurrent()
        self._connections[me] = client
        try:
            super().handle(listener, client, addr)
        finally:
            self._connections.pop(me, None)
            self._answered.discard(me)
            self._idle.discard(me)

    @contextlib.contextmanager
    def timeout_ctx(self) -> Iterator[None]:
        # gunicorn enters this while it reads a connection's next request (keep-alive loop).
        me = gevent.getcurrent()
        if me in self._answered:  # not its first request: the connection idles between requests
            self._idle.add(me)
        self._answered.add(me)
        try:
            with super().timeout_ctx():
                yield
        finally:
            self._idle.discard(me)

    def handle_exit(self, sig: Any, frame: Any) -> None:
        super().handle_exit(sig, frame)
        for me in list(self._idle):
            client = self._connections.get(me)
            if client is not None:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RD)
