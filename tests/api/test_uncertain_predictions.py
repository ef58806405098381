"""Predictions with the uncertainty of each reading, and the inverse (the reading that gives a reference
value), through the real app on both backends: ISO/TS 28037:2010's worked example with unknown
uncertainty in y (Annex E; the service's ordinary least squares) run by gradient descent to convergence,
then its published forward and inverse evaluations."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.api.test_fits_api import problem
from tests.in_process import run_fit

# ISO/TS 28037:2010 Annex E: a = 1.172, b = 1.96357, u(a) = 0.158875, u(b) = 0.0407954,
# cov(a, b) = −0.00582491 (a the intercept, b the slope: calib's b and w).
ANNEX_E = {"t_u": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "t_c": [3.014, 5.225, 7.004, 9.061, 11.201, 12.762]}


def _succeeded(client: FlaskClient, body: dict[str, Any]) -> dict[str, Any]:
    fit = client.post("/v1/fits", json=body).get_json()
    run_fit(client, fit["id"])
    done: dict[str, Any] = client.get(f"/v1/fits/{fit['id']}").get_json()
    assert done["status"] == "succeeded", done
    return done


def test_the_published_forward_and_inverse_evaluations_of_annex_e(client: FlaskClient) -> None:
    fit = _succeeded(client, {**ANNEX_E, "epochs": "auto", "learning_rate": 0.02})
    result = fit["result"]
    assert result["converged"] is True
    assert (result["se_w"], result["se_b"], result["cov_wb"]) == pytest.approx(
        (0.0407954, 0.158875, -0.00582491), rel=1e-5
    )
    # The mean response at x2 = 3.5 (no uncertainty in it): 8.044(70).
    forward = client.post(f"/v1/fits/{fit['id']}/predict", json={"t_u": [3.5], "u_t_u": 0}).get_json()
    assert forward["t_c"][0] == pytest.approx(8.044, abs=5e-4) and forward["u_t_c"][0] == pytest.approx(0.070, abs=5e-4)
    # The stimulus of a further response y1 = 10.5, itself as uncertain as the residuals: 4.751(97).
    # Least squares gives 4.75055; the fit's line is within 0.01 of a standard uncertainty of it in
    # each parameter (converged), which moves the reading by at most 0.002.
    s = result["residual_sd"]
    back = client.post(f"/v1/fits/{fit['id']}/inverse", json={"t_c": [10.5], "u_t_c": s}).get_json()
    assert back["t_u"][0] == pytest.approx(4.75055, abs=2e-3) and back["u_t_u"][0] == pytest.approx(0.097, abs=5e-4)
    assert back["converged"] is True and back["fit_id"] == fit["id"]
    # One uncertainty per value, or one for all; the reading's own uncertainty adds through the slope.
    both = client.post(f"/v1/fits/{fit['id']}/predict", json={"t_u": [3.5, 3.5], "u_t_u": [0.0, 0.2]}).get_json()[
        "u_t_c"
    ]
    assert both[1] ** 2 == pytest.approx(both[0] ** 2 + (result["w_raw"] * 0.2) ** 2, rel=1e-9)
    # Without u_t_u a prediction is as before: no u_t_c.
    assert client.post(f"/v1/fits/{fit['id']}/predict", json={"t_u": [3.5]}).get_json().get("u_t_c") is None


def test_uncertainties_are_refused_by_name_where_they_do_not_fit_the_values(client: FlaskClient) -> None:
    fit = _succeeded(client, {**ANNEX_E, "epochs": "auto", "learning_rate": 0.02})
    url = f"/v1/fits/{fit['id']}"
    wrong = problem(client.post(f"{url}/predict", json={"t_u": [1.0, 2.0], "u_t_u": [0.1]}), 422)
    assert wrong["errors"][0]["loc"] == ["u_t_u"] and "one per t_u (2)" in wrong["errors"][0]["msg"]
    assert problem(client.post(f"{url}/inverse", json={"t_c": [5.0], "u_t_c": -1}), 422)["errors"][0]["loc"] == [
        "u_t_c"
    ]
    assert problem(client.post(f"{url}/inverse", json={"t_c": []}), 422)["errors"][0]["loc"] == ["t_c"]
    assert problem(client.post(f"{url}/inverse", json={"t_c": [1.0], "extra": 1}), 422)["errors"][0]["loc"] == ["extra"]


def test_what_a_fit_cannot_answer_is_a_409_naming_why(client: FlaskClient) -> None:
    queued = client.post("/v1/fits", json=ANNEX_E).get_json()
    assert problem(client.post(f"/v1/fits/{queued['id']}/inverse", json={"t_c": [5.0]}), 409)["type"].endswith(
        "not-succeeded"
    )
    # Two points: a line, but no covariance of its parameters.
    two = _succeeded(client, {"t_u": [1.0, 2.0], "t_c": [3.0, 5.0], "epochs": "auto", "learning_rate": 0.1})
    refused = problem(client.post(f"/v1/fits/{two['id']}/predict", json={"t_u": [1.5], "u_t_u": 0.1}), 409)
    assert refused["type"].endswith("no-uncertainty")
    back = client.post(f"/v1/fits/{two['id']}/inverse", json={"t_c": [4.0]}).get_json()
    assert back["t_u"][0] == pytest.approx(1.5, abs=1e-2) and back["u_t_u"] is None
    # Not converged: refused unless the client says it knows.
    early = _succeeded(client, {**ANNEX_E, "epochs": 1, "learning_rate": 0.001})
    assert early["result"]["converged"] is False
    url = f"/v1/fits/{early['id']}"
    assert problem(client.post(f"{url}/inverse", json={"t_c": [5.0]}), 409)["type"].endswith("not-converged")
    assert problem(client.post(f"{url}/predict", json={"t_u": [5.0], "u_t_u": 0}), 409)["type"].endswith(
        "not-converged"
    )
    assert client.post(f"{url}/inverse", json={"t_c": [5.0], "allow_unconverged": True}).status_code == 200
    # A flat line: no single reading gives a value.
    flat = _succeeded(
        client, {"t_u": [1.0, 2.0, 3.0], "t_c": [4.0, 4.0, 4.0], "epochs": 200, "init": {"w": 0.0, "b": 4.0}}
    )
    assert flat["result"]["w_raw"] == 0.0
    none = problem(client.post(f"/v1/fits/{flat['id']}/inverse", json={"t_c": [5.0]}), 409)
    assert none["type"].endswith("no-reading") and none["errors"][0]["loc"] == ["t_c", 0]
    # A reading past float64's range (a slope of 0.001) is named.
    gentle = {"t_u": [0.0, 1000.0, 2000.0], "t_c": [0.0, 1.0, 2.0], "init": {"w": 0.001, "b": 0.0}, "epochs": 1}
    gentle = _succeeded(client, {**gentle, "learning_rate": 1e-12})
    body = {"t_c": [1.0, 1.7e308], "allow_unconverged": True}
    past = problem(client.post(f"/v1/fits/{gentle['id']}/inverse", json=body), 409)
    assert past["type"].endswith("prediction-out-of-range") and past["errors"][0]["loc"] == ["t_c", 1]


def test_apply_carries_each_readings_uncertainty_through_its_instruments_calibration(client: FlaskClient) -> None:
    fit = _succeeded(client, {**ANNEX_E, "epochs": "auto", "learning_rate": 0.02, "instrument": "ISO-E"})
    predicted = client.post(
        f"/v1/fits/{fit['id']}/predict", json={"t_u": [3.5, 3.5, 6.0], "u_t_u": [0.0, 0.2, 0.05]}
    ).get_json()
    readings = "instrument,t_u,u_t_u\nISO-E,3.5,0\nISO-E,3.5,0.2\nISO-E,6,0.05\n"
    applied = client.post("/v1/apply", data=readings, content_type="text/csv")
    assert applied.status_code == 200, applied.get_data(as_text=True)
    header, *rows = applied.get_data(as_text=True).splitlines()
    assert header == "instrument,t_u,t_c,lower,upper,fit_id,u_t_c"
    found = [float(row.split(",")[-1]) for row in rows]
    assert found == pytest.approx(predicted["u_t_c"], rel=1e-12)
    assert found[0] == pytest.approx(0.070, abs=5e-4)  # Annex E's mean response at 3.5
    # Without the column, the answer is as it was.
    plain = client.post("/v1/apply", data="instrument,t_u\nISO-E,3.5\n", content_type="text/csv")
    assert plain.get_data(as_text=True).splitlines()[0] == "instrument,t_u,t_c,lower,upper,fit_id"
    # A negative or missing uncertainty is the row's 422; a calibration of two points cannot give one.
    bad = problem(
        client.post("/v1/apply", data="instrument,t_u,u_t_u\nISO-E,1,0.1\nISO-E,2,-1\n", content_type="text/csv"), 422
    )
    assert bad["errors"] == [{"loc": ["row", 2], "msg": "u_t_u must be a finite number ≥ 0"}]
    _succeeded(client, {"t_u": [1.0, 2.0], "t_c": [3.0, 5.0], "epochs": 100, "instrument": "TWO"})
    two = problem(client.post("/v1/apply", data="instrument,t_u,u_t_u\nTWO,1.5,0.1\n", content_type="text/csv"), 409)
    assert two["type"].endswith("no-uncertainty") and two["errors"][0]["loc"] == ["row", 1]


def test_gum_h3_the_correction_at_30_degrees_and_its_uncertainty(client: FlaskClient) -> None:
    # JCGM 100:2008 (GUM) H.3: corrections b_k of a thermometer read at t_k, fitted by ordinary least
    # squares; published, the correction at 30 °C: b(30) = −0.1494 °C with u_c = 0.0041 °C. Run to a
    # tolerance of 0.001 standard uncertainty, so that the fit's line is the published one to its digits.
    t = [21.521, 22.012, 22.512, 23.003, 23.507, 23.999, 24.513, 25.002, 25.503, 26.010, 26.511]
    b = [-0.171, -0.169, -0.166, -0.159, -0.164, -0.165, -0.156, -0.157, -0.159, -0.161, -0.160]
    body = {"t_u": t, "t_c": b, "normalize": "standardize", "epochs": "auto", "convergence_tolerance": 0.001}
    fit = _succeeded(client, body)
    assert fit["result"]["converged"] is True
    answer = client.post(f"/v1/fits/{fit['id']}/predict", json={"t_u": [30.0], "u_t_u": 0}).get_json()
    assert round(answer["t_c"][0], 4) == -0.1494 and round(answer["u_t_c"][0], 4) == 0.0041
    # The GUM writes the line about t0 = 20 °C: b(t) = y1 + y2·(t − t0); published y1 = −0.1712 °C,
    # y2 = 0.00218, s(y1) = 0.0029 °C, s(y2) = 0.00067, r(y1, y2) = −0.930, s = 0.0035 °C. calib's line
    # is about t_u = 0: y1 = b + 20·w, and its variance and covariance follow from (w, b)'s.
    r = fit["result"]
    for w, b in ((r["w_opt"], r["b_opt"]), (r["w_raw"], r["b_raw"])):  # least squares, and the fitted line
        assert (round(b + 20 * w, 4), round(w, 5)) == (-0.1712, 0.00218)
    var_y1 = r["se_b"] ** 2 + 400 * r["se_w"] ** 2 + 40 * r["cov_wb"]
    cov_y1_y2 = r["cov_wb"] + 20 * r["se_w"] ** 2
    assert (round(var_y1**0.5, 4), round(r["se_w"], 5)) == (0.0029, 0.00067)
    assert round(cov_y1_y2 / (var_y1**0.5 * r["se_w"]), 3) == -0.930
    assert round(r["residual_sd"], 4) == 0.0035
