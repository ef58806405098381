"""The API and workers through PgBouncer in transaction mode (`calib stack --pooler`): single fits
waited for, a CSV batch written by COPY, a cancel, an idempotent replay, losses read back; every
transaction goes through the pooler, no statement is prepared on the server, and migrations reach
PostgreSQL directly. (CALIB_TEST_POOLER=1 runs every PostgreSQL e2e test through it.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from services.cli import pooler
from tests.e2e.stacks import T_C, T_U, running

pytestmark = pytest.mark.e2e

FIT = {"t_u": T_U, "t_c": T_C, "epochs": 2000, "learning_rate": 1e-2, "input_scale": 0.1}
CLIENTS = 20


def _admin(url: str) -> psycopg.Connection:
    """PgBouncer's admin console (SHOW STATS, SHOW POOLS)."""
    parts = sa.make_url(url)
    return psycopg.connect(
        host=parts.host,
        port=parts.port,
        user=parts.username,
        dbname="pgbouncer",
        autocommit=True,
        prepare_threshold=None,
    )


def _show(url: str, what: str) -> list[dict[str, object]]:
    """PgBouncer's `SHOW <what>`, the rows of this stack's database."""
    with _admin(url) as admin:
        cursor = admin.execute(f"SHOW {what}")
        columns = [c.name for c in cursor.description or []]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    return [row for row in rows if row["database"] == sa.make_url(url).database]


def _stats(url: str) -> dict[str, int]:
    rows = _show(url, "STATS")
    return {
        "transactions": sum(int(str(r["total_xact_count"])) for r in rows),
        "queries": sum(int(str(r["total_query_count"])) for r in rows),
    }


def _server_connections(url: str) -> int:
    return sum(int(str(r["sv_active"])) + int(str(r["sv_idle"])) + int(str(r["sv_used"])) for r in _show(url, "POOLS"))


def test_the_service_runs_through_pgbouncer_in_transaction_mode(tmp_path: Path) -> None:
    with running("pooled", tmp_path, api_processes=2, workers=2, CALIB_RATE_LIMIT="100000/second") as stack:
        pooled, direct = stack.env["CALIB_DATABASE_URL"], stack.env["CALIB_DIRECT_DATABASE_URL"]
        assert sa.make_url(pooled).port != sa.make_url(direct).port
        before = _stats(pooled)

        async def waiting_clients() -> list[dict[str, object]]:
            headers = {"Authorization": f"Bearer {stack.token}"}
            async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=120) as http:

                async def one(i: int) -> dict[str, object]:
                    fit = (await http.post("/v1/fits", json=FIT | {"labels": {"i": str(i)}})).json()
                    answer = await http.get(f"/v1/fits/{fit['id']}", params={"wait": 60})
                    return dict(answer.json())

                return await asyncio.gather(*(one(i) for i in range(CLIENTS)))

        ended = asyncio.run(waiting_clients())
        assert {fit["status"] for fit in ended} == {"succeeded"}
        first = str(ended[0]["id"])
        assert len(stack.losses(first)) == 2000

        # A CSV batch: its fits inserted and their losses written by COPY, through the pooler.
        rows = "".join(f"s{s},{u},{c}\n" for s in range(50) for u, c in zip(T_U, T_C, strict=True))
        r = stack.http.post(
            "/v1/batches?epochs=500&learning_rate=0.01&input_scale=0.1",
            content=b"series,t_u,t_c\n" + rows.encode(),
            headers={"Content-Type": "text/csv"},
        )
        assert r.status_code == 202, r.text
        batch = stack.wait_batch(r.json()["id"], timeout=120)
        assert batch["counts"]["succeeded"] == 50

        # An idempotent replay answers the same fit; a cancel ends a long one.
        key = {"Idempotency-Key": "pooled-1"}
        once = stack.submit(FIT | {"epochs": 1_000_000}, headers=key)
        replay = stack.http.post("/v1/fits", json=FIT | {"epochs": 1_000_000}, headers=key)
        assert replay.status_code == 200 and replay.json()["id"] == once["id"]
        assert stack.http.post(f"/v1/fits/{once['id']}/cancel").status_code == 202
        assert stack.wait(once["id"])["status"] == "cancelled"

        after = _stats(pooled)
        assert after["transactions"] - before["transactions"] > 100
        # However many clients, the server connections stay within the pool.
        assert _server_connections(pooled) <= int(pooler.SETTINGS["default_pool_size"]) + int(
            pooler.SETTINGS["reserve_pool_size"]
        )
        # No statement was prepared on a server connection (psycopg would, at the fifth run of one,
        # and the next transaction on another server connection would not find it).
        for log in stack.logs.glob("*.log"):
            text = log.read_text(errors="replace")
            assert "prepared statement" not in text, log.name
            assert "DuplicatePreparedStatement" not in text and "InvalidSqlStatementName" not in text, log.name
