"""What a request costs the database in round trips, counted at a proxy in front of PostgreSQL: the
token's lookup (every request) and a fit's read (every GET, and each wake-up of a wait) are one
statement each, sent without BEGIN and COMMIT, on a connection not pinged while it is in use."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from services.api import create_app
from shared.runtime.settings import Settings
from shared.store.db import Database
from tests.conftest import authorized
from tests.servers import TcpProxy

FIT = {"t_u": [35.7, 55.9, 58.2, 81.9, 56.3], "t_c": [0.5, 14.0, 15.0, 28.0, 11.0], "epochs": 100}


def test_a_fits_read_is_two_round_trips_with_its_token(backend: Settings) -> None:
    if not backend.database_url:
        pytest.skip("round trips are PostgreSQL's: the embedded default's are calls in this process")
    url = sa.make_url(backend.database_url)
    proxy = TcpProxy(url.port or 5432)
    proxy.up()
    app = create_app(backend.model_copy(update={"database_url": url.set(port=proxy.port).render_as_string(False)}))
    try:
        client = authorized(app, "tenant-a")
        fit_id = client.post("/v1/fits", json=FIT).get_json()["id"]
        assert client.get(f"/v1/fits/{fit_id}").status_code == 200  # the pool holds its connections now
        before = proxy.requests
        for _ in range(20):
            assert client.get(f"/v1/fits/{fit_id}").get_json()["status"] == "queued"
        # The token's SELECT and the fit's SELECT: 2 each (it was 8: a ping, BEGIN, SELECT and
        # COMMIT for each). A connection idle past a second is pinged first: the loop is faster.
        assert proxy.requests - before <= 20 * 2 + 2, proxy.requests - before
        # A connection idle longer is pinged before use, and a dead one replaced, not handed out.
        time.sleep(1.2)
        before = proxy.requests
        assert client.get(f"/v1/fits/{fit_id}").status_code == 200
        assert proxy.requests - before == 3  # the ping, then the two reads
    finally:
        app.extensions["calib"].waits.close()
        app.extensions["calib"].db.dispose()
        proxy.down()


def test_a_burst_of_requests_keeps_its_connections_for_the_next(backend: Settings) -> None:
    """A process that needed 20 connections at once keeps them: the next burst of the same size
    opens none (PostgreSQL forks a backend for each connection). With 10 kept and the rest opened
    and closed per burst, 50 waiting clients made an API process open about 30 a second."""
    if not backend.database_url:
        pytest.skip("a pool of PostgreSQL connections; the embedded default's are files in this process")
    db = Database.from_settings(backend)
    opened = 0

    @sa.event.listens_for(db.engine, "connect")
    def _opened(*_args: object) -> None:
        nonlocal opened
        opened += 1

    at_once = threading.Barrier(20)

    def read() -> None:
        with db.reading() as session:
            session.execute(sa.text("SELECT 1"))
            at_once.wait(timeout=30)  # every thread holds its connection here at the same time

    try:
        for burst in range(3):
            threads = [threading.Thread(target=read) for _ in range(20)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert opened == 20, (burst, opened)
    finally:
        db.dispose()


def test_a_submission_is_four_statements(backend: Settings) -> None:
    """POST /v1/fits on PostgreSQL: the token's lookup, then in one transaction the tenant's lock,
    its quotas, work in flight and stored bytes in one read, and the fit's INSERT. (The queue's
    counts, read by one request in two seconds per process, are left out.) The tenant's quotas and
    bytes took three reads, two of them of a row a new tenant does not have."""
    if not backend.database_url:
        pytest.skip("round trips are PostgreSQL's: the embedded default's are calls in this process")
    app = create_app(backend)
    statements: list[str] = []
    sa.event.listen(
        app.extensions["calib"].db.engine,
        "before_cursor_execute",
        lambda _conn, _cursor, statement, *_rest: statements.append(" ".join(statement.split())),
    )
    try:
        client = authorized(app, "tenant-a")
        for _ in range(3):
            statements.clear()
            assert client.post("/v1/fits", json=FIT).status_code == 202
            sent = [s for s in statements if "GROUP BY fits.status" not in s]
            assert [s.split(" ")[0] for s in sent] == ["SELECT", "SELECT", "SELECT", "INSERT"], sent
            assert "api_tokens" in sent[0] and "pg_advisory_xact_lock" in sent[1] and "tenants" in sent[2], sent
    finally:
        app.extensions["calib"].waits.close()
        app.extensions["calib"].db.dispose()


def test_a_submissions_insert_is_parsed_once_by_psycopg(backend: Settings) -> None:
    """The fit's INSERT binds at most 50 values: psycopg keeps the parsed form of a query of up to
    50 parameters and parses anew each time one of more (its MAX_CACHED_STATEMENT_PARAMS). The ORM's
    INSERT of a new Fit bound 70, split by a regex at every submission. The fit the POST answers
    with is the row inserted: the GET reads the same."""
    app = create_app(backend)
    bound: list[int] = []

    def inserted(_conn: object, _cursor: object, statement: str, parameters: object, *_rest: object) -> None:
        if statement.lstrip().startswith("INSERT INTO fits"):
            bound.append(len(parameters))  # type: ignore[arg-type]  # a mapping or a sequence

    sa.event.listen(app.extensions["calib"].db.engine, "before_cursor_execute", inserted)
    try:
        client = authorized(app, "tenant-a")
        answered = client.post("/v1/fits", json={**FIT, "instrument": "probe-7", "labels": {"bench": "3"}})
        assert answered.status_code == 202, answered.get_json()
        assert len(bound) == 1 and bound[0] <= 50, bound
        read = client.get(f"/v1/fits/{answered.get_json()['id']}").get_json()
        assert answered.get_json() == read
    finally:
        app.extensions["calib"].waits.close()
        app.extensions["calib"].db.dispose()
