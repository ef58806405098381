"""What the workers count, kept in the database (table worker_counters) for the API's /metrics.

After each chunk a worker adds, in one upsert: the chunk's duration and each finished fit's
(started to finished) to two histograms, the finished fits by status, and the epochs run; in the
transaction of the chunk's last write when that write ends its fits (the common case).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.dialects import postgresql, sqlite

from shared.store.built_once import core
from shared.store.bulk import UpsertInsert, unnested
from shared.store.db import Database
from shared.store.models import WorkerCounter

BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, math.inf)
CHUNK_SECONDS = "calib_chunk_duration_seconds"
FIT_SECONDS = "calib_fit_duration_seconds"
FITS_FINISHED = "calib_worker_fits_finished_total"
EPOCHS = "calib_worker_epochs_total"
HISTOGRAMS = {
    CHUNK_SECONDS: "Wall time of one chunk in a worker, claim to last write",
    FIT_SECONDS: "Wall time of a finished fit in its worker, from the claim to its last write",
}
COUNTERS = {FITS_FINISHED: "Fits that workers finished, by status", EPOCHS: "Epochs that workers computed"}


def le_label(bound: float) -> str:
    return "le=+Inf" if math.isinf(bound) else f"le={bound:g}"


def _observe(into: dict[tuple[str, str], float], name: str, seconds: float) -> None:
    for bound in BUCKETS:
        if seconds <= bound:
            into[(name + "_bucket", le_label(bound))] += 1
    into[(name + "_sum", "")] += seconds
    into[(name + "_count", "")] += 1


def record_chunk(db: Database, finished: Iterable[tuple[str, int, float]], chunk_seconds: float) -> None:
    """Count a chunk that ran in a transaction of its own (one that ended no fit in its last write)."""
    with db.session(write=True) as session:
        if db.engine.dialect.name == "postgresql":
            # Counters are not worth a disk flush per chunk (a third of a small chunk's time): a
            # crash of PostgreSQL itself may lose the last few milliseconds of counts, never a fit.
            session.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))
        add_chunk(session, finished, chunk_seconds)


def add_chunk(session: so.Session, finished: Iterable[tuple[str, int, float]], chunk_seconds: float) -> None:
    """Count a chunk in the caller's transaction (its last write's, usually): its duration, and the
    fits it finished as (status, epochs done, seconds from the claim), in one upsert."""
    increments: dict[tuple[str, str], float] = defaultdict(float)
    _observe(increments, CHUNK_SECONDS, chunk_seconds)
    for status, epochs_done, seconds in finished:
        increments[(FITS_FINISHED, f"status={status}")] += 1
        increments[(EPOCHS, "")] += epochs_done
        _observe(increments, FIT_SECONDS, seconds)
    rows = sorted(increments.items())
    if session.get_bind().dialect.name == "postgresql":
        core(session).execute(
            _ADDING_ARRAYS,
            {
                "names": [name for (name, _), _ in rows],
                "labels": [label for (_, label), _ in rows],
                "values": [value for _, value in rows],
            },
        )
    else:
        core(session).execute(
            _ADDING_ROWS, [{"name": name, "label": label, "value": value} for (name, label), value in rows]
        )


def _adding(insert: UpsertInsert) -> sa.Executable:
    return insert.on_conflict_do_update(
        index_elements=["name", "label"], set_={"value": WorkerCounter.value + insert.excluded.value}
    )


# Every chunk adds, so both are built once (shared/store/built_once.py says why). On PostgreSQL the
# rows (about thirty: two histograms' buckets) go as three arrays in one statement: as an
# executemany they were a statement each, 2 ms of a single fit's chunk (benchmarks/README.md,
# twenty-first sitting). Both take the rows sorted, so two workers adding at once lock them in
# the same order (no deadlock).
_INCREMENTS = unnested(name=sa.String, label=sa.String, value=sa.Float)
_ADDING_ARRAYS = _adding(
    postgresql.insert(WorkerCounter).from_select(
        ["name", "label", "value"],
        sa.select(_INCREMENTS.c.name, _INCREMENTS.c.label, _INCREMENTS.c.value).order_by(
            _INCREMENTS.c.name, _INCREMENTS.c.label
        ),
    )
)
_ADDING_ROWS = _adding(sqlite.insert(WorkerCounter))


def read(db: Database) -> list[tuple[str, str, float]]:
    with db.session() as session:
        return [
            (r.name, r.label, r.value)
            for r in session.execute(sa.select(WorkerCounter.name, WorkerCounter.label, WorkerCounter.value))
        ]
