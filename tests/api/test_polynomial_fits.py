"""Polynomials through the service (shared/design/API.md, "Models beyond a line"), on both backends:
the chapter's own exercise, w2·t_u² + w1·t_u + b on the book's data, against a float64 copy of the
book's loop epoch by epoch; random polynomial data against statsmodels' OLS on the Vandermonde
matrix, run to convergence by `epochs: "auto"` with every optimizer's engine path; and the refusals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import statsmodels.api as sm
from flask.testing import FlaskClient

from tests.api.test_fits_api import problem
from tests.in_process import succeeded

# The book's eleven readings (chapter 5).
T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]
T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]


# The exercise's quadratic run to convergence, from standardized readings at the fastest stable rate.
CONVERGING_QUADRATIC = {
    "t_u": T_U,
    "t_c": T_C,
    "model": {"kind": "polynomial", "degree": 2},
    "epochs": "auto",
    "learning_rate": "auto",
    "normalize": "standardize",
}


def _losses(client: FlaskClient, fit_id: str) -> list[float]:
    found: list[float] = []
    url: str | None = f"/v1/fits/{fit_id}/losses?limit=10000"
    while url:
        page = client.get(url).get_json()
        found += page["loss"]
        url = page["next"]
    return found


def _book_loop(epochs: int, learning_rate: float, scale: float) -> tuple[list[float], np.ndarray]:
    """The chapter's training loop for the exercise's model in float64, from calib's start (the first
    feature's coefficient 1, the rest 0): each epoch's loss before its update, and the last (w1, w2, b)."""
    x, y = np.array(T_U) * scale, np.array(T_C)
    w1, w2, b = 1.0, 0.0, 0.0
    losses = []
    for _ in range(epochs):
        residual = w2 * x**2 + w1 * x + b - y
        losses.append(float(np.mean(residual**2)))
        grad = 2 * residual / len(x)
        w1, w2, b = (
            w1 - learning_rate * float(grad @ x),
            w2 - learning_rate * float(grad @ x**2),
            b - learning_rate * float(grad.sum()),
        )
    return losses, np.array([w1, w2, b])


@pytest.mark.parametrize("optimizer", ["gd", {"kind": "gd", "gradient": "autograd"}])
def test_the_chapters_quadratic_equals_the_books_loop_epoch_by_epoch(client: FlaskClient, optimizer: Any) -> None:
    epochs, rate, scale = 5000, 1e-4, 0.1
    fit = succeeded(
        client,
        {
            "t_u": T_U,
            "t_c": T_C,
            "model": {"kind": "polynomial", "degree": 2},
            "epochs": epochs,
            "learning_rate": rate,
            "input_scale": scale,
            "optimizer": optimizer,
        },
    )
    expected, (w1, w2, b) = _book_loop(epochs, rate, scale)
    got = _losses(client, fit["id"])
    assert len(got) == epochs
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    result = fit["result"]
    assert result["parameter_names"] == ["a1", "a2", "a0"]
    # Raw units: a1 = w1·scale, a2 = w2·scale², a0 = b.
    assert [result["parameters"][name] for name in ("a1", "a2", "a0")] == pytest.approx(
        [w1 * scale, w2 * scale**2, b], rel=1e-9
    )
    assert result["w"] is None and result["w_raw"] is None
    assert fit["params"]["model"] == {"kind": "polynomial", "degree": 2}
    # The loss of the result is the loss at the returned parameters: one update past the series' last.
    assert result["last_epoch_loss"] == pytest.approx(expected[-1], rel=1e-6)
    assert result["loss"] < result["last_epoch_loss"]
    # 5000 epochs at this rate are far from the quadratic's optimum: said so, by parameter.
    assert result["converged"] is False
    assert set(result["convergence"]["gap_se"]) == {"a1", "a2", "a0"}


def test_the_quadratic_converges_to_statsmodels_least_squares_on_the_books_data(client: FlaskClient) -> None:
    fit = succeeded(client, CONVERGING_QUADRATIC)
    ols = sm.OLS(np.array(T_C), np.vander(np.array(T_U), 3, increasing=True)).fit()
    a0, a1, a2 = ols.params
    result = fit["result"]
    assert result["converged"] is True and fit["stop_reason"] == "converged"
    assert [result["parameters_opt"][k] for k in ("a0", "a1", "a2")] == pytest.approx([a0, a1, a2], rel=1e-9)
    assert [result["standard_uncertainties"][k] for k in ("a0", "a1", "a2")] == pytest.approx(list(ols.bse), rel=1e-9)
    for name, gap in result["convergence"]["gap_se"].items():
        assert abs(gap) <= 0.01, name
    assert result["r2"] == pytest.approx(ols.rsquared, rel=1e-9)
    assert result["residual_sd"] == pytest.approx(np.sqrt(ols.scale), rel=1e-9)
    # The exercise's question: the quadratic's training loss is lower than the line's on the same data.
    line = succeeded(
        client, {"t_u": T_U, "t_c": T_C, "epochs": "auto", "learning_rate": "auto", "normalize": "standardize"}
    )
    assert result["loss"] < line["result"]["loss"]


@pytest.mark.parametrize(
    ("degree", "n", "optimizer"),
    [(1, 5, "gd"), (2, 40, "gd"), (3, 400, "gd"), (4, 60, "gd"), (5, 12, "gd"), (3, 30, "adam"), (2, 25, "momentum")],
)
def test_random_polynomials_equal_statsmodels_and_converge(
    client: FlaskClient, degree: int, n: int, optimizer: str
) -> None:
    rng = np.random.default_rng(degree * 1000 + n)
    t_u = np.sort(rng.uniform(-3.0, 7.0, n))
    truth = rng.normal(0, 1, degree + 1)
    t_c = np.polynomial.polynomial.polyval(t_u, truth) + rng.normal(0, 0.3, n)
    body: dict[str, Any] = {
        "t_u": t_u.tolist(),
        "t_c": t_c.tolist(),
        "model": {"kind": "polynomial", "degree": degree},
        "epochs": "auto",
        "normalize": "standardize",
        "optimizer": optimizer,
    }
    body["learning_rate"] = "auto" if optimizer == "gd" else 0.01
    fit = succeeded(client, body)
    ols = sm.OLS(t_c, np.vander(t_u, degree + 1, increasing=True)).fit()
    result = fit["result"]
    names = [f"a{k}" for k in range(degree + 1)]
    assert [result["parameters_opt"][k] for k in names] == pytest.approx(list(ols.params), rel=1e-6, abs=1e-9)
    assert [result["standard_uncertainties"][k] for k in names] == pytest.approx(list(ols.bse), rel=1e-6)
    covariance = np.array(result["covariance"])
    order = [result["parameter_names"].index(k) for k in names]
    np.testing.assert_allclose(covariance[np.ix_(order, order)], ols.cov_params(), rtol=1e-6, atol=1e-12)
    assert result["converged"] is True, result["convergence"]
    assert fit["stop_reason"] == "converged"


def test_a_polynomial_with_as_many_points_as_parameters_converges_on_its_excess_loss(client: FlaskClient) -> None:
    t_u = [0.0, 1.0, 2.0]
    fit = succeeded(
        client,
        {
            "t_u": t_u,
            "t_c": [1.0, 2.0, 5.0],
            "model": {"kind": "polynomial", "degree": 2},
            "epochs": "auto",
            "learning_rate": "auto",
        },
    )
    result = fit["result"]
    assert result["standard_uncertainties"] == {"a1": None, "a2": None, "a0": None}
    assert result["covariance"] is None and result["convergence"]["gap_se"] is None
    assert result["converged"] is True
    assert result["parameters_opt"] == pytest.approx({"a1": 0.0, "a2": 1.0, "a0": 1.0}, abs=1e-9)


def test_a_model_is_refused_by_name_where_it_cannot_be_fitted(client: FlaskClient) -> None:
    few = problem(
        client.post("/v1/fits", json={"t_u": T_U[:3], "t_c": T_C[:3], "model": {"kind": "polynomial", "degree": 3}}),
        422,
    )
    assert few["errors"][0]["loc"][-1] == "model.degree" or "model" in str(few["errors"][0]["loc"])
    assert "needs at least 4 training points" in few["errors"][0]["msg"]
    for wrong in (
        {"kind": "polynomial", "degree": 6},
        {"kind": "polynomial"},
        {"kind": "spline"},
        {"kind": "line", "degree": 2},
    ):
        refused = problem(client.post("/v1/fits", json={"t_u": T_U, "t_c": T_C, "model": wrong}), 422)
        assert refused["errors"][0]["loc"][0] == "model", (wrong, refused)
    held = problem(
        client.post(
            "/v1/fits",
            json={
                "t_u": T_U[:4],
                "t_c": T_C[:4],
                "model": {"kind": "polynomial", "degree": 3},
                "validation": {"indices": [0]},
            },
        ),
        422,
    )
    assert "t_u has 3" in held["errors"][0]["msg"]
    # The line stays the default, unchanged in every field.
    line = client.post("/v1/fits", json={"t_u": T_U, "t_c": T_C}).get_json()
    assert line["params"]["model"] == {"kind": "line"}


def test_a_quadratics_predictions_carry_statsmodels_intervals_and_propagated_uncertainty(client: FlaskClient) -> None:
    fit = succeeded(client, CONVERGING_QUADRATIC)
    ols = sm.OLS(np.array(T_C), np.vander(np.array(T_U), 3, increasing=True)).fit()
    at = np.array([30.0, 50.0, 75.0])
    rows = np.vander(at, 3, increasing=True)
    frame = ols.get_prediction(rows).summary_frame(alpha=0.05)
    url = f"/v1/fits/{fit['id']}/predict"
    answer = client.post(url, json={"t_u": at.tolist(), "interval": 0.95}).get_json()
    a = fit["result"]["parameters"]
    own = a["a0"] + a["a1"] * at + a["a2"] * at**2
    assert answer["t_c"] == pytest.approx(own.tolist(), rel=1e-12)
    # The fit is within 0.01 SE of least squares in each parameter: its interval is statsmodels' obs_ci.
    assert answer["lower"] == pytest.approx(frame["obs_ci_lower"].tolist(), abs=1e-2 * frame["mean_se"].max())
    assert answer["upper"] == pytest.approx(frame["obs_ci_upper"].tolist(), abs=1e-2 * frame["mean_se"].max())
    # u(t_c) = sqrt(φᵀVφ + (f'(t_u)·u(t_u))²), the mean response's standard error when u(t_u) = 0.
    plain = client.post(url, json={"t_u": at.tolist(), "u_t_u": 0}).get_json()["u_t_c"]
    assert plain == pytest.approx(frame["mean_se"].tolist(), rel=1e-9)
    slope = a["a1"] + 2 * a["a2"] * at
    with_reading = client.post(url, json={"t_u": at.tolist(), "u_t_u": 0.5}).get_json()["u_t_c"]
    assert np.square(with_reading) == pytest.approx(np.square(plain) + np.square(slope * 0.5), rel=1e-9)
    # The inverse: the reading in the data's range whose prediction is 10.
    reading = client.post(f"/v1/fits/{fit['id']}/inverse", json={"t_c": [10.0]}).get_json()["t_u"]
    assert client.post(url, json={"t_u": reading}).get_json()["t_c"] == pytest.approx([10.0], rel=1e-12)
