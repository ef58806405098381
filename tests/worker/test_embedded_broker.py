"""The embedded default's broker (shared/runtime/sqla_broker.py): a queue found empty is not taken
from again, under SQLite's write lock, until the broker's file has changed; a message another
process publishes is still taken on the next poll, once, and deleted."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kombu import Connection
from kombu.transport.virtual import Empty

QUEUE = "calib-test"
TRANSPORT = "shared.runtime.sqla_broker:Transport"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'broker.db'}"


def _publish(url: str, body: dict[str, Any]) -> None:
    """As the API publishes: a connection (a process) of its own."""
    with Connection(url, transport=TRANSPORT) as publisher:
        publisher.SimpleQueue(QUEUE).put(body)


def _statements(channel: Any) -> list[str]:
    seen: list[str] = []
    sa.event.listen(channel.session.get_bind(), "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def test_a_quiet_queue_is_looked_at_again_only_after_the_file_changes(broker: str) -> None:
    with Connection(broker, transport=TRANSPORT) as consumer:
        consumer.SimpleQueue(QUEUE)  # declared, as a worker declares its queues at start
        channel: Any = consumer.default_channel
        statements = _statements(channel)
        with pytest.raises(Empty):
            channel._get(QUEUE)
        assert any("BEGIN IMMEDIATE" in s for s in statements)  # the first look takes the lock
        statements.clear()
        for _ in range(20):  # an idle worker's next second of polls
            with pytest.raises(Empty):
                channel._get(QUEUE)
        assert statements == []

        _publish(broker, {"chunk": "c1"})
        message = channel._get(QUEUE)
        assert message["body"] is not None and statements  # seen at the first poll after the publish
        statements.clear()
        with pytest.raises(Empty):
            channel._get(QUEUE)  # its own delete changed the file once: looked at once more
        with pytest.raises(Empty):
            channel._get(QUEUE)
        assert len([s for s in statements if "BEGIN IMMEDIATE" in s]) <= 1

    with sqlite3.connect(broker.removeprefix("sqlite:///")) as db:
        assert db.execute("SELECT count(*) FROM kombu_message").fetchone()[0] == 0  # taken and deleted


def test_messages_published_to_a_quiet_queue_are_all_taken_in_order(broker: str) -> None:
    with Connection(broker, transport=TRANSPORT) as consumer:
        queue = consumer.SimpleQueue(QUEUE)
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.2)  # polled and found empty: quiet
        for i in range(5):
            _publish(broker, {"chunk": f"c{i}"})
        taken = []
        for _ in range(5):
            message = queue.get(timeout=1)
            message.ack()
            taken.append(message.payload["chunk"])
        assert taken == [f"c{i}" for i in range(5)]
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.2)


def test_asking_a_queues_size_hands_the_connection_back(broker: str) -> None:
    """The API asks the queue's depth on pooled connections; kombu's session kept each one's
    connection to the broker checked out, and 16 threads used the broker's pool (15) up: the next
    one waited for the pool's 30 s timeout."""
    _publish(broker, {"chunk": "c1"})
    with Connection(broker, transport=TRANSPORT) as connection:
        channel: Any = connection.default_channel
        pool = channel.session.get_bind().pool
        assert channel.queue_declare(queue=QUEUE, passive=True).message_count == 1
        assert pool.checkedout() == 0
        channel.queue_declare(queue="calib-new")  # a queue declared for the first time
        assert pool.checkedout() == 0
