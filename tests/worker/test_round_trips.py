"""What a chunk costs the database, counted on both backends: every statement is a round trip (and
a transaction two more, its BEGIN and COMMIT), so a single fit's chunk is held to two
transactions, its claim and its one write, with the counters, the tenant's turn and the look for
webhooks due folded into them; a fit's end asks about drift and webhooks only when it has an
instrument or a callback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
import torch
from flask.testing import FlaskClient

from services.worker import fairness, runner
from shared.runtime.settings import Settings
from shared.store import worker_metrics
from shared.store.db import Database
from shared.store.models import Fit, WebhookDelivery, new_id
from tests.servers import TcpProxy

SEED = {"t_u": [35.7, 55.9, 58.2, 81.9, 56.3], "t_c": [0.5, 14.0, 15.0, 28.0, 11.0], "epochs": 100, "input_scale": 0.1}


@dataclass
class Counted:
    transactions: int = 0
    statements: list[str] = field(default_factory=list)


@contextmanager
def counting(db: Database) -> Iterator[Counted]:
    counted = Counted()

    def statement(conn: object, cursor: object, text: str, *_: object) -> None:
        counted.statements.append(" ".join(text.split()))

    def begin(conn: object) -> None:
        counted.transactions += 1

    sa.event.listen(db.engine, "before_cursor_execute", statement)
    sa.event.listen(db.engine, "begin", begin)
    try:
        yield counted
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", statement)
        sa.event.remove(db.engine, "begin", begin)


def _run(client: FlaskClient, body: dict[str, object]) -> tuple[str, Counted]:
    svc = client.application.extensions["calib"]
    created = client.post("/v1/fits", json=body)
    assert created.status_code == 202, created.get_json()
    fit_id = created.get_json()["id"]
    with counting(svc.db) as counted:
        assert runner.run_chunk(svc.db, svc.settings, fit_id, torch.device("cpu")).claimed == 1
    return fit_id, counted


def _status(client: FlaskClient, fit_id: str) -> str:
    return str(client.get(f"/v1/fits/{fit_id}").get_json()["status"])


def test_a_single_fit_costs_two_transactions_and_ten_statements(client: FlaskClient) -> None:
    _run(client, SEED)  # the first chunk of a process compiles its statements and fills the pool
    fit_id, counted = _run(client, SEED)
    assert _status(client, fit_id) == "succeeded"
    # The claim (its fits come back from the UPDATE, the tenant's turn in the same transaction)
    # and the write (the fit's end, its losses, the chunk's counters, the look for webhooks due).
    assert counted.transactions == 2, counted.statements
    # SQLite reads the database's clock once more in the claim (its now() moves within a
    # transaction); its BEGIN IMMEDIATE is a statement of its own (PostgreSQL's BEGIN is psycopg's).
    sqlite = svc_db(client).engine.dialect.name == "sqlite"
    statements = [text for text in counted.statements if not text.startswith("BEGIN")]
    assert len(statements) <= 10 + sqlite, statements
    # No question about drift (no instrument) nor webhooks owed (no callback).
    assert not any("callback_url IS NOT NULL" in text or "AS calibration" in text for text in statements), statements
    names = dict(((name, label), value) for name, label, value in worker_metrics.read(svc_db(client)))
    assert names[(worker_metrics.FITS_FINISHED, "status=succeeded")] == 2
    assert names[(worker_metrics.CHUNK_SECONDS + "_count", "")] == 2


def test_a_fit_with_a_callback_still_owes_its_webhook(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client(webhook_allowed_hosts="https://hooks.example.com")
    fit_id, counted = _run(client, {**SEED, "callback_url": "https://hooks.example.com/calib"})
    assert _status(client, fit_id) == "succeeded"
    with svc_db(client).session() as session:
        owed = session.scalars(sa.select(WebhookDelivery.subject_id)).all()
    assert owed == [fit_id]
    assert counted.transactions == 2, counted.statements


def test_a_calibration_still_gets_its_drift_verdict(client: FlaskClient) -> None:
    first, _ = _run(client, {**SEED, "instrument": "probe-7"})
    second, counted = _run(client, {**SEED, "instrument": "probe-7"})
    assert _status(client, first) == _status(client, second) == "succeeded"
    current = client.get("/v1/instruments/probe-7").get_json()["current"]
    assert current["fit_id"] == second and current["drift"]["chi2"] is not None, current
    assert counted.transactions == 2, counted.statements


def svc_db(client: FlaskClient) -> Database:
    db: Database = client.application.extensions["calib"].db
    return db


def test_a_wake_ups_looks_for_a_chunk_are_one_round_trip_each(backend: Settings, client: FlaskClient) -> None:
    """The look for a fairer chunk when a message comes and the look for the next chunk to drain
    are reads of what is committed: no transaction, so no BEGIN and COMMIT around them (three round
    trips each before, counted at a proxy in front of PostgreSQL). With one tenant waiting, the
    look for a fairer chunk is one statement (its tenant, and whether any other waits: two before)."""
    if not backend.database_url:
        pytest.skip("round trips are PostgreSQL's: the embedded default's are calls in this process")
    url = sa.make_url(backend.database_url)
    proxy = TcpProxy(url.port or 5432)
    proxy.up()
    db = Database.from_settings(
        backend.model_copy(update={"database_url": url.set(port=proxy.port).render_as_string(False)})
    )
    try:
        assert fairness.next_chunk(db) is None  # the pool holds its connection now
        before = proxy.requests
        for _ in range(10):
            assert fairness.fairer_chunk(db, new_id()) is None  # nothing queued there: one read
            assert fairness.next_chunk(db) is None  # nothing queued at all: one read
        # One SELECT each, and once each the statement's preparation (psycopg prepares a statement
        # on its fifth run, a round trip of its own).
        assert proxy.requests - before <= 20 + 2, proxy.requests - before
        created = client.post("/v1/fits", json={"t_u": [1.0, 2.0, 3.0], "t_c": [2.0, 4.0, 6.0]})
        assert created.status_code == 202, created.get_json()
        with db.session() as session:
            chunk = session.scalar(sa.select(Fit.chunk_id).where(Fit.id == created.get_json()["id"]))
        before = proxy.requests
        for _ in range(10):
            assert fairness.fairer_chunk(db, chunk) is None  # its tenant alone waits: one read
        assert proxy.requests - before <= 10 + 1, proxy.requests - before
    finally:
        db.dispose()
        proxy.down()
