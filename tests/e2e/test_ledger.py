"""The ledger test: clients submit for a fixed time while a nemesis kills workers with SIGKILL
and restarts Redis; then a checker compares every accepted id with the database.

PostgreSQL + a Redis of the test's own. Bounded: 20 s of load, then at most 120 s to drain.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.e2e.ledger import all_terminal, audit, database, wait_until
from tests.e2e.stacks import noisy_fits, running
from tests.servers import RedisServer

LOAD_SECONDS = 20


def test_nothing_accepted_is_lost_or_run_twice_under_a_nemesis(own_redis: RedisServer, tmp_path: Path) -> None:
    with running(
        "postgres",
        tmp_path,
        workers=2,
        redis_url=own_redis.url,
        CALIB_CHUNK_SIZE="20",
        CALIB_LOSS_BLOCK_EPOCHS="500",
        CALIB_FAILPOINTS="checkpoint_sleep=0.02",
    ) as stack:
        accepted: list[str] = []
        answers: Counter[str] = Counter()
        stop = threading.Event()
        lock = threading.Lock()

        def client(seed: int) -> None:
            rng = random.Random(seed)
            with httpx.Client(
                base_url=stack.url, timeout=30, headers={"Authorization": f"Bearer {stack.token}"}
            ) as http:
                while not stop.is_set():
                    fits = noisy_fits(rng.choice([1, 1, 1, 5, 10]), 2000, seed=rng.randrange(10**6))
                    try:
                        if len(fits) == 1:
                            r = http.post("/v1/fits", json=fits[0])
                            ids = [r.json()["id"]] if r.status_code == 202 else []
                        else:
                            r = http.post("/v1/batches", json={"fits": fits})
                            ids = (
                                []
                                if r.status_code != 202
                                else [
                                    f["id"]
                                    for f in http.get(f"/v1/batches/{r.json()['id']}/fits?limit=100").json()["items"]
                                ]
                            )
                        outcome = str(r.status_code)
                    except httpx.TransportError as exc:
                        ids, outcome = [], type(exc).__name__
                    with lock:
                        accepted.extend(ids)
                        answers[outcome] += 1
                    time.sleep(0.1)

        events: list[str] = []

        def nemesis() -> None:
            rng = random.Random(7)
            round_ = 0
            while not stop.wait(3.0):
                round_ += 1
                if round_ == 3:
                    own_redis.restart()
                    events.append("redis restarted")
                    continue
                alive = [c for c in stack.children[1:] if c.poll() is None]
                victim = rng.choice(alive)
                os.killpg(victim.pid, signal.SIGKILL)
                stack.add_worker()
                events.append(f"worker {victim.pid} killed")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
        threads.append(threading.Thread(target=nemesis))
        for t in threads:
            t.start()
        time.sleep(LOAD_SECONDS)
        stop.set()
        for t in threads:
            t.join(60)

        db = database(stack.env)
        try:
            wait_until(all_terminal(db, accepted), 120, "every accepted fit ends", every=1.0)
        finally:
            result = audit(db, accepted)
            print(
                f"\nledger: {len(accepted)} accepted, answers {dict(answers)}, nemesis {events}, "
                f"statuses {result.statuses}, attempts {result.attempts}, lost {len(result.lost)}, "
                f"duplicated {len(result.duplicated)}, not terminal {len(result.not_terminal)}"
            )
        assert len(accepted) > 100 and len(events) >= 5
        assert result.lost == [] and result.duplicated == [] and result.not_terminal == []
        assert set(result.statuses) <= {"succeeded", "failed"}
        assert answers.keys() <= {"202", "503"}, answers  # refusals only while Redis was down
        db.dispose()
