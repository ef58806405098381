"""Admission by memory (services/api/memory.py): requests parsing bodies share each API process's
budget; past it one waits, then gets 503 naming the budget; one alone is admitted whatever its size."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from services.api.memory import FIT_BYTES, POINT_BYTES, ParseBudget
from services.api.problems import Problem


def test_a_request_past_the_budget_waits_then_gets_503_naming_it() -> None:
    budget = ParseBudget(1000)
    inside, leave = threading.Event(), threading.Event()

    def holder() -> None:
        with budget.hold(600):
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert inside.wait(5)
    with budget.hold(300):  # room left: at once
        assert budget.used == 900
    started = time.monotonic()
    with pytest.raises(Problem) as refused, budget.hold(600):
        pass
    assert time.monotonic() - started >= 1.9  # it waited for room first
    problem = refused.value
    assert problem.status == 503 and problem.retry_after and problem.extra["quota"] == "parse_memory_bytes"
    leave.set()
    thread.join()
    assert budget.used == 0
    with budget.hold(5000) as alone:  # larger than the whole budget, but alone: admitted
        assert alone.held == 5000
    assert budget.used == 0


def test_a_waiting_request_gets_in_when_room_is_made() -> None:
    budget = ParseBudget(1000)
    held = budget.hold(800)
    held.__enter__()
    release = threading.Timer(0.5, held.__exit__, (None, None, None))
    release.start()
    with budget.hold(500) as second:  # waits about half a second, then fits
        assert second.held == 500
    assert budget.used == 0


def test_the_api_refuses_past_its_budget_and_says_so(make_client: Callable[..., FlaskClient]) -> None:
    # A batch's share grows with what it has read: this one's 60 points and 1 fit.
    needs = 60 * POINT_BYTES + FIT_BYTES
    client = make_client(parse_memory_bytes=needs + 1000)
    budget = client.application.extensions["calib"].parse_budget
    with budget.hold(2000):  # another request parsing meanwhile
        body = {"fits": [{"t_u": [1.0, 2.0, 3.0] * 20, "t_c": [2.0, 3.0, 5.0] * 20}]}
        refused = client.post("/v1/batches", json=body)
        assert refused.status_code == 503 and refused.get_json()["quota"] == "parse_memory_bytes"
        assert int(refused.headers["Retry-After"]) > 0
    assert client.post("/v1/batches", json=body).status_code == 202  # alone: admitted


def test_apply_has_its_share_of_the_budget_and_a_bounded_survey(make_client: Callable[..., FlaskClient]) -> None:
    from services.api.applying import HELD_BYTES

    client = make_client(parse_memory_bytes=HELD_BYTES + 1000, max_fits_per_batch=3)
    budget = client.application.extensions["calib"].parse_budget
    readings = "instrument,t_u\n" + "".join(f"I{i},1.5\n" for i in range(5))
    with budget.hold(2000):  # another request parsing meanwhile: no room for an apply's share
        refused = client.post("/v1/apply", data=readings, content_type="text/csv")
        assert refused.status_code == 503 and refused.get_json()["quota"] == "parse_memory_bytes"
    # Alone it is admitted, and refused for naming more instruments than a batch may calibrate.
    many = client.post("/v1/apply", data=readings, content_type="text/csv")
    assert many.status_code == 413 and many.get_json()["errors"] == [
        {"loc": ["instrument"], "msg": "too many instruments"}
    ]
    assert budget.used == 0


def test_the_oldest_request_goes_on_so_growing_shares_never_all_wait() -> None:
    """Shares grow as bodies are read: two requests each past the budget would wait for each other
    and both get a 503. The older one goes on; only the newer waits."""
    budget = ParseBudget(1000)
    with budget.hold(0) as older, budget.hold(0) as newer:
        newer.grow(600)
        started = time.monotonic()
        older.grow(600)  # past the budget, but no request older than it: at once
        assert time.monotonic() - started < 0.5 and budget.used == 1200
        with pytest.raises(Problem) as refused:
            newer.grow(900)  # past it, with an older request parsing: waits, then 503
        assert refused.value.status == 503
    assert budget.used == 0
