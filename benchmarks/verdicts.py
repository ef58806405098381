"""Stored drift verdicts: `python -m benchmarks.verdicts`.

Reads: a batch of 20,000 calibrations of one instrument is submitted through the real Flask app
(test client, no network) on a fresh SQLite database and a fresh PostgreSQL database (unless
--embedded-only), its chunks run with the worker's runner in this process (timed: the write of every
outcome, drift verdicts included), then, median of 5: GET /v1/batches/{id} (its `drifted` count),
the batch's dashboard page, the first page of its fits as CSV, and GET /v1/instruments/{id} (a page
of history).

Writes: two nights of 10,000 instruments, one calibration each a night, each night a batch; the
second night's run timed with the verdicts stored and, on another fresh database, with
shared.store.calibrations.record_drifts made a no-op: the cost of storing them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa
import torch
from flask.testing import FlaskClient

from benchmarks.databases import fresh_postgres
from migrations.apply import upgrade
from services.api import create_app
from services.worker import runner
from shared.runtime.settings import Settings
from shared.store import calibrations, tokens
from shared.store.models import Fit

FITS = 20_000
REDIS_URL = "redis://127.0.0.1:6379/11"


def _median(client: Any, path: str, repeats: int = 5) -> tuple[float, int]:
    took = []
    size = 0
    for _ in range(repeats):
        start = time.perf_counter()
        response = client.get(path)
        took.append(time.perf_counter() - start)
        assert response.status_code == 200, (path, response.status_code)
        size = len(response.data)
    return statistics.median(took), size


U = [20.0, 40.0, 60.0, 80.0]


def _client(settings: Settings) -> FlaskClient:
    """A client of the real app on freshly migrated databases, with a token."""
    upgrade(settings)
    client = create_app(settings).test_client()
    db = client.application.extensions["calib"].db
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {tokens.create(db, 'bench').token}"
    return client


def _run(client: FlaskClient, fits: list[dict[str, Any]]) -> tuple[str, float]:
    """Submit these fits as a batch and run its chunks here: its id, and the seconds they took."""
    svc = client.application.extensions["calib"]
    body = {"fits": fits, "defaults": {"epochs": 20, "input_scale": 0.1}}
    batch_id: str = client.post("/v1/batches", json=body).get_json()["id"]
    with svc.db.session() as session:
        chunks = session.scalars(sa.select(Fit.chunk_id).where(Fit.batch_id == batch_id).distinct()).all()
    start = time.perf_counter()
    for chunk in chunks:
        runner.run_chunk(svc.db, svc.settings, chunk, torch.device("cpu"))
    return batch_id, time.perf_counter() - start


def _close(client: FlaskClient) -> None:
    svc = client.application.extensions["calib"]
    svc.waits.close()
    svc.db.dispose()


def measure(settings: Settings, fits: int) -> dict[str, Any]:
    client = _client(settings)
    # Every other night the line moves by far more than its scatter: half the verdicts flag.
    batch_id, ran = _run(
        client,
        [
            {"t_u": U, "t_c": [0.5 * x - 17 + 0.3 * (i % 2) + 0.001 * (x % 3) for x in U], "instrument": "TT-1"}
            for i in range(fits)
        ],
    )
    batch = client.get(f"/v1/batches/{batch_id}").get_json()
    assert batch["counts"]["succeeded"] == fits, batch["counts"]
    figures = {
        "run": ran,
        "drifted": batch["drifted"],
        "batch": _median(client, f"/v1/batches/{batch_id}"),
        "page": _median(client, f"/ui/batches/{batch_id}"),
        "fits_csv": _median(client, f"/v1/batches/{batch_id}/fits?format=csv"),
        "instrument": _median(client, "/v1/instruments/TT-1"),
    }
    _close(client)
    return figures


def nights(settings: Settings, instruments: int, record: bool) -> float:
    """Seconds to run the second of two nights of `instruments` calibrations, each its own instrument."""
    client = _client(settings)
    stored = calibrations.record_drifts
    if not record:
        calibrations.record_drifts = lambda session, fit_ids: 0  # type: ignore[assignment]
    try:
        took = 0.0
        for night in range(2):
            line = [0.5 * x - 17 + 0.01 * night + 0.001 * (x % 3) for x in U]
            _, took = _run(client, [{"t_u": U, "t_c": line, "instrument": f"I{i}"} for i in range(instruments)])
    finally:
        calibrations.record_drifts = stored  # type: ignore[method-assign]
    _close(client)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--embedded-only", action="store_true")
    parser.add_argument("--fits", type=int, default=FITS)
    parser.add_argument("--instruments", type=int, default=10_000)
    args = parser.parse_args()
    runs = {}
    written: dict[str, dict[bool, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        backends = ["embedded"] + ([] if args.embedded_only else ["postgres"])
        for name in backends:
            written[name] = {}
            for case, record in (("reads", None), ("with", True), ("without", False)):
                with ExitStack() as stack:
                    settings = Settings(data_dir=Path(tmp) / f"{name}-{case}")
                    if name == "postgres":
                        redis.Redis.from_url(REDIS_URL).flushdb()
                        url = stack.enter_context(fresh_postgres())
                        settings = Settings(data_dir=settings.data_dir, database_url=url, broker_url=REDIS_URL)
                    if record is None:
                        runs[name] = measure(settings, args.fits)
                    else:
                        written[name][record] = nights(settings, args.instruments, record)
    for name, figures in runs.items():
        print(f"{name}: {args.fits} fits of one instrument, run in-process in {figures['run']:.1f} s")
        print(f"  drifted (calibrations flagged): {figures['drifted']}")
        for read in ("batch", "page", "fits_csv", "instrument"):
            took, size = figures[read]
            print(f"  {read:10s} median {took * 1000:8.1f} ms  {size:>9,d} bytes")
        with_, without = written[name][True], written[name][False]
        print(
            f"  second night of {args.instruments:,d} instruments: {with_:.2f} s with verdicts stored, "
            f"{without:.2f} s without ({with_ / without:.2f}x)"
        )


if __name__ == "__main__":
    main()
