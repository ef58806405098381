"""kombu's SQLAlchemy transport, for the embedded default: polling every 50 ms instead of every
second, surviving workers that start together, and deleting the messages it delivers.

- kombu's virtual transports poll an idle queue once a second, which put a second between a
  submission and its worker on the embedded default. The interval is a transport option, but
  kombu's SQLAlchemy channel passes all its options on to create_engine(), which refuses it;
  this channel keeps it for the poller.
- Two workers starting on a fresh data directory both declare the queue's row; the second
  insert fails on the unique name (IntegrityError), which kombu does not expect, and that
  worker died at start. Here the loser reads the row the winner made.
- kombu marks a delivered message invisible and keeps it for ever, so the broker's file grew
  with every chunk ever run. Here a delivered message is deleted in the same transaction
  that takes it (the database is the truth: a message only wakes a worker).
- A queue's declaration and its size left kombu's session holding a connection of the broker's
  pool, so enough threads asking for the queue's depth used the pool up (below); each now commits.
- Each poll of a queue took SQLite's write lock (the take must be atomic) and cost about 1 ms
  of CPU: an idle worker polling two queues 20 times a second spent 4 % of a core on nothing
  and contended for the lock with the API's publishes. A queue found empty is now looked at
  again only once the file has changed since (SQLite's `PRAGMA data_version`, read on a
  connection of its own, moves whenever any other connection commits): an idle poll is one
  pragma of a few microseconds, and a publish is still seen within one interval.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from kombu.transport import sqlalchemy as kombu_sqla
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import IntegrityError

POLLING_INTERVAL = 0.05


class Channel(kombu_sqla.Channel):
    def _engine_from_config(self) -> Any:
        client = self.connection.client
        assert client is not None and client.hostname is not None, "a channel is made by its connection"
        options = dict(client.transport_options or {})
        for key in (
            "queue_tablename",
            "message_tablename",
            "callback",
            "errback",
            "max_retries",
            "interval_start",
            "interval_step",
            "interval_max",
            "retry_errors",
            "polling_interval",
        ):
            options.pop(key, None)
        return create_engine(client.hostname, **options)

    def _get_or_create(self, queue: str) -> Any:
        try:
            # kombu's stubs leave out the SQLAlchemy channel's private helpers it extends.
            return super()._get_or_create(queue)  # type: ignore[misc]
        except IntegrityError:
            # Another process declared the same queue at the same instant: use its row.
            self.session.rollback()
            return self.session.query(self.queue_cls).filter(self.queue_cls.name == queue).one()

    _trimmed: set[str] = set()

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        self._watcher: sqlite3.Connection | None = None  # set before kombu's __init__, which may close
        self._quiet_since: dict[str, int] = {}  # queue -> the file's version when it was found empty
        super().__init__(connection, **kwargs)
        client = self.connection.client
        assert client is not None and client.hostname is not None, "a channel is made by its connection"
        url = make_url(client.hostname)
        if url.get_backend_name() == "sqlite" and url.database:
            # Autocommit: the pragma must not hold a read transaction open between polls.
            self._watcher = sqlite3.connect(url.database, isolation_level=None, check_same_thread=False)

    def _file_version(self) -> int | None:
        """SQLite's count of commits by other connections to the broker's file, read on a
        connection that does nothing else (None where the broker is not an SQLite file)."""
        if self._watcher is None:
            return None
        return int(self._watcher.execute("PRAGMA data_version").fetchone()[0])

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        # Read before the take: a publish committed after this read moves the version, so a queue
        # found empty below is looked at again on the next poll.
        version = self._file_version()
        if version is not None and self._quiet_since.get(queue) == version:
            raise Empty()
        self._quiet_since.pop(queue, None)
        row = self._get_or_create(queue)
        if queue not in self._trimmed:
            # Messages an older version delivered and kept: gone once, at this process's first take.
            self._trimmed.add(queue)
            self.session.query(self.message_cls).filter(
                self.message_cls.queue_id == row.id, self.message_cls.visible.is_(False)
            ).delete()
            self.session.commit()
        if self.session.get_bind().dialect.name == "sqlite":
            self.session.execute(text("BEGIN IMMEDIATE TRANSACTION"))
        try:
            message = (
                self.session.query(self.message_cls)
                .with_for_update()
                .filter(self.message_cls.queue_id == row.id, self.message_cls.visible.is_(True))
                .order_by(self.message_cls.sent_at, self.message_cls.id)
                .limit(1)
                .first()
            )
            if message is None:
                if version is not None:
                    self._quiet_since[queue] = version
                raise Empty()
            payload = loads(bytes_to_str(message.payload))
            self.session.delete(message)
            return payload
        finally:
            self.session.commit()

    # kombu's session keeps the connection of its last query checked out until it commits: a
    # queue's declaration and its size (the API's queue depth) never commit, so every pooled kombu
    # connection that had asked kept one of the engine's 15 for good. With the API's threads past
    # that, the next declaration waited the pool's 30 s timeout. Each hands its connection back.
    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        try:
            super()._new_queue(queue, **kwargs)
        finally:
            self.session.commit()

    def _size(self, queue: str) -> int:
        try:
            return int(super()._size(queue))
        finally:
            self.session.commit()

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        super().close()


class Transport(kombu_sqla.Transport):
    Channel = Channel
    polling_interval = POLLING_INTERVAL
