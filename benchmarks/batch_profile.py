"""Where a 10,000-fit batch's time goes, phase by phase, in one process (no HTTP, no Celery).

`python -m benchmarks.batch_profile [--fits 10000] [--embedded]` builds the same batch as
`benchmarks.service` (thermometer data with noise, 5000 epochs, every loss kept) and times,
on a fresh PostgreSQL database (or a SQLite file): validating the request (parse), resolving
the fits and building their rows (rows), inserting them (insert: COPY on PostgreSQL), and for
each chunk the worker's claim, the engine, encoding the losses (encode), and the writes of
loss blocks and results (write). The service adds HTTP, the publish and the waiting on top.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

from benchmarks.databases import fresh_postgres
from benchmarks.service import batch_body
from migrations.apply import upgrade
from services.api.submit import fit_rows
from services.worker import runner, store
from shared.contract.schemas import BatchCreate, FitCreate
from shared.runtime import collector
from shared.runtime.settings import Settings
from shared.store import loss_blocks
from shared.store.bulk import insert_rows
from shared.store.db import Database
from shared.store.models import Batch, Fit, new_id, utcnow

T = TypeVar("T")
SECONDS: dict[str, float] = defaultdict(float)


@contextmanager
def phase(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        SECONDS[name] += time.perf_counter() - started


def timed(name: str, function: Callable[..., T]) -> Callable[..., T]:
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with phase(name):
            return function(*args, **kwargs)

    return wrapper


def profile(settings: Settings, fits: int) -> dict[str, float]:
    upgrade(settings)
    db = Database.from_settings(settings)
    raw = json.dumps(batch_body(fits))
    started = time.perf_counter()
    with phase("parse"):
        request = BatchCreate.model_validate_json(raw)
        context = {"settings": settings}
        specs = [
            FitCreate.model_validate({**request.defaults, **fit.model_dump()}, context=context) for fit in request.fits
        ]
    size = settings.chunk_size
    chunks = [new_id() for _ in range(0, fits, size)]
    batch = Batch(id=new_id(), tenant="profile", count=fits, cancelled=False, created_at=utcnow())
    with phase("rows"):
        rows = fit_rows(specs, "profile", batch_id=batch.id, chunk_ids=[chunks[i // size] for i in range(fits)])
    with phase("insert"), db.session(write=True) as session:
        session.add(batch)
        session.flush()
        insert_rows(session, Fit, rows)
    # The worker's phases: the runner as it runs, its store calls and the encoding timed apart.
    store.claim, store.write = timed("claim", store.claim), timed("write", store.write)
    loss_blocks.encode = timed("encode", loss_blocks.encode)
    loss_blocks.insert = timed("write: of it, loss blocks", loss_blocks.insert)
    for chunk in chunks:
        with phase("worker"):
            runner.run_chunk(db, settings, chunk, torch.device("cpu"))
    SECONDS["engine and the rest of the runner"] = SECONDS.pop("worker") - sum(
        SECONDS[name] for name in ("claim", "write", "encode")
    )
    SECONDS["total"] = time.perf_counter() - started
    db.dispose()
    return dict(SECONDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fits", type=int, default=10_000)
    parser.add_argument("--embedded", action="store_true", help="a SQLite file instead of PostgreSQL")
    args = parser.parse_args()
    collector.settle_after_start()  # as the API and the workers do once started
    with tempfile.TemporaryDirectory(prefix="calib-profile-") as tmp:
        if args.embedded:
            seconds = profile(Settings(data_dir=Path(tmp)), args.fits)
        else:
            with fresh_postgres("calib_profile") as url:
                seconds = profile(Settings(data_dir=Path(tmp), database_url=url), args.fits)
    backend = "SQLite" if args.embedded else "PostgreSQL"
    print(f"{args.fits} fits x 5000 epochs, {backend}, one process:")
    print("| phase | seconds |\n|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.3f} |")
    print(json.dumps({"benchmark": "batch_profile", "backend": backend, "fits": args.fits, "seconds": seconds}))


if __name__ == "__main__":
    main()
