"""Webhooks through the real API and workers, on both backends: a receiver on 127.0.0.1 that answers
500 twice and then 200 gets the batch's final body three times, each signed with the tenant's secret;
a worker killed while it delivers leaves a lease that lapses, and another worker delivers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from services.cli import processes
from shared.models import WebhookDelivery
from tests.e2e.ledger import database, wait_until
from tests.e2e.stacks import T_C, T_U, running
from tests.receiver import receiving
from tests.stack import Stack

FIT = {"t_u": T_U, "t_c": T_C, "epochs": 2000, "input_scale": 0.1}
HOOKS = {
    "CALIB_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    "CALIB_WEBHOOK_RETRY_SECONDS": "0.5",
    "CALIB_WEBHOOK_TIMEOUT_SECONDS": "3",
}


def _secret(stack: Stack) -> str:
    done = subprocess.run(
        processes.resolve(["calib", "webhooks", "secret", "--tenant", stack.tenant]),
        env=stack.env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


@pytest.mark.parametrize("kind", ["embedded", "postgres"])
def test_a_batch_webhook_is_retried_until_the_receiver_takes_it(kind: str, tmp_path: Path) -> None:
    with running(kind, tmp_path, workers=2, **HOOKS) as stack, receiving([500, 500, 200]) as receiver:
        r = stack.http.post("/v1/batches", json={"fits": [FIT] * 5, "callback_url": receiver.url})
        assert r.status_code == 202, r.text
        batch_id = r.json()["id"]
        ended = stack.wait_batch(batch_id)
        got = receiver.wait_for(3, 60)
        time.sleep(2)  # no fourth POST once a 2xx came back
        assert len(receiver.received) == 3
        secret = _secret(stack)
        assert all(one.signed_by(secret) for one in got)
        assert {one.body for one in got} == {got[0].body}
        assert json.loads(got[0].body) == stack.http.get(f"/v1/batches/{batch_id}").json() == ended
        # The first POST came soon after the batch ended; each retry at least the backoff later.
        assert got[1].at - got[0].at >= 0.5 and got[2].at - got[1].at >= 1.0
        listed = stack.http.get("/v1/webhooks/deliveries").json()["items"]
        assert [a["status_code"] for a in listed[0]["attempts"]] == [500, 500, 200]
        assert listed[0]["status"] == "delivered"


@pytest.mark.parametrize("kind", ["embedded", "postgres"])
def test_a_worker_killed_while_delivering_does_not_lose_the_delivery(kind: str, tmp_path: Path) -> None:
    # The receiver holds the first POST open; the test kills the worker making it.
    with running(kind, tmp_path, workers=2, **HOOKS) as stack, receiving([], hold_first_seconds=20) as receiver:
        fit = stack.submit({**FIT, "callback_url": receiver.url})
        stack.wait(fit["id"])
        assert receiver.arrived.wait(30), "the first delivery never started"
        db = database(stack.env)
        with db.session() as session:
            holder = session.scalar(sa.select(WebhookDelivery.leased_by).where(WebhookDelivery.subject_id == fit["id"]))
        assert holder is not None
        group = os.getpgid(int(holder.rsplit(":", 1)[1]))
        assert group in {c.pid for c in stack.children[1:]}
        os.killpg(group, signal.SIGKILL)
        killed_at = time.monotonic()
        got = receiver.wait_for(2, 60)  # the lease (timeout + 10 s) lapses; the other worker delivers
        assert json.loads(got[1].body) == stack.http.get(f"/v1/fits/{fit['id']}").json()
        assert got[0].body == got[1].body and got[1].at - killed_at < 40
        listed = wait_until(
            lambda: (
                (items := stack.http.get("/v1/webhooks/deliveries").json()["items"])[0]["status"] == "delivered"
                and items
            ),
            10,
            "the delivery is recorded as delivered",
        )
        # The killed attempt stays on record with no status; the second one has its 200.
        assert [a["status_code"] for a in listed[0]["attempts"]] == [None, 200]
        db.dispose()
