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
from shared.store.models import WebhookAttempt, WebhookDelivery
from tests.e2e.ledger import database, wait_until
from tests.e2e.stacks import T_C, T_U, running
from tests.receiver import receiving, trickling
from tests.stack import Stack

FIT = {"t_u": T_U, "t_c": T_C, "epochs": 2000, "input_scale": 0.1}
HOOKS = {
    "CALIB_WEBHOOK_ALLOWED_HOSTS": "http://127.0.0.1:*",
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
    # Two delivery workers: the one holding the delivery is killed, the other takes it over.
    with (
        running(kind, tmp_path, workers=1, deliveries=2, **HOOKS) as stack,
        receiving([], hold_first_seconds=20) as receiver,
    ):
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
        got = receiver.wait_for(2, 60)  # the lease (2 × timeout + 10 s) lapses; the other worker delivers
        assert json.loads(got[1].body) == stack.http.get(f"/v1/fits/{fit['id']}").json()
        assert got[0].body == got[1].body and got[1].at - killed_at < 45
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


@pytest.mark.parametrize("kind", ["embedded", "postgres"])
def test_receivers_that_trickle_stall_no_fit_and_no_other_delivery(kind: str, tmp_path: Path) -> None:
    """4 fits call back to a receiver that answers a byte every 0.5 s for a minute; 30 fits of
    another tenant submitted after them, 10 of them with a callback to a good receiver, run at once
    and their deliveries arrive; every attempt to the trickler ends at its 2 s deadline and is retried
    later."""
    hooks = {**HOOKS, "CALIB_WEBHOOK_TIMEOUT_SECONDS": "2", "CALIB_WEBHOOK_CONCURRENCY": "4"}
    with (
        running(kind, tmp_path, workers=1, **hooks) as stack,
        trickling(every=0.5, for_seconds=60) as trickler,
        receiving([]) as receiver,
    ):
        slow = [stack.submit({**FIT, "callback_url": trickler.url})["id"] for _ in range(4)]
        for fit_id in slow:
            stack.wait(fit_id)
        deadline = time.monotonic() + 20
        # Three attempts at least: after three failures in a row the trickler's circuit opens, and a
        # delivery claimed after that is put off without an attempt.
        while len(trickler.connections) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(trickler.connections) >= 3, "the trickler's deliveries never started"
        token = stack.create_token("other")  # the same stack, as another tenant
        headers = {"Authorization": f"Bearer {token}"}
        started = time.monotonic()
        ids = [
            stack.http.post(
                "/v1/fits", json={**FIT, **({"callback_url": receiver.url} if i < 10 else {})}, headers=headers
            ).json()["id"]
            for i in range(30)
        ]
        for fit_id in ids:
            done = stack.http.get(f"/v1/fits/{fit_id}?wait=30", headers=headers).json()
            assert done["status"] == "succeeded", done
        all_done = time.monotonic() - started
        receiver.wait_for(10, 30)
        delivered = time.monotonic() - started
        time.sleep(3)
        durations = _attempt_seconds(stack, slow)
        pending = _pending(stack, slow)
    # The 30 fits ran in seconds, and the good receiver got its 10 deliveries, while the trickler's
    # attempts were cut at their deadline and put off for a retry (its circuit open after 3
    # failures: the next attempts wait 30 s, not made one after another meanwhile).
    assert all_done < 20 and delivered < 30, (all_done, delivered)
    assert len(durations) >= 3 and max(durations) < 2 + 1.0, durations
    assert pending == 4, "each of the trickler's deliveries waits for a later attempt"
    print(f"30 fits in {all_done:.2f} s; 10 deliveries by {delivered:.2f} s; trickler attempts {durations}")


def _attempt_seconds(stack: Stack, fit_ids: list[str]) -> list[float]:
    db = database(stack.env)
    with db.session() as session:
        seconds = session.scalars(
            sa.select(WebhookAttempt.seconds)
            .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
            .where(WebhookDelivery.subject_id.in_(fit_ids), WebhookAttempt.seconds.is_not(None))
        ).all()
    db.dispose()
    return [float(s) for s in seconds]


def _pending(stack: Stack, fit_ids: list[str]) -> int:
    db = database(stack.env)
    with db.session() as session:
        count = session.scalar(
            sa.select(sa.func.count())
            .select_from(WebhookDelivery)
            .where(
                WebhookDelivery.subject_id.in_(fit_ids),
                WebhookDelivery.next_attempt_at.is_not(None),
                WebhookDelivery.delivered_at.is_(None),
                WebhookDelivery.gave_up_at.is_(None),
            )
        )
    db.dispose()
    return int(count or 0)
