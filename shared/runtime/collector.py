"""Python's cycle collector, tuned for a served process that handles bulk requests.

A 10,000-series batch allocates millions of small objects (validated specs, their rows, COPY's
values). At the interpreter's default thresholds (700 allocations a young collection, and a full
one whenever the long-lived objects grow by a quarter) its POST spent about 0.2 s of its 1.1 s in
the collector, most of it walking the objects every process holds from its start: modules, the app,
pydantic's validators, torch. Measured in-process on PostgreSQL (benchmarks/README.md, fifteenth
sitting): 1.10 s → 0.87 s.
"""

from __future__ import annotations

import gc

# Young collections every 10,000 net allocations, not 700: each walks fewer, larger generations,
# and a request's short-lived objects mostly die (by reference count) before one starts. Cycles
# wait a little longer to be freed; no object here is large (a body's arrays are not tracked).
YOUNG_THRESHOLD = 10_000


def settle_after_start() -> None:
    """Call once the process has imported and built what it keeps (the app, the Celery app):
    what exists now is moved out of the collector's sight for good (gc.freeze), so that no full
    collection walks it again, and young collections run less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def settle_after_fork() -> None:
    """In a process forked from one that settled (a Celery pool process): what it inherited is
    frozen already, and the thresholds are inherited too. What came after is frozen with no
    collection: a collection here walked every inherited object, writing to its header, and so
    copied each page the fork had shared (about 70 MB and 0.15 s of CPU per pool process with
    torch imported, measured)."""
    gc.freeze()
