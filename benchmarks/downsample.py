"""A 1,000,000-epoch loss curve downsampled: `python -m benchmarks.downsample`.

Stores one fit's million losses as the worker does (float32 blocks of 65,536 epochs)
in a fresh SQLite database (and a fresh PostgreSQL database unless --embedded-only),
then times GET /v1/fits/{id}/losses?points=500 through the real Flask app (test
client, so no network): median of 20.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from benchmarks.databases import fresh_postgres
from migrations.apply import upgrade
from services.api import create_app
from shared.runtime.settings import Settings
from shared.store import tokens
from shared.store.models import Fit, LossBlock


def time_downsampling(settings: Settings, epochs: int = 1_000_000, repeats: int = 20) -> float:
    upgrade(settings)
    app = create_app(settings)
    db = app.extensions["calib"].db
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {tokens.create(db, 'bench').token}"
    fit_id = client.post("/v1/fits", json={"t_u": [1, 2], "t_c": [1, 2]}).get_json()["id"]
    losses = (100 / np.arange(1, epochs + 1)).astype(np.float32)
    with db.session(write=True) as session:
        session.execute(
            sa.insert(LossBlock),
            [
                {
                    "fit_id": fit_id,
                    "first_epoch": first + 1,
                    "count": len(losses[first : first + 65_536]),
                    "loss": losses[first : first + 65_536].tobytes(),
                }
                for first in range(0, epochs, 65_536)
            ],
        )
        session.execute(sa.update(Fit).where(Fit.id == fit_id).values(status="succeeded", epochs_done=epochs))
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        body = client.get(f"/v1/fits/{fit_id}/losses?points=500").get_json()
        times.append(time.perf_counter() - start)
    assert len(body["buckets"]) == 500
    db.dispose()
    return statistics.median(times[1:]) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--embedded-only", action="store_true")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        rows["embedded"] = time_downsampling(Settings(data_dir=Path(tmp)))
        if not args.embedded_only:
            with fresh_postgres() as url:
                rows["postgresql"] = time_downsampling(
                    Settings(data_dir=Path(tmp), database_url=url, broker_url="memory://")
                )
    for backend, ms in rows.items():
        print(f"{backend}: 1,000,000 epochs to 500 buckets, median of 20: {ms:.1f} ms")
    print(json.dumps({"benchmark": "downsample", "epochs": 1_000_000, "points": 500, "median_ms": rows}))


if __name__ == "__main__":
    main()
