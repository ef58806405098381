"""Conformity decisions on instruments (API.md "Conformity decisions"), through the real app on both
backends: JCGM 106's example through an instrument's decision, each guard-band outcome reached by a
constructed calibration, simple acceptance, the error's uncertainty from the previous calibration's
covariance, the ?verdict= list and the refusals."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient

from tests.api.test_fits_api import problem
from tests.api.test_webhooks import ALLOWED, _deliver_until
from tests.in_process import succeeded
from tests.receiver import receiving

# An exact line t_c = t_u, started at its optimum: w = 1 and b = 0 exactly, and no covariance (two points).
EXACT = {"t_u": [0.0, 10.0], "t_c": [0.0, 10.0], "epochs": 10}

# As found against EXACT, an instrument reading 13.6 too low at every point, with u = 1.8.
AS_FOUND_13_6 = {"t_u": [0.0, 5.0, 10.0], "t_c": [13.6, 18.6, 23.6], "u_t_c": 1.8, "epochs": 10}


def _calibrate(client: FlaskClient, instrument: str, body: dict[str, Any]) -> dict[str, Any]:
    return succeeded(client, {**body, "instrument": instrument})


def _current(client: FlaskClient, instrument: str) -> dict[str, Any]:
    found: dict[str, Any] = client.get(f"/v1/instruments/{instrument}").get_json()
    return found


def test_jcgm_106s_example_through_an_instruments_decision(client: FlaskClient) -> None:
    _calibrate(client, "TT-106", EXACT)
    put = client.put(
        "/v1/instruments/TT-106", json={"limits": {"lower": 12.5, "upper": 16.3}, "decision_rule": "guard_band"}
    )
    assert put.status_code == 200 and put.get_json()["limits"] == {"lower": 12.5, "upper": 16.3}
    # As found, the instrument reads 13.6 too low at every point, with u = 1.8 (JCGM 106 7.3's example).
    _calibrate(client, "TT-106", AS_FOUND_13_6)
    body = _current(client, "TT-106")
    decision = body["current"]["decision"]
    assert [point["error"] for point in decision["points"]] == pytest.approx([13.6] * 3, abs=1e-12)
    assert [point["u"] for point in decision["points"]] == pytest.approx([1.8] * 3)
    assert round(decision["points"][0]["probability_of_conformity"], 4) == 0.6626
    # Inside the limits but within w = 2·1.8 of the lower one: a conditional pass (ILAC G8 guard band).
    assert decision["verdict"] == "conditional pass" and body["verdict"] == "conditional pass"
    # The same case under simple acceptance (the default rule) is a pass.
    _calibrate(client, "TT-106S", EXACT)
    client.put("/v1/instruments/TT-106S", json={"limits": {"lower": 12.5, "upper": 16.3}})
    _calibrate(client, "TT-106S", AS_FOUND_13_6)
    assert _current(client, "TT-106S")["verdict"] == "pass"


def test_each_guard_band_outcome_and_the_list_of_failures(client: FlaskClient) -> None:
    _calibrate(client, "TT-G", EXACT)
    client.put("/v1/instruments/TT-G", json={"limits": {"lower": -1.0, "upper": 1.0}, "decision_rule": "guard_band"})
    # u = 0.1 at each point, so w = 0.2: errors 0, 0.9, 1.1 and 2 land in each zone in turn.
    errors = [0.0, 0.9, 1.1, 2.0]
    t_u = [1.0, 2.0, 3.0, 4.0]
    _calibrate(client, "TT-G", {"t_u": t_u, "t_c": [u + e for u, e in zip(t_u, errors, strict=True)], "u_t_c": 0.1})
    decision = _current(client, "TT-G")["current"]["decision"]
    assert [point["verdict"] for point in decision["points"]] == [
        "pass",
        "conditional pass",
        "conditional fail",
        "fail",
    ]
    assert decision["verdict"] == "fail"
    _calibrate(client, "TT-P", EXACT)
    client.put("/v1/instruments/TT-P", json={"limits": {"lower": -1.0, "upper": 1.0}})
    _calibrate(client, "TT-P", {"t_u": t_u, "t_c": t_u, "u_t_c": 0.1})
    _calibrate(client, "TT-N", EXACT)  # no limits: no decision, in no verdict's list
    _calibrate(client, "TT-N", {"t_u": t_u, "t_c": t_u})
    assert _current(client, "TT-N")["current"]["decision"] is None
    failing = client.get("/v1/instruments?verdict=fail").get_json()["items"]
    assert [item["id"] for item in failing] == ["TT-G"]
    assert [item["id"] for item in client.get("/v1/instruments?verdict=pass").get_json()["items"]] == ["TT-P"]
    assert problem(client.get("/v1/instruments?verdict=maybe"), 422)["errors"][0]["loc"] == ["query", "verdict"]


def test_the_errors_uncertainty_includes_the_previous_calibrations(client: FlaskClient) -> None:
    first = _calibrate(
        client,
        "TT-U",
        {"t_u": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "t_c": [3.014, 5.225, 7.004, 9.061, 11.201, 12.762], "epochs": "auto"},
    )
    client.put("/v1/instruments/TT-U", json={"limits": {"lower": -0.5, "upper": 0.5}})
    second = _calibrate(client, "TT-U", {"t_u": [2.0, 4.0], "t_c": [5.1, 9.2], "epochs": "auto", "learning_rate": 0.02})
    r = first["result"]
    points = _current(client, "TT-U")["current"]["decision"]["points"]
    for point, t_c in zip(points, [5.1, 9.2], strict=True):
        t = point["t_u"]
        assert point["error"] == pytest.approx(t_c - (r["w_raw"] * t + r["b_raw"]), rel=1e-12)
        # The new fit has two points and no stated u: its residual SD is null, so u is the previous
        # calibration's alone, sqrt(φᵀVφ).
        variance = r["se_b"] ** 2 + t * t * r["se_w"] ** 2 + 2 * t * r["cov_wb"]
        assert second["result"]["residual_sd"] is None
        assert point["u"] == pytest.approx(np.sqrt(variance), rel=1e-12)


def test_limits_are_refused_by_name_where_they_cannot_judge(client: FlaskClient) -> None:
    _calibrate(client, "TT-R", EXACT)
    wrong = problem(client.put("/v1/instruments/TT-R", json={"limits": {"lower": 1.0, "upper": 1.0}}), 422)
    assert "must be greater than lower" in wrong["errors"][0]["msg"] and wrong["errors"][0]["loc"] == [
        "limits",
        "upper",
    ]
    for body in ({"decision_rule": "strict"}, {"coverage_factor": 0}, {"limits": {"lower": 0}}):
        problem(client.put("/v1/instruments/TT-R", json=body), 422)
    # Each field given is set, each left out stays; null clears limits.
    client.put("/v1/instruments/TT-R", json={"limits": {"lower": -1, "upper": 1}, "tolerance": 0.5})
    kept = client.put("/v1/instruments/TT-R", json={"coverage_factor": 3}).get_json()
    assert kept["limits"] == {"lower": -1.0, "upper": 1.0} and kept["tolerance"] == 0.5 and kept["coverage_factor"] == 3
    cleared = client.put("/v1/instruments/TT-R", json={"limits": None}).get_json()
    assert cleared["limits"] is None and cleared["tolerance"] == 0.5


def test_a_failing_verdict_is_sent_to_the_calibrations_callback(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client(**ALLOWED)
    with receiving([]) as receiver:
        _calibrate(client, "TT-W", EXACT)
        client.put("/v1/instruments/TT-W", json={"limits": {"lower": -1.0, "upper": 1.0}})
        fit = _calibrate(client, "TT-W", {"t_u": [1.0, 2.0], "t_c": [3.0, 4.0], "callback_url": receiver.url})
        passing = _calibrate(client, "TT-W", {"t_u": [1.0, 2.0], "t_c": [3.0, 4.0], "callback_url": receiver.url})
        _deliver_until(client, 3, receiver)
    events = {
        (r.headers["Calib-Event"], json.loads(r.body).get("fit_id") or json.loads(r.body)["id"])
        for r in receiver.received
    }
    # The first two end their fits; the failing one (2 above the line t_c = t_u) says so too; the last
    # one, which agrees with the calibration before it, does not.
    assert ("instrument.verdict", fit["id"]) in events and ("instrument.verdict", passing["id"]) not in events
    body = next(json.loads(r.body) for r in receiver.received if r.headers["Calib-Event"] == "instrument.verdict")
    assert (
        body["instrument"] == "TT-W" and body["verdict"] == "fail" and body["limits"] == {"lower": -1.0, "upper": 1.0}
    )
    assert [point["error"] for point in body["decision"]["points"]] == pytest.approx([2.0, 2.0])


def test_the_instrument_page_and_the_cli_show_the_verdicts(client: FlaskClient) -> None:
    from services.cli.tables import instrument_history

    _calibrate(client, "TT-V", EXACT)
    client.put("/v1/instruments/TT-V", json={"limits": {"lower": -1.0, "upper": 1.0}, "decision_rule": "guard_band"})
    _calibrate(client, "TT-V", {"t_u": [1.0, 2.0], "t_c": [1.9, 2.9], "u_t_c": 0.1})
    page = client.get("/ui/instruments/TT-V").get_data(as_text=True)
    assert 'id="conformity"' in page and "conditional pass" in page and "guard band w = 2·u" in page
    text = instrument_history(_current(client, "TT-V"))
    assert "limits [-1, 1] (guard band w = 2·u); as found: CONDITIONAL PASS" in text
    assert "conditional pass" in text.splitlines()[2]


def test_a_point_the_previous_calibration_gives_no_value_at_fails_and_is_served(client: FlaskClient) -> None:
    # A thermistor's calibration, then a line on readings it has no value at (ln of t_u ≤ 0): the
    # error and its probability were NaN, stored as null, and every read of the instrument (its
    # page, the list, GET) was a 500 serving null where a number was declared.
    r = np.array([1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 30000.0])
    ln = np.log(r)
    kelvin = 1 / (1.129e-3 + 2.341e-4 * ln + 8.775e-8 * ln**3)
    thermistor = {"t_u": r.tolist(), "t_c": (kelvin - 273.15).tolist(), "model": {"kind": "steinhart_hart"}}
    _calibrate(client, "TH-1", {**thermistor, "epochs": "auto", "learning_rate": "auto", "normalize": "standardize"})
    client.put("/v1/instruments/TH-1", json={"limits": {"lower": -1.0, "upper": 1.0}, "decision_rule": "guard_band"})
    _calibrate(client, "TH-1", {"t_u": [-1.0, 0.0, 2.0], "t_c": [1.0, 2.0, 3.1], "epochs": 10})
    body = _current(client, "TH-1")
    points = body["current"]["decision"]["points"]
    # At t_u = -1 the function has no value (ln of a negative); at 0 it is 0 K (its limit) but its
    # uncertainty is not a number: neither can be judged.
    assert (points[0]["error"], points[1]["error"], points[1]["u"]) == (None, pytest.approx(275.15), None)
    assert [(p["probability_of_conformity"], p["verdict"]) for p in points[:2]] == [(None, "fail")] * 2
    assert points[2]["error"] is not None and points[2]["probability_of_conformity"] is not None
    assert body["verdict"] == "fail" and body["current"]["decision"]["verdict"] == "fail"
    assert [i["id"] for i in client.get("/v1/instruments?verdict=fail").get_json()["items"]] == ["TH-1"]
    page = client.get("/ui/instruments/TH-1")
    assert page.status_code == 200 and "2 point(s) the previous calibration gives no value at" in page.get_data(True)
