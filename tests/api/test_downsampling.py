"""GET /v1/fits/{id}/losses?points=N: at most N buckets, deterministic, covering every epoch of
the range, each with the min, max and last loss (spikes and divergence kept, not sampled away);
and the same range (start, end) of the series as CSV."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
import sqlalchemy as sa

from shared.domain.packing import F32
from shared.store.models import Fit, LossBlock

GOOD: dict[str, Any] = {"t_u": [35.7, 55.9, 58.2], "t_c": [0.5, 14.0, 15.0]}


def fit_with_losses(client: Any, losses: np.ndarray, block: int = 65_536) -> str:
    """A fit whose stored losses are `losses`, written as the worker writes them."""
    fit_id = client.post("/v1/fits", json=GOOD).get_json()["id"]
    db = client.application.extensions["calib"].db
    with db.session(write=True) as session:
        session.execute(
            sa.insert(LossBlock),
            [
                {
                    "fit_id": fit_id,
                    "first_epoch": first + 1,
                    "count": len(part),
                    "loss": np.ascontiguousarray(part, dtype=F32).tobytes(),
                }
                for first in range(0, len(losses), block)
                for part in [losses[first : first + block]]
            ],
        )
        session.execute(sa.update(Fit).where(Fit.id == fit_id).values(status="succeeded", epochs_done=len(losses)))
    return str(fit_id)


def test_a_million_epochs_in_500_buckets_keep_the_envelope(client: Any) -> None:
    rng = np.random.default_rng(0)
    losses = (100 / np.arange(1, 1_000_001) + rng.uniform(0, 0.01, 1_000_000)).astype(F32)
    losses[777_777] = 1e6  # one spike, which striding or random sampling would likely miss
    fit_id = fit_with_losses(client, losses)
    body = client.get(f"/v1/fits/{fit_id}/losses?points=500").get_json()
    buckets = body["buckets"]
    assert len(buckets) == 500 and body["epochs_done"] == 1_000_000
    assert buckets[0]["first_epoch"] == 1 and buckets[-1]["last_epoch"] == 1_000_000
    assert all(a["last_epoch"] + 1 == b["first_epoch"] for a, b in pairwise(buckets))  # no gaps
    for bucket in buckets:
        part = losses[bucket["first_epoch"] - 1 : bucket["last_epoch"]]
        assert bucket["min"] == float(part.min()) and bucket["max"] == float(part.max())
        assert bucket["last"] == float(part[-1])
    assert max(b["max"] for b in buckets) == 1e6
    assert client.get(f"/v1/fits/{fit_id}/losses?points=500").get_json() == body  # deterministic


def test_a_range_and_fewer_epochs_than_points(client: Any) -> None:
    losses = np.arange(1, 101, dtype=F32)
    fit_id = fit_with_losses(client, losses, block=30)
    ranged = client.get(f"/v1/fits/{fit_id}/losses?points=4&start=11&end=30").get_json()
    assert [(b["first_epoch"], b["last_epoch"], b["min"], b["max"], b["last"]) for b in ranged["buckets"]] == [
        (11, 15, 11.0, 15.0, 15.0),
        (16, 20, 16.0, 20.0, 20.0),
        (21, 25, 21.0, 25.0, 25.0),
        (26, 30, 26.0, 30.0, 30.0),
    ]
    every = client.get(f"/v1/fits/{fit_id}/losses?points=1000").get_json()["buckets"]
    assert len(every) == 100 and all(b["first_epoch"] == b["last_epoch"] for b in every)
    bad = client.get(f"/v1/fits/{fit_id}/losses?points=0")
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["loc"] == ["query", "points"]
    queued = client.post("/v1/fits", json=GOOD).get_json()["id"]
    assert client.get(f"/v1/fits/{queued}/losses?points=10").get_json()["buckets"] == []


def test_a_range_of_the_series_as_csv(client: Any) -> None:
    # ?format=csv streamed the whole series whatever start and end asked (a query for epochs 11 to 30
    # got all 100); now they bound it, as they bound the buckets. `limit` and `points` shape JSON only.
    fit_id = fit_with_losses(client, np.arange(1, 101, dtype=F32), block=30)

    def rows(query: str, **headers: str) -> list[tuple[int, float]]:
        answer = client.get(f"/v1/fits/{fit_id}/losses?{query}", headers=headers)
        assert answer.status_code == 200 and answer.mimetype == "text/csv", answer.get_data(as_text=True)
        lines = answer.get_data(as_text=True).splitlines()
        assert lines[0] == "epoch,loss"
        return [(int(epoch), float(loss)) for epoch, loss in (line.split(",") for line in lines[1:])]

    assert rows("format=csv") == [(e, float(e)) for e in range(1, 101)]
    assert rows("format=csv&start=11&end=30") == [(e, float(e)) for e in range(11, 31)]
    assert rows("start=95", Accept="text/csv") == [(e, float(e)) for e in range(95, 101)]
    assert rows("format=csv&start=50&end=10") == [] and rows("format=csv&start=101") == []
    assert rows("format=csv&end=500&limit=5") == [(e, float(e)) for e in range(1, 101)]
    # points shapes JSON only: the CSV is every epoch of the range (a schema-valid query is not refused).
    assert rows("format=csv&points=4&start=11&end=30") == [(e, float(e)) for e in range(11, 31)]
