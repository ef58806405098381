"""The cycle collector's settings for served processes (shared/runtime/collector.py)."""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Iterator

import pytest

from shared.runtime import collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_what_a_process_holds_at_start_is_out_of_the_collectors_sight(restored_collector: None) -> None:
    kept = [object() for _ in range(3)]
    held = [kept]  # a container: only containers are tracked by the collector
    _, middle, old = gc.get_threshold()
    collector.settle_after_start()
    assert gc.get_freeze_count() > 0
    # Frozen objects are in no generation: a full collection walks none of them.
    assert not any(any(obj is held for obj in gc.get_objects(generation)) for generation in range(3))
    assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, middle, old)


def test_cycles_made_after_the_start_are_still_collected(restored_collector: None) -> None:
    collector.settle_after_start()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2


def test_a_forked_process_freezes_what_it_inherited_without_a_collection(restored_collector: None) -> None:
    """A Celery pool process: the main process settled before the fork. A collection in the child
    would walk every inherited object, and copy each page the fork had shared."""
    collector.settle_after_start()
    later = [[] for _ in range(10)]  # made after the parent settled, before the fork
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child reports through the pipe)
        collections: list[str] = []
        gc.callbacks.append(lambda phase, _info: collections.append(phase))
        collector.settle_after_fork()
        seen = any(any(obj is later for obj in gc.get_objects(generation)) for generation in range(3))
        report = {"collections": collections, "later_still_seen": seen, "threshold": gc.get_threshold()[0]}
        os.write(write, json.dumps(report).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = json.loads(pipe.read())
    os.waitpid(child, 0)
    assert report == {"collections": [], "later_still_seen": False, "threshold": collector.YOUNG_THRESHOLD}
