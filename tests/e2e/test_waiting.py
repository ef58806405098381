"""Waiting requests against the real API processes: many open at once hold no request thread
(PostgreSQL: gevent; embedded: its threads), and all answer as soon as a worker ends the fit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.ledger import wait_until
from tests.e2e.stacks import T_C, T_U, running

pytestmark = pytest.mark.e2e

FIT = {"t_u": T_U, "t_c": T_C, "epochs": 5000, "learning_rate": 1e-2, "input_scale": 0.1}
# The embedded API has 2 processes x 16 threads, each taking no more connections than it has threads:
# however unevenly 30 waits land, a thread is free somewhere to answer the others (with more
# connections than threads, 30 waits kept a POST behind them for 57 s in one run of three).
WAITS = {"postgres": 300, "embedded": 30}
WAITING = ("calib_waiting_requests", ())


@pytest.mark.parametrize("kind", ["embedded", "postgres"])
def test_many_waits_stay_open_cheaply_and_all_answer_when_the_fit_ends(kind: str, tmp_path: Path) -> None:
    # One tenant's waits, as many as the process model allows: the slots per tenant are opened up
    # (test_one_tenant_cannot_take_every_slot checks the defaults).
    room = {"CALIB_MAX_WAITS_PER_TENANT": "1000", "CALIB_MAX_WAITS": "1000"}
    with running(kind, tmp_path, api_processes=2, workers=0, CALIB_RATE_LIMIT="100000/second", **room) as stack:

        async def scenario() -> None:
            limits = httpx.Limits(max_connections=WAITS[kind] + 10)
            headers = {"Authorization": f"Bearer {stack.token}"}
            async with httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=90, limits=limits) as http:
                fit = (await http.post("/v1/fits", json=FIT)).json()
                waits = [
                    asyncio.create_task(http.get(f"/v1/fits/{fit['id']}", params={"wait": 60}))
                    for _ in range(WAITS[kind])
                ]
                # Every wait open (the API's own count), not a guess at how long 300 take to arrive:
                # on a loaded machine the last ones were still being read after 3 s, and the POST
                # below queued behind them. No worker runs, so the fit stays queued.
                await asyncio.to_thread(
                    wait_until, lambda: stack.metrics()[WAITING] == WAITS[kind], 60, "every wait is open"
                )
                assert not any(wait.done() for wait in waits)
                # Meanwhile the API answers everyone else at once.
                started = time.monotonic()
                other = await http.post("/v1/fits", json=FIT)
                health = await http.get("/healthz")
                assert other.status_code == 202 and health.status_code == 200
                print(f"[{kind}] others answered in {time.monotonic() - started:.2f} s")  # (-s)
                assert time.monotonic() - started < 2.0
                # A worker starts and runs the fit (and the other, coalesced): every wait answers.
                await asyncio.to_thread(stack.add_worker)
                answers = await asyncio.gather(*waits)
                assert {answer.status_code for answer in answers} == {200}
                assert {answer.json()["status"] for answer in answers} == {"succeeded"}
                assert stack.metrics()[WAITING] == 0  # each counted out as it answered

        asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["embedded", "postgres"])
def test_one_tenant_cannot_take_every_slot(kind: str, tmp_path: Path) -> None:
    """A tenant opening more waits than its slots (8 per API process on the embedded default, 200 on
    PostgreSQL; 2 processes) gets the rest answered at once with the state now; another tenant's
    waits are still held, and its POST answered at once."""
    per_tenant = {"embedded": 8, "postgres": 200}[kind]
    with running(kind, tmp_path, api_processes=2, workers=0, CALIB_RATE_LIMIT="100000/second") as stack:
        other_token = stack.create_token("patient")

        async def scenario() -> None:
            many = 2 * per_tenant + 10
            limits = httpx.Limits(max_connections=many + 10)
            async with httpx.AsyncClient(base_url=stack.url, timeout=90, limits=limits) as http:
                mine = {"Authorization": f"Bearer {stack.token}"}
                theirs = {"Authorization": f"Bearer {other_token}"}
                fit = (await http.post("/v1/fits", json=FIT, headers=mine)).json()
                other = (await http.post("/v1/fits", json=FIT, headers=theirs)).json()
                hog = [
                    asyncio.create_task(http.get(f"/v1/fits/{fit['id']}", params={"wait": 30}, headers=mine))
                    for _ in range(many)
                ]
                # At most its slots in the two processes are held; the rest come back, queued. Under a
                # loaded machine hundreds of requests take a few seconds to arrive: up to 20 s (the
                # held ones wait 30 s, so any held past the slots would keep the count short).
                deadline = time.monotonic() + 20
                answered = [wait for wait in hog if wait.done()]
                while len(answered) < many - 2 * per_tenant and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    answered = [wait for wait in hog if wait.done()]
                assert len(answered) >= many - 2 * per_tenant
                assert {(await wait).json()["status"] for wait in answered} == {"queued"}
                # And every one not answered held (the API's count), before the other tenant is timed.
                await asyncio.to_thread(
                    wait_until,
                    lambda: stack.metrics()[WAITING] == sum(not wait.done() for wait in hog),
                    60,
                    "every wait not answered is held",
                )
                started = time.monotonic()
                patient = asyncio.create_task(http.get(f"/v1/fits/{other['id']}", params={"wait": 30}, headers=theirs))
                posted = await http.post("/v1/fits", json=FIT, headers=theirs)
                assert posted.status_code == 202 and time.monotonic() - started < 2.0
                await asyncio.sleep(1)
                assert not patient.done()  # the other tenant's wait is held
                await asyncio.to_thread(stack.add_worker)
                assert (await patient).json()["status"] == "succeeded"
                await asyncio.gather(*hog)

        asyncio.run(scenario())
