"""Running a submitted fit's chunk in the test's own process: the worker's runner on the app's
database, no Celery (for tests that need a result but not the processes)."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
import torch
from flask.testing import FlaskClient

from services.worker import runner
from shared.store import loss_blocks
from shared.store.models import Fit, LossBlock


def run_fit(client: FlaskClient, fit_id: str) -> int:
    """Run the chunk of `fit_id` to its end (or its first time slice); how many fits it claimed."""
    svc = client.application.extensions["calib"]
    with svc.db.session() as session:
        chunk_id = session.scalar(sa.select(Fit.chunk_id).where(Fit.id == fit_id))
    return runner.run_chunk(svc.db, svc.settings, chunk_id, torch.device("cpu")).claimed


def run_batch(client: FlaskClient, batch_id: str) -> int:
    """Run every chunk of the batch to its end in this process; how many fits were claimed."""
    svc = client.application.extensions["calib"]
    with svc.db.session() as session:
        chunks = session.scalars(sa.select(Fit.chunk_id).where(Fit.batch_id == batch_id).distinct()).all()
    return sum(runner.run_chunk(svc.db, svc.settings, chunk, torch.device("cpu")).claimed for chunk in chunks)


def succeeded(client: FlaskClient, body: dict[str, Any]) -> dict[str, Any]:
    """Submit `body` as a fit, run it here, and return its body once it has succeeded."""
    created = client.post("/v1/fits", json=body)
    assert created.status_code == 202, created.get_json()
    fit_id = created.get_json()["id"]
    run_fit(client, fit_id)
    done: dict[str, Any] = client.get(f"/v1/fits/{fit_id}").get_json()
    assert done["status"] == "succeeded", done
    return done


def stored_bytes(client: FlaskClient, fit_id: str | None = None) -> int:
    """The bytes of `fit_id`'s loss blocks (of every block, without one) as the database holds them:
    what the tenants' counts and retention count. Packed losses are compressed where that is
    shorter, so not 4 an epoch."""
    query = sa.select(sa.func.coalesce(sa.func.sum(loss_blocks.STORED_BYTES), 0))
    if fit_id is not None:
        query = query.where(LossBlock.fit_id == fit_id)
    with client.application.extensions["calib"].db.session() as session:
        return int(session.scalar(query) or 0)


def stored_fits(client: FlaskClient, batch_id: str) -> list[tuple[Any, ...]]:
    """A batch's fits as stored (instrument, labels, t_u, t_c), in a stable order: what the readers'
    fuzzers compare with the reader of earlier versions."""
    found = []
    for fit in client.get(f"/v1/batches/{batch_id}/fits?limit=500").get_json()["items"]:
        data = client.get(f"/v1/fits/{fit['id']}/data").get_json()
        found.append((fit["instrument"], fit["labels"], data["t_u"], data["t_c"]))
    return sorted(found, key=json.dumps)


def answered_problem(answer: Any) -> tuple[int, dict[str, Any]]:
    """An answer's status and problem as the reader of earlier versions gives a refusal
    (tests/earlier_batch_reader.read): its detail and every error's location."""
    problem = answer.get_json()
    return answer.status_code, {"detail": problem.get("detail"), "errors": problem.get("errors")}


def assert_answers_as(client: FlaskClient, answer: Any, expected: tuple[Any, ...]) -> None:
    """A batch's answer is the reader of earlier versions' `expected`: the same problem, or 202 and
    the same fits stored."""
    if expected[0] == "refused":
        assert answered_problem(answer) == expected[1:]
        return
    assert answer.status_code == 202, answer.get_data(as_text=True)
    assert stored_fits(client, answer.get_json()["id"]) == sorted(expected[1], key=json.dumps)
