"""Instruments whose calibrations are not lines (shared/design/API.md, "Models beyond a line"), on both
backends: drift on the parameter vector (χ² with as many degrees of freedom as parameters, checked
against scipy), as-found and as-left RMS in t_c units (against numpy on the readings), a change of
model that is no drift, conformity decisions on a quadratic, the instrument's body with each
calibration's parameters, and POST /v1/apply on a Callendar–Van Dusen instrument beside a line."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from scipy.special import chdtrc

from services.cli.tables import instrument_history
from tests.api.test_calibration_functions import IEC_A, PT100_R0, pt100
from tests.in_process import succeeded

CONVERGING = {"epochs": "auto", "learning_rate": "auto", "normalize": "standardize"}
QUADRATIC = {"kind": "polynomial", "degree": 2}
T_U = np.linspace(10.0, 90.0, 12)


def _quadratic_night(client: FlaskClient, name: str, seed: int, shift: float = 0.0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    t_c = 0.003 * T_U**2 + 0.2 * T_U - 5 + shift + rng.normal(0, 0.05, T_U.size)
    body = {"t_u": T_U.tolist(), "t_c": t_c.tolist(), "model": QUADRATIC, "instrument": name, **CONVERGING}
    return succeeded(client, body)


def _quadratic_of(fit: dict[str, Any]) -> np.ndarray:
    p = fit["result"]["parameters"]
    return np.array([p["a2"], p["a1"], p["a0"]])


def test_a_shifted_quadratic_instrument_is_flagged_by_chi2_on_three_parameters(client: FlaskClient) -> None:
    first = _quadratic_night(client, "Q-1", seed=1)
    steady = _quadratic_night(client, "Q-1", seed=2)
    shifted = _quadratic_night(client, "Q-1", seed=3, shift=0.5)
    history = {c["fit_id"]: c for c in client.get("/v1/instruments/Q-1").get_json()["history"]}
    for before, after in ((first, steady), (steady, shifted)):
        found = history[after["id"]]
        assert found["model"] == QUADRATIC
        assert found["w_raw"] is None and set(found["parameters"]) == {"a1", "a2", "a0"}
        # χ² of the coefficients' difference under the sum of the two covariances, 3 degrees of freedom.
        delta = np.array(list(after["result"]["parameters"].values())) - np.array(
            list(before["result"]["parameters"].values())
        )
        covariance = np.array(after["result"]["covariance"]) + np.array(before["result"]["covariance"])
        chi2 = float(delta @ np.linalg.solve(covariance, delta))
        assert found["drift"]["chi2"] == pytest.approx(chi2, rel=1e-9)
        assert found["drift"]["p_value"] == pytest.approx(float(chdtrc(3, chi2)), rel=1e-9)
        # As found: the previous quadratic on this calibration's readings; as left: its own.
        data = client.get(f"/v1/fits/{after['id']}/data").get_json()
        t_u, t_c = np.array(data["t_u"]), np.array(data["t_c"])
        as_found = np.sqrt(np.mean((t_c - np.polyval(_quadratic_of(before), t_u)) ** 2))
        as_left = np.sqrt(np.mean((t_c - np.polyval(_quadratic_of(after), t_u)) ** 2))
        assert found["drift"]["as_found_rms"] == pytest.approx(as_found, rel=1e-9)
        assert found["drift"]["as_left_rms"] == pytest.approx(as_left, rel=1e-9)
    assert history[steady["id"]]["drift"]["flagged"] is False
    assert history[shifted["id"]]["drift"]["flagged"] is True
    assert client.get("/v1/instruments?drifted=true").get_json()["items"][0]["id"] == "Q-1"


def test_a_change_of_model_is_no_drift_but_its_as_found_rms_is_kept(client: FlaskClient) -> None:
    rng = np.random.default_rng(4)
    t_c = 0.5 * T_U - 17 + rng.normal(0, 0.1, T_U.size)
    line = succeeded(client, {"t_u": T_U.tolist(), "t_c": t_c.tolist(), "instrument": "M-1", **CONVERGING})
    quadratic = _quadratic_night(client, "M-1", seed=5)
    found = client.get("/v1/instruments/M-1").get_json()["current"]
    assert found["fit_id"] == quadratic["id"]
    assert found["drift"]["chi2"] is None and found["drift"]["flagged"] is False
    data = client.get(f"/v1/fits/{quadratic['id']}/data").get_json()
    t_u, new_t_c = np.array(data["t_u"]), np.array(data["t_c"])
    w, b = line["result"]["w_raw"], line["result"]["b_raw"]
    assert found["drift"]["as_found_rms"] == pytest.approx(np.sqrt(np.mean((new_t_c - (w * t_u + b)) ** 2)))


def test_a_quadratic_instruments_conformity_decision_judges_the_previous_curve(client: FlaskClient) -> None:
    _quadratic_night(client, "Q-2", seed=6)
    assert client.put("/v1/instruments/Q-2", json={"limits": {"lower": -0.3, "upper": 0.3}}).status_code == 200
    before = client.get("/v1/instruments/Q-2").get_json()["current"]
    after = _quadratic_night(client, "Q-2", seed=7, shift=0.2)
    decision = client.get("/v1/instruments/Q-2").get_json()["current"]["decision"]
    p = before["parameters"]
    for point in decision["points"]:
        expected = point["t_c"] - (p["a2"] * point["t_u"] ** 2 + p["a1"] * point["t_u"] + p["a0"])
        assert point["error"] == pytest.approx(expected, abs=1e-12)
        assert point["u"] > after["result"]["residual_sd"]  # the previous curve's own uncertainty adds to it
    assert decision["verdict"] in ("pass", "fail")


def test_apply_reads_a_pt100_instrument_in_degrees_beside_a_line(client: FlaskClient) -> None:
    rng = np.random.default_rng(8)
    t = np.linspace(-50.0, 400.0, 14)
    prt = {"t_u": (pt100(t) + rng.normal(0, 0.003, t.size)).tolist(), "t_c": t.tolist()}
    fit = succeeded(client, {**prt, "model": {"kind": "callendar_van_dusen"}, "instrument": "PRT-1", **CONVERGING})
    line = {"t_u": T_U.tolist(), "t_c": (0.5 * T_U - 17 + rng.normal(0, 0.1, T_U.size)).tolist()}
    succeeded(client, {**line, "instrument": "TT-1", **CONVERGING})
    body = client.get("/v1/instruments/PRT-1").get_json()["current"]
    assert body["model"] == {"kind": "callendar_van_dusen"}
    assert body["parameters"]["R0"] == pytest.approx(PT100_R0, abs=0.01)
    assert body["parameters"]["A"] == pytest.approx(IEC_A, rel=1e-3)
    readings = "instrument,t_u,u_t_u\nPRT-1,138.5055,0.01\nTT-1,50,0.2\nPRT-1,60.2558,0\n"
    answer = client.post("/v1/apply?interval=0.95", data=readings, content_type="text/csv")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert [row["instrument"] for row in rows] == ["PRT-1", "TT-1", "PRT-1"]
    assert float(rows[0]["t_c"]) == pytest.approx(100.0, abs=0.05)
    assert float(rows[2]["t_c"]) == pytest.approx(-100.0, abs=0.05)
    # Row for row what the instrument's own predict answers, the line's rows untouched by the curve's.
    for row in rows:
        own = client.post(
            f"/v1/instruments/{row['instrument']}/predict",
            json={
                "t_u": [float(row["t_u"])],
                "interval": 0.95,
                "u_t_u": float(readings.split("\n")[rows.index(row) + 1].split(",")[2]),
            },
        ).get_json()
        for column, key in (("t_c", "t_c"), ("lower", "lower"), ("upper", "upper"), ("u_t_c", "u_t_c")):
            assert float(row[column]) == pytest.approx(own[key][0], rel=1e-12), (row, column)
    assert rows[0]["fit_id"] == fit["id"]


def test_the_instrument_page_and_cli_show_each_parameter_over_time(client: FlaskClient) -> None:
    for seed in (11, 12):
        _quadratic_night(client, "Q-3", seed=seed)
    page = client.get("/ui/instruments/Q-3").get_data(as_text=True)
    for name in ("a1", "a2", "a0"):
        assert f'id="p-{name}-chart"' in page
    assert "polynomial of degree 2: a1 = " in page and "(3 dof)" in page
    assert 'id="w-chart"' not in page
    text = instrument_history(client.get("/v1/instruments/Q-3").get_json())
    assert text.count("polynomial: a1 ") == 2
