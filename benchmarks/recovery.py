"""Kill -9 a worker in the middle of a chunk, N times in a row, and time the recovery.

    python -m benchmarks.recovery [--runs 20] [--backend embedded|postgres]

Each run starts a fresh stack (2 workers, the fault tests' settings: 2 s leases, a reconciler
every 0.5 s), submits 20 fits of 2000 epochs as one batch (one chunk, written in blocks of 200
epochs 0.3 s apart), SIGKILLs the worker holding the chunk once a block is written, and times:
- reclaim: from the kill to the first fit of the chunk running again under another claim;
- recovery: from the kill to every fit of the chunk ended.
A run fails if any fit is lost, not succeeded, or has other than one loss series 1..epochs.
PostgreSQL + Redis: set CALIB_TEST_POSTGRES_URL and CALIB_TEST_REDIS_URL, as for the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import redis
import sqlalchemy as sa

from services.cli.demo import T_C, T_U  # the book's thermometer data, as the demo sends it
from shared.runtime.settings import Settings
from shared.store.db import Database
from shared.store.models import TERMINAL, Fit, LossBlock
from tests.stack import Stack

SETTINGS = {
    "CALIB_LEASE_SECONDS": "2",
    "CALIB_RECONCILE_EVERY_SECONDS": "0.5",
    "CALIB_UNDISPATCHED_AFTER_SECONDS": "1",
    "CALIB_REDISPATCH_AFTER_SECONDS": "3",
    "CALIB_FAILPOINTS": "checkpoint_sleep=0.3",
    "CALIB_LOSS_BLOCK_EPOCHS": "200",
}


def _until(check, timeout: float) -> object:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise TimeoutError


def one_run(backend: str, tmp: Path) -> dict[str, float]:
    env = {"CALIB_DATA_DIR": str(tmp / "data"), **SETTINGS}
    name = ""
    if backend == "postgres":
        server, broker = os.environ["CALIB_TEST_POSTGRES_URL"], os.environ["CALIB_TEST_REDIS_URL"]
        name = f"calib_bench_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        redis.Redis.from_url(broker).flushdb()
        env |= {
            "CALIB_DATABASE_URL": sa.make_url(server).set(database=name).render_as_string(hide_password=False),
            "CALIB_BROKER_URL": broker,
        }
    stack = Stack(env, tmp / "logs", workers=2).start()
    db = Database.from_settings(
        Settings(
            data_dir=env["CALIB_DATA_DIR"],
            database_url=env.get("CALIB_DATABASE_URL", ""),
            broker_url=env.get("CALIB_BROKER_URL", ""),
        )
    )
    try:
        rng = np.random.default_rng(0)
        fits = [
            {
                "t_u": T_U,
                "t_c": (np.asarray(T_C) + rng.normal(0, 0.3, 11)).round(4).tolist(),
                "epochs": 2000,
                "learning_rate": 1e-2,
                "input_scale": 0.1,
            }
            for _ in range(20)
        ]
        batch = stack.http.post("/v1/batches", json={"fits": fits}).json()
        with db.session() as session:
            ids = list(session.scalars(sa.select(Fit.id).where(Fit.batch_id == batch["id"])))

        def holder() -> str | None:
            with db.session() as session:
                return session.scalar(
                    sa.select(Fit.claimed_by).where(Fit.id.in_(ids), Fit.status == "running", Fit.epochs_done >= 200)
                )

        held = str(_until(holder, 60))
        os.killpg(os.getpgid(int(held.rsplit(":", 1)[1])), signal.SIGKILL)
        killed = time.monotonic()

        def reclaimed() -> bool:
            with db.session() as session:
                return bool(
                    session.scalar(
                        sa.select(sa.func.count()).select_from(Fit).where(Fit.id.in_(ids), Fit.claimed_by != held)
                    )
                )

        _until(reclaimed, 120)
        reclaim = time.monotonic() - killed

        def ended() -> bool:
            with db.session() as session:
                return not session.scalar(
                    sa.select(sa.func.count()).select_from(Fit).where(Fit.id.in_(ids), Fit.status.not_in(TERMINAL))
                )

        _until(ended, 120)
        recovery = time.monotonic() - killed
        with db.session() as session:
            statuses = set(session.scalars(sa.select(Fit.status).where(Fit.id.in_(ids))))
            series = session.execute(
                sa.select(LossBlock.fit_id, sa.func.sum(LossBlock.count))
                .where(LossBlock.fit_id.in_(ids))
                .group_by(LossBlock.fit_id)
            ).all()
        if statuses != {"succeeded"} or len(series) != 20 or {int(n) for _, n in series} != {2000}:
            raise AssertionError(f"run not clean: {statuses}, {len(series)} series")
        return {"reclaim": reclaim, "recovery": recovery}
    finally:
        stack.stop()
        db.dispose()
        if name:
            admin = sa.create_engine(os.environ["CALIB_TEST_POSTGRES_URL"], isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--backend", choices=["embedded", "postgres"], default="embedded")
    args = parser.parse_args()
    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_run(args.backend, Path(tmp)))
        print(
            f"run {i + 1}: reclaimed after {runs[-1]['reclaim']:.2f} s, all ended after {runs[-1]['recovery']:.2f} s",
            flush=True,
        )
    for key in ("reclaim", "recovery"):
        values = sorted(run[key] for run in runs)
        print(
            f"{key}: min {values[0]:.2f} s, median {statistics.median(values):.2f} s, "
            f"p90 {values[int(0.9 * (len(values) - 1))]:.2f} s, max {values[-1]:.2f} s"
        )
    print(
        json.dumps(
            {
                "benchmark": "recovery",
                "backend": args.backend,
                "runs": len(runs),
                "failures": 0,
                "reclaim_seconds": [round(r["reclaim"], 3) for r in runs],
                "recovery_seconds": [round(r["recovery"], 3) for r in runs],
            }
        )
    )


if __name__ == "__main__":
    main()
