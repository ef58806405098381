"""Fits with stated uncertainties of the reference values (`u_t_c`, ISO/TS 28037 clause 6), through the
real app on both backends: the standard's two worked examples of weighted least squares, every published
figure to its printed digits; random weighted data against numpy's (XᵀWX)⁻¹ solution, for the line and a
polynomial; gradient descent on the weighted mean square, run to the weighted optimum; the refusals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient

from tests.api.test_fits_api import problem
from tests.in_process import succeeded

X = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
# ISO/TS 28037:2010 6.3, as reproduced by the GUM Tree Calculator's documentation of its examples.
EQUAL = {"t_u": X, "t_c": [3.3, 5.6, 7.1, 9.3, 10.7, 12.1], "u_t_c": 0.5}
UNEQUAL = {"t_u": X, "t_c": [3.2, 4.3, 7.6, 8.6, 11.7, 12.8], "u_t_c": [0.5, 0.5, 0.5, 1.0, 1.0, 1.0]}


# Run to convergence within 1e-4 standard uncertainties, so that the fitted line itself prints the
# published digits.
TO_PRINTED_DIGITS = {
    "epochs": "auto",
    "learning_rate": "auto",
    "normalize": "standardize",
    "convergence_tolerance": 1e-4,
}


def _printed(value: float, digits: int) -> float:
    return round(value, digits)


@pytest.mark.parametrize(
    ("data", "published", "exact"),
    [
        # a, u(a), b, u(b), cov(a, b), χ²; then the 15-digit a, u(a), b, u(b).
        (
            EQUAL,
            (1.867, 0.465, 1.757, 0.120, -0.050, 1.665),
            (1.86666666666667, 0.465474668125631, 1.75714285714286, 0.119522860933439),
        ),
        (
            UNEQUAL,
            (0.885, 0.530, 2.057, 0.178, -0.082, 4.131),
            (0.885232067510549, 0.529708143508836, 2.05696202531646, 0.177892016741205),
        ),
    ],
    ids=["equal u(y)", "unequal u(y)"],
)
def test_iso_ts_28037s_weighted_examples_to_their_printed_digits(
    client: FlaskClient, data: dict[str, Any], published: tuple[float, ...], exact: tuple[float, ...]
) -> None:
    fit = succeeded(client, {**data, **TO_PRINTED_DIGITS})
    r = fit["result"]
    # ISO/TS 28037's a is the intercept (calib's b), its b the slope (calib's w).
    a, u_a, b, u_b, cov, chi2 = published
    assert (_printed(r["b_opt"], 3), _printed(r["se_b"], 3)) == (a, u_a)
    assert (_printed(r["w_opt"], 3), _printed(r["se_w"], 3)) == (b, u_b)
    assert _printed(r["cov_wb"], 3) == cov
    assert (_printed(r["chi2_obs"], 3), r["chi2_dof"]) == (chi2, 4)
    assert r["consistent"] is True and 0 < r["chi2_p"] < 1
    assert (r["b_opt"], r["se_b"], r["w_opt"], r["se_w"]) == pytest.approx(exact, rel=1e-12)
    # Gradient descent reached the weighted optimum: within 1e-4 of its standard uncertainties, and
    # to the published digits.
    assert r["converged"] is True and fit["stop_reason"] == "converged"
    assert (_printed(r["b_raw"], 3), _printed(r["w_raw"], 3)) == (a, b)
    assert r["standard_uncertainties"] == pytest.approx({"w": r["se_w"], "b": r["se_b"]})
    data_body = client.get(f"/v1/fits/{fit['id']}/data").get_json()
    assert data_body["u_t_c"] == (data["u_t_c"] if isinstance(data["u_t_c"], list) else [data["u_t_c"]] * 6)


def test_the_loss_is_the_weighted_mean_square_and_gradient_descent_keeps_the_books_rule(client: FlaskClient) -> None:
    u = np.array(UNEQUAL["u_t_c"])
    fit = succeeded(client, {**UNEQUAL, "epochs": 3, "learning_rate": 0.01})
    losses = client.get(f"/v1/fits/{fit['id']}/losses").get_json()["loss"]
    x, y, weights = np.array(X), np.array(UNEQUAL["t_c"]), 1 / u**2
    w, b = 1.0, 0.0  # the book's start
    for epoch in range(3):
        residual = w * x + b - y
        assert losses[epoch] == pytest.approx(np.sum(weights * residual**2) / weights.sum(), rel=1e-6)
        grad = 2 * weights * residual / weights.sum()
        w, b = w - 0.01 * float(grad @ x), b - 0.01 * float(grad.sum())
    assert (fit["result"]["w"], fit["result"]["b"]) == pytest.approx((w, b), rel=1e-12)
    # Without u_t_c the same request is ordinary least squares and carries no χ² fields.
    plain = succeeded(client, {"t_u": X, "t_c": UNEQUAL["t_c"], "epochs": 3, "learning_rate": 0.01})
    assert "chi2_obs" not in plain["result"] and "consistent" not in plain["result"]


@pytest.mark.parametrize(("degree", "n"), [(None, 8), (None, 60), (2, 30), (3, 200)])
def test_random_weighted_data_equal_numpys_weighted_solution(client: FlaskClient, degree: int | None, n: int) -> None:
    rng = np.random.default_rng(7 * n + (degree or 0))
    t_u = np.sort(rng.uniform(0.0, 10.0, n))
    u = rng.uniform(0.05, 0.5, n)
    p = (degree or 1) + 1
    t_c = np.polynomial.polynomial.polyval(t_u, rng.normal(0, 1, p)) + rng.normal(0, 1, n) * u
    body: dict[str, Any] = {
        "t_u": t_u.tolist(),
        "t_c": t_c.tolist(),
        "u_t_c": u.tolist(),
        "epochs": "auto",
        "learning_rate": "auto",
        "normalize": "standardize",
    }
    if degree is not None:
        body["model"] = {"kind": "polynomial", "degree": degree}
    fit = succeeded(client, body)
    design = np.vander(t_u, p, increasing=True)  # 1, t_u, t_u², …
    weights = 1 / u**2
    covariance = np.linalg.inv(design.T @ (weights[:, None] * design))
    theta = covariance @ design.T @ (weights * t_c)
    residual = t_c - design @ theta
    result = fit["result"]
    names = ["b", "w"] if degree is None else [f"a{k}" for k in range(p)]
    order = [result["parameter_names"].index(name) for name in names]
    assert [result["parameters_opt"][name] for name in names] == pytest.approx(theta.tolist(), rel=1e-7)
    np.testing.assert_allclose(np.array(result["covariance"])[np.ix_(order, order)], covariance, rtol=1e-7)
    assert result["chi2_obs"] == pytest.approx(float(np.sum(weights * residual**2)), rel=1e-7)
    assert result["chi2_dof"] == n - p
    assert result["converged"] is True


def test_stated_uncertainties_are_refused_by_name_where_they_cannot_weigh(client: FlaskClient) -> None:
    for wrong, message in (
        (0, "a finite number > 0 is expected, got 0"),
        ([0.5, 0.5, 0.5, 0.5, 0.5, -1.0], "[5]: a finite number > 0"),
        ([0.5, 0.5], "one number for all, or one per t_c (6)"),
        ("0.5", "a number > 0 is expected"),
    ):
        refused = problem(client.post("/v1/fits", json={**EQUAL, "u_t_c": wrong}), 422)
        assert refused["errors"][0]["loc"] == ["u_t_c"] and message in refused["errors"][0]["msg"], refused


def test_iso_ts_28037s_evaluations_on_the_weighted_line(client: FlaskClient) -> None:
    fit = succeeded(client, {**EQUAL, **TO_PRINTED_DIGITS})
    url = f"/v1/fits/{fit['id']}"
    # x1 from y1 = 10.5 with u(y1) = 0.5: 4.91327913279133, u 0.32203556012891 (from the least-squares
    # line; the fitted one is within 1e-4 of a standard uncertainty of it).
    back = client.post(f"{url}/inverse", json={"t_c": [10.5], "u_t_c": 0.5}).get_json()
    assert back["t_u"][0] == pytest.approx(4.91327913279133, abs=1e-4)
    assert back["u_t_u"][0] == pytest.approx(0.32203556012891, rel=1e-12)
    # y2 at x2 = 3.5 with u(x2) = 0.2: 8.01666666666667, u 0.406409531732455.
    forward = client.post(f"{url}/predict", json={"t_u": [3.5], "u_t_u": 0.2}).get_json()
    assert forward["t_c"][0] == pytest.approx(8.01666666666667, abs=1e-4)
    assert forward["u_t_c"][0] == pytest.approx(0.406409531732455, rel=1e-4)
    # A residual-based interval does not belong to a weighted fit: said so.
    refused = problem(client.post(f"{url}/predict", json={"t_u": [3.5], "interval": 0.95}), 409)
    assert refused["type"].endswith("no-interval") and "u_t_u" in refused["detail"]


def test_apply_gives_a_weighted_calibration_no_interval_as_predict_does(client: FlaskClient) -> None:
    # Found by a fuzzer comparing apply with predict: apply?interval gave bounds from the residual
    # scatter for a weighted calibration, where its instrument's predict refuses them (409).
    succeeded(client, {**EQUAL, **TO_PRINTED_DIGITS, "instrument": "TT-W"})
    readings = "instrument,t_u\nTT-W,3.5\n"
    refused = problem(client.post("/v1/apply?interval=0.95", data=readings, content_type="text/csv"), 409)
    assert refused["type"].endswith("no-interval") and refused["errors"][0]["loc"] == ["row", 1]
    predict = client.post("/v1/instruments/TT-W/predict", json={"t_u": [3.5], "interval": 0.95})
    assert predict.status_code == 409 and predict.get_json()["type"] == refused["type"]
    # u_t_c is the weighted calibration's to give, in both: ISO/TS 28037's 0.406409531732455 at 3.5.
    applied = client.post("/v1/apply", data="instrument,t_u,u_t_u\nTT-W,3.5,0.2\n", content_type="text/csv")
    assert float(applied.get_data(as_text=True).splitlines()[1].split(",")[-1]) == pytest.approx(
        0.406409531732455, rel=1e-4
    )


def test_the_chi2_verdict_on_the_fit_page_and_in_the_cli(client: FlaskClient) -> None:
    from services.cli.tables import fit_summary

    # The same readings with a tenth of the uncertainty: the data disagree with it.
    fit = succeeded(
        client, {**EQUAL, "u_t_c": 0.05, "epochs": "auto", "learning_rate": "auto", "normalize": "standardize"}
    )
    assert fit["result"]["consistent"] is False and fit["result"]["chi2_obs"] == pytest.approx(166.4761904761908)
    page = client.get(f"/ui/fits/{fit['id']}").get_data(as_text=True)
    assert 'id="chi2"' in page and "NOT consistent with" in page
    assert "NOT consistent with their stated uncertainties" in fit_summary(fit)
