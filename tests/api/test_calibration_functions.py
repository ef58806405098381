"""Callendar–Van Dusen and Steinhart–Hart through the service (shared/design/API.md, "Models beyond a
line"), on both backends: a Pt100 from IEC 60751's coefficients, above 0 °C and across it (R0, A, B, C
recovered within their uncertainties; an ideal Pt100's fit reads 100 °C at 138.5055 Ω and −100 °C at
60.2558 Ω, the standard's table); a 10 kΩ NTC from its published Steinhart–Hart coefficients
(recovered to 1e-5, and its R25 read as 25 °C within 1 mK); both by gradient descent to convergence;
intervals by propagation; and the refusals, each naming its field."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient

from services.cli.tables import fit_summary
from tests.api.test_fits_api import problem
from tests.api.test_polynomial_fits import CONVERGING_QUADRATIC
from tests.in_process import succeeded

# IEC 60751's coefficients of an industrial platinum resistance thermometer, R0 = 100 Ω (Pt100).
IEC_A, IEC_B, IEC_C, PT100_R0 = 3.9083e-3, -5.775e-7, -4.183e-12, 100.0
# A 10 kΩ NTC's Steinhart–Hart coefficients, as its maker publishes them (1/K, 1/K, 1/K).
NTC_A, NTC_B, NTC_C = 1.129148e-3, 2.34125e-4, 8.76741e-8

CONVERGING = {"epochs": "auto", "learning_rate": "auto", "normalize": "standardize"}


def pt100(t: np.ndarray) -> np.ndarray:
    """IEC 60751's R(T) of the ideal Pt100."""
    c = np.where(t < 0, IEC_C, 0.0)
    return PT100_R0 * (1 + IEC_A * t + IEC_B * t**2 + c * (t - 100) * t**3)


def ntc_resistance(t_c: np.ndarray) -> np.ndarray:
    """The NTC's resistance at t_c: the real root of c·L³ + b·L + a − 1/T in L = ln R (Cardano)."""
    y = 1 / (t_c + 273.15)
    p, q = NTC_B / NTC_C, (NTC_A - y) / NTC_C
    root = np.sqrt((q / 2) ** 2 + (p / 3) ** 3)
    return np.exp(np.cbrt(-q / 2 + root) + np.cbrt(-q / 2 - root))


def _fit(client: FlaskClient, t_u: np.ndarray, t_c: np.ndarray, kind: str, **options: Any) -> dict[str, Any]:
    body = {"t_u": t_u.tolist(), "t_c": t_c.tolist(), "model": {"kind": kind}, **CONVERGING, **options}
    return succeeded(client, body)


@pytest.mark.parametrize("lowest", [0.0, -200.0])
def test_a_pt100_recovers_iec_60751s_coefficients_within_their_uncertainties(
    client: FlaskClient, lowest: float
) -> None:
    rng = np.random.default_rng(7)
    t = np.linspace(lowest, 660.0, 24)
    r = pt100(t) + rng.normal(0, 0.002, t.size)  # 2 mΩ of scatter
    fit = _fit(client, r, t, "callendar_van_dusen")
    result = fit["result"]
    below_zero = lowest < 0
    names = ["A", "B", "C", "R0"] if below_zero else ["A", "B", "R0"]
    assert result["parameter_names"] == names
    assert result["converged"] is True, json.dumps(fit)
    truth = {"A": IEC_A, "B": IEC_B, "C": IEC_C, "R0": PT100_R0}
    for name in names:
        u = result["standard_uncertainties"][name]
        assert u > 0
        assert abs(result["parameters_opt"][name] - truth[name]) <= 4 * u, name
        assert abs(result["parameters"][name] - result["parameters_opt"][name]) <= 0.01 * u, name
        assert abs(result["convergence"]["gap_se"][name]) <= 0.01
    assert np.allclose(np.diag(result["covariance"]), [result["standard_uncertainties"][n] ** 2 for n in names])
    assert result["residual_sd"] == pytest.approx(0.002, rel=0.5)  # in Ω: the response's units


def test_an_ideal_pt100s_fit_reads_the_standards_table(client: FlaskClient) -> None:
    t = np.arange(-200.0, 851.0, 50.0)
    fit = _fit(client, pt100(t), t, "callendar_van_dusen")
    assert fit["result"]["parameters"]["R0"] == pytest.approx(PT100_R0, rel=1e-6)
    read = client.post(f"/v1/fits/{fit['id']}/predict", json={"t_u": [138.5055, 60.2558, 100.0]})
    assert read.status_code == 200, read.get_json()
    assert np.allclose(read.get_json()["t_c"], [100.0, -100.0, 0.0], atol=0.01)


def test_a_10k_ntc_recovers_its_steinhart_hart_coefficients_and_reads_25_c_at_r25(client: FlaskClient) -> None:
    t = np.arange(-40.0, 126.0, 5.0)
    # Read to 1 mΩ (an 8½-digit meter's resolution at 10 kΩ): scatter of 1e-7 of the reading or less.
    fit = _fit(client, np.round(ntc_resistance(t), 3), t, "steinhart_hart")
    result = fit["result"]
    assert result["parameter_names"] == ["b", "c", "a"]
    assert result["converged"] is True, json.dumps(fit)
    for name, truth in {"a": NTC_A, "b": NTC_B, "c": NTC_C}.items():
        assert result["parameters_opt"][name] == pytest.approx(truth, rel=1e-5)
    read = client.post(f"/v1/fits/{fit['id']}/predict", json={"t_u": [10000.0]}).get_json()
    # The coefficients' own value at 10 kΩ is 24.99967 °C: the maker's R25 within 1 mK.
    assert read["t_c"][0] == pytest.approx(25.0, abs=1e-3)
    # A resistance of -5 Ω has no temperature on the curve (ln of a negative): said so, not "past a
    # 64-bit float" as the answer for every reading that was not a number said before.
    nowhere = client.post(f"/v1/fits/{fit['id']}/predict", json={"t_u": [10000.0, -5.0]})
    assert nowhere.status_code == 409 and nowhere.get_json()["errors"][0]["loc"] == ["t_u", 1]
    assert "has no value there (outside its domain)" in nowhere.get_json()["detail"]


def test_intervals_and_uncertainties_propagate_through_the_inverse(client: FlaskClient) -> None:
    rng = np.random.default_rng(11)
    t = np.linspace(0.0, 400.0, 15)
    r = pt100(t) + rng.normal(0, 0.01, t.size)
    fit = _fit(client, r, t, "callendar_van_dusen")
    reading = float(pt100(np.array([200.0]))[0])
    body = {"t_u": [reading], "interval": 0.95, "u_t_u": 0.0}
    answer = client.post(f"/v1/fits/{fit['id']}/predict", json=body).get_json()
    t_c, lower, upper = answer["t_c"][0], answer["lower"][0], answer["upper"][0]
    assert lower < t_c < upper
    # The half-width: t·sqrt(u_fit² + (s/R'(T))²), dominated by the scatter of a new reading (0.01 Ω at
    # R' ≈ 0.37 Ω/°C: about 0.027 °C, times t(0.975, 12) ≈ 2.18).
    assert 0.04 < upper - t_c < 0.09
    assert 0 < answer["u_t_c"][0] < (upper - t_c) / 2
    # u(t_u) of a reading adds its own share: 0.37 Ω/°C turns 0.037 Ω into 0.1 °C.
    more = client.post(f"/v1/fits/{fit['id']}/predict", json={"t_u": [reading], "u_t_u": 0.037}).get_json()
    assert more["u_t_c"][0] == pytest.approx(np.hypot(answer["u_t_c"][0], 0.1), rel=0.02)


@pytest.mark.parametrize(
    ("kind", "change", "field"),
    [
        ("callendar_van_dusen", {"t_u": [100.0, -1.0, 120.0, 130.0]}, "t_u.1"),
        ("callendar_van_dusen", {"t_c": [0.0, 10.0, 900.0, 20.0]}, "t_c.2"),
        ("callendar_van_dusen", {"t_c": [-250.0, 10.0, 50.0, 20.0]}, "t_c.0"),
        ("steinhart_hart", {"t_u": [0.0, 1.0, 2.0, 3.0]}, "t_u.0"),
        ("steinhart_hart", {"t_c": [-300.0, 10.0, 50.0, 20.0]}, "t_c.0"),
        ("callendar_van_dusen", {"t_u": [100.0, 110.0], "t_c": [0.0, 25.0]}, "t_u"),
        ("callendar_van_dusen", {"t_c": [-10.0, 10.0, 50.0, 20.0], "validation": {"indices": [3]}}, "t_u"),
    ],
)
def test_data_outside_a_functions_domain_is_a_422_naming_it(
    client: FlaskClient, kind: str, change: dict[str, Any], field: str
) -> None:
    body = {"t_u": [100.0, 103.9, 119.4, 107.8], "t_c": [0.0, 10.0, 50.0, 20.0], "model": {"kind": kind}, **change}
    answer = problem(client.post("/v1/fits", json=body), 422)
    fields = [".".join(str(part) for part in e["loc"]) for e in answer["errors"]]
    assert any(f.endswith(field) for f in fields), fields


def test_the_fit_page_report_and_cli_show_a_pt100_by_its_parameters(client: FlaskClient) -> None:
    t = np.linspace(-100.0, 400.0, 12)
    fit = _fit(client, pt100(t), t, "callendar_van_dusen")
    page = client.get(f"/ui/fits/{fit['id']}").get_data(as_text=True)
    assert "R(T) = R0·(1 + A·T" in page and "R0 = 100" in page and "C = -4.18" in page
    # The curve over the data runs through the readings (the inverted function, sampled by the server).
    points = json.loads(html.unescape(re.search(r'data-curve="([^"]*)"', page).group(1)))  # type: ignore[union-attr]
    assert points[0] == pytest.approx([pt100(t)[0], t[0]], abs=1e-6)
    assert points[-1] == pytest.approx([pt100(t)[-1], t[-1]], abs=1e-6)
    report = client.get(f"/ui/fits/{fit['id']}/report").get_data(as_text=True)
    assert 'id="report-curve"' in report and "u(R0)" in report and "data-curve=" in report
    table = fit_summary(fit)
    assert "callendar_van_dusen: R(T) = R0" in table and "R0" in table and "least squares" in table


def test_the_inverse_of_every_kind_finds_the_one_reading_in_the_datas_range(client: FlaskClient) -> None:
    """POST /v1/fits/{id}/inverse beyond the line: each reading predicted back to itself; u(t_u) by the
    implicit function's law, checked against finite differences of the forward prediction; a value no
    reading in the range gives, and one that two give, are 409s naming it."""
    quadratic = succeeded(client, {**CONVERGING_QUADRATIC})
    prt_t = np.linspace(-50.0, 400.0, 12)
    rng = np.random.default_rng(3)
    prt = _fit(client, pt100(prt_t) + rng.normal(0, 0.003, prt_t.size), prt_t, "callendar_van_dusen")
    for fit, readings in ((quadratic, [30.0, 55.0, 80.0]), (prt, [90.0, 138.5, 240.0])):
        forward = client.post(f"/v1/fits/{fit['id']}/predict", json={"t_u": readings, "u_t_u": 0.0}).get_json()
        back = client.post(f"/v1/fits/{fit['id']}/inverse", json={"t_c": forward["t_c"], "u_t_c": 0.05})
        assert back.status_code == 200, back.get_json()
        answer = back.get_json()
        assert answer["t_u"] == pytest.approx(readings, rel=1e-9)
        # u(t_u) = sqrt(u²(t_c) + u²(f)) / |f'|, with u(f) the calibration's own (u_t_c at u_t_u = 0)
        # and f' from the forward prediction's u_t_c at u_t_u = 1 (it adds f'² to the variance).
        unit = client.post(f"/v1/fits/{fit['id']}/predict", json={"t_u": readings, "u_t_u": 1.0}).get_json()
        own, with_one = np.array(forward["u_t_c"]), np.array(unit["u_t_c"])
        slope = np.sqrt(with_one**2 - own**2)
        assert answer["u_t_u"] == pytest.approx(np.sqrt(0.05**2 + own**2) / slope, rel=1e-6)
    outside = client.post(f"/v1/fits/{prt['id']}/inverse", json={"t_c": [100.0, 2000.0]})
    body = problem(outside, 409)
    assert body["errors"][0]["loc"] == ["t_c", 1] and "no reading" in body["errors"][0]["msg"]
    # A parabola through its vertex: two readings in the range give each value above it.
    t_u = np.linspace(-2.0, 2.0, 9)
    parabola = succeeded(
        client,
        {"t_u": t_u.tolist(), "t_c": (t_u**2).tolist(), "model": {"kind": "polynomial", "degree": 2}, **CONVERGING},
    )
    twice = problem(client.post(f"/v1/fits/{parabola['id']}/inverse", json={"t_c": [1.0]}), 409)
    assert "2 readings" in twice["errors"][0]["msg"]


def test_a_thermistor_weighted_by_its_references_uncertainty(client: FlaskClient) -> None:
    """u_t_c on Steinhart–Hart weighs each point by u(1/T) = u(t_c)/T²: the parameters and their unscaled
    covariance are numpy's weighted least squares on (ln R, ln³R, 1)."""
    rng = np.random.default_rng(9)
    t = np.arange(-40.0, 126.0, 15.0)
    u = rng.uniform(0.005, 0.02, t.size)
    r = ntc_resistance(t + rng.normal(0, u))
    fit = _fit(client, r, t, "steinhart_hart", u_t_c=u.tolist())
    result = fit["result"]
    kelvin = t + 273.15
    design = np.stack([np.log(r), np.log(r) ** 3, np.ones_like(r)], 1)
    weights = (kelvin**2 / u) ** 2
    normal = (design.T * weights) @ design
    expected = np.linalg.solve(normal, (design.T * weights) @ (1 / kelvin))
    covariance = np.linalg.inv(normal)
    assert [result["parameters_opt"][n] for n in ("b", "c", "a")] == pytest.approx(expected, rel=1e-7)
    np.testing.assert_allclose(result["covariance"], covariance, rtol=1e-6)
    assert result["chi2_dof"] == t.size - 3 and result["converged"] is True
    refused = problem(client.post(f"/v1/fits/{fit['id']}/predict", json={"t_u": [10000.0], "interval": 0.95}), 409)
    assert refused["type"].endswith("no-interval")


def test_a_pt100_weighted_by_its_references_uncertainty(client: FlaskClient) -> None:
    """u_t_c on Callendar–Van Dusen is the regressor's: each point weighs R by u(R) = |dR/dT|·u(T), the
    slope the unweighted fit's (the effective-variance method in one step). The coefficients and their
    unscaled covariance are numpy's weighted least squares with those weights, presented as A, B, C, R0."""
    rng = np.random.default_rng(17)
    t = np.linspace(-100.0, 400.0, 14)
    u = rng.uniform(0.005, 0.03, t.size)
    r = pt100(t + rng.normal(0, u))
    fit = _fit(client, r, t, "callendar_van_dusen", u_t_c=u.tolist())
    result = fit["result"]
    below = t < 0
    design = np.stack([t, t**2, np.where(below, (t - 100) * t**3, 0.0), np.ones_like(t)], 1)
    first = np.linalg.lstsq(design, r, rcond=None)[0]
    slope = first[0] + 2 * first[1] * t + first[2] * np.where(below, 4 * t**3 - 300 * t**2, 0.0)
    weights = 1 / (slope * u) ** 2
    normal = (design.T * weights) @ design
    c = np.linalg.solve(normal, (design.T * weights) @ r)
    expected = {"A": c[0] / c[3], "B": c[1] / c[3], "C": c[2] / c[3], "R0": c[3]}
    for name, value in expected.items():
        assert result["parameters_opt"][name] == pytest.approx(value, rel=1e-7), name
    # R0's variance is the last coefficient's own, unscaled.
    assert result["standard_uncertainties"]["R0"] == pytest.approx(np.sqrt(np.linalg.inv(normal)[3, 3]), rel=1e-6)
    assert result["chi2_dof"] == t.size - 4 and result["converged"] is True
    assert 0.01 < result["chi2_p"] < 0.999  # the data agree with their stated uncertainties


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("callendar_van_dusen", {"optimizer": "adam", "learning_rate": 0.05, "epochs": 3000}),
        ("callendar_van_dusen", {"optimizer": {"kind": "gd", "gradient": "autograd"}, "epochs": 400}),
        (
            "steinhart_hart",
            {"optimizer": {"kind": "gd", "gradient": "finite_difference", "delta": 1e-6}, "epochs": 400},
        ),
        ("steinhart_hart", {"optimizer": "momentum", "epochs": 400, "learning_rate": 1e-3}),
        (
            "callendar_van_dusen",
            {
                "validation": {"indices": [3, 9]},
                "early_stopping": {"monitor": "val_loss", "patience": 20},
                "epochs": 200000,
            },
        ),
    ],
)
def test_every_optimizer_gradient_split_and_stop_runs_a_function(
    client: FlaskClient, kind: str, options: dict[str, Any]
) -> None:
    """The functions through the engine's iterative paths and a split: each epoch's loss the documented
    one (the response's mean square, before the epoch's update), falling, and the analytic gd's closed
    form the same as autograd's epoch by epoch."""
    t = np.linspace(-60.0, 300.0, 12)
    rng = np.random.default_rng(13)
    readings = pt100(t) + rng.normal(0, 0.003, t.size) if kind == "callendar_van_dusen" else ntc_resistance(t)
    body = {"t_u": readings.tolist(), "t_c": t.tolist(), "model": {"kind": kind}, "normalize": "standardize"}
    fit = succeeded(client, {**body, **{"learning_rate": "auto"}, **options})
    losses = client.get(f"/v1/fits/{fit['id']}/losses?limit=10000").get_json()["loss"]
    assert losses[-1] < losses[0] and all(np.isfinite(losses))
    if "validation" in options:
        assert fit["stop_reason"] in ("early_stopped", "completed")
        assert fit["result"]["val_loss"] is not None
    if options.get("optimizer") == {"kind": "gd", "gradient": "autograd"}:
        closed = succeeded(client, {**body, "learning_rate": fit["params"]["learning_rate"], "epochs": 400})
        again = client.get(f"/v1/fits/{closed['id']}/losses?limit=10000").get_json()["loss"]
        np.testing.assert_allclose(losses, again, rtol=1e-5)
