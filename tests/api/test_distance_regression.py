"""Lines with stated uncertainties of the readings too (`u_t_u` with `u_t_c`): generalized distance
regression (ISO/TS 28037 clause 7), through the real app on both backends. The standard's worked
example to its printed digits; random errors-in-variables data against scipy's ODR (its unscaled
covariance); gradient descent, every optimizer, run to the distance-regression optimum with every
epoch's loss the one documented; the refusals."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient

with warnings.catch_warnings():
    # scipy.odr is deprecated since 1.17 (for the odrpack package): the issue names it as the reference,
    # and it is still the same ODRPACK.
    warnings.simplefilter("ignore", DeprecationWarning)
    from scipy import odr

from tests.api.test_fits_api import problem
from tests.api.test_weighted_fits import TO_PRINTED_DIGITS
from tests.in_process import succeeded

# ISO/TS 28037:2010 7.x's example, as NPL's software for the standard assigns it.
EXAMPLE = {
    "t_u": [1.2, 1.9, 2.9, 4.0, 4.7, 5.9],
    "t_c": [3.4, 4.4, 7.2, 8.5, 10.8, 13.5],
    "u_t_u": 0.2,
    "u_t_c": [0.2, 0.2, 0.2, 0.4, 0.4, 0.4],
}


def test_iso_ts_28037s_distance_regression_example_to_its_printed_digits(client: FlaskClient) -> None:
    fit = succeeded(client, {**EXAMPLE, **TO_PRINTED_DIGITS})
    r = fit["result"]
    # ISO/TS 28037's a is the intercept (calib's b), its b the slope (calib's w): a = 0.5788,
    # u(a) = 0.4764, b = 2.1597, u(b) = 0.1355, cov(a, b) = −0.0577, χ²_obs = 2.743 with 4 dof.
    assert (round(r["b_opt"], 4), round(r["se_b"], 4)) == (0.5788, 0.4764)
    assert (round(r["w_opt"], 4), round(r["se_w"], 4)) == (2.1597, 0.1355)
    assert round(r["cov_wb"], 4) == -0.0577
    assert (round(r["chi2_obs"], 3), r["chi2_dof"]) == (2.743, 4)
    assert r["consistent"] is True
    # Gradient descent (epoch by epoch: the loss is not quadratic in w) reached it.
    assert r["converged"] is True and fit["stop_reason"] == "converged"
    assert (round(r["b_raw"], 4), round(r["w_raw"], 4)) == (0.5788, 2.1597)
    assert client.get(f"/v1/fits/{fit['id']}/data").get_json()["u_t_u"] == [0.2] * 6


def _odr(t_u: np.ndarray, t_c: np.ndarray, u_t_u: np.ndarray, u_t_c: np.ndarray) -> Any:
    line = odr.Model(
        lambda beta, x: beta[0] * x + beta[1],
        fjacb=lambda beta, x: np.vstack([x, np.ones_like(x)]),
        fjacd=lambda beta, x: np.full_like(x, beta[0]),
    )
    data = odr.RealData(t_u, t_c, sx=u_t_u, sy=u_t_c)
    return odr.ODR(data, line, beta0=[1.0, 0.0], sstol=1e-15, partol=1e-15, maxit=1000).run()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_errors_in_variables_equal_scipys_odr(client: FlaskClient, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    truth = rng.uniform(0, 100, n)
    u_t_u, u_t_c = rng.uniform(0.1, 1.0, n), rng.uniform(0.1, 1.0, n)
    t_u, t_c = truth + rng.normal(0, u_t_u), 0.53 * truth - 17 + rng.normal(0, u_t_c)
    body = {"t_u": t_u.tolist(), "t_c": t_c.tolist(), "u_t_u": u_t_u.tolist(), "u_t_c": u_t_c.tolist()}
    r = succeeded(client, {**body, "epochs": "auto", "learning_rate": "auto", "normalize": "standardize"})["result"]
    found = _odr(t_u, t_c, u_t_u, u_t_c)
    assert [r["w_opt"], r["b_opt"]] == pytest.approx(found.beta, rel=1e-7)
    covariance = [[r["se_w"] ** 2, r["cov_wb"]], [r["cov_wb"], r["se_b"] ** 2]]
    np.testing.assert_allclose(covariance, found.cov_beta, rtol=1e-5)  # unscaled, as ODR reports it
    assert r["chi2_obs"] == pytest.approx(found.sum_square, rel=1e-9)
    assert r["converged"] is True


@pytest.mark.parametrize("optimizer", ["gd", "adam", {"kind": "gd", "gradient": "autograd"}, "momentum"])
def test_every_optimizer_minimizes_the_documented_loss(client: FlaskClient, optimizer: Any) -> None:
    body = {**EXAMPLE, "epochs": 40, "learning_rate": 0.01, "optimizer": optimizer}
    fit = succeeded(client, body)
    losses = client.get(f"/v1/fits/{fit['id']}/losses").get_json()["loss"]
    assert len(losses) == 40
    # Epoch 1's loss is the start's, w = 1 and b = 0: Σ r²/(u²(t_c) + w²·u²(t_u)) / Σ 1/u²(t_c).
    x, y = np.array(EXAMPLE["t_u"]), np.array(EXAMPLE["t_c"])
    u_c = np.array(EXAMPLE["u_t_c"])
    expected = np.sum((x - y) ** 2 / (u_c**2 + 0.2**2)) / np.sum(1 / u_c**2)
    assert losses[0] == pytest.approx(expected, rel=1e-6)  # float32, as every stored loss
    assert losses[-1] < losses[0]
    # The result's loss is the loss at the returned line, by the same formula.
    w, b = fit["result"]["w_raw"], fit["result"]["b_raw"]
    at_end = np.sum((w * x + b - y) ** 2 / (u_c**2 + w * w * 0.2**2)) / np.sum(1 / u_c**2)
    assert fit["result"]["loss"] == pytest.approx(at_end, rel=1e-9)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"u_t_c": None}, "u_t_u"),
        ({"model": {"kind": "polynomial", "degree": 2}}, "u_t_u"),
        ({"u_t_u": [0.2, 0.2]}, "u_t_u"),
        ({"u_t_u": -0.1}, "u_t_u"),
    ],
)
def test_u_t_u_without_u_t_c_or_on_another_model_is_a_422_naming_it(
    client: FlaskClient, change: dict[str, Any], field: str
) -> None:
    body = {**EXAMPLE, **change}
    answer = problem(client.post("/v1/fits", json={k: v for k, v in body.items() if v is not None}), 422)
    assert any(field in ".".join(str(p) for p in e["loc"]) for e in answer["errors"]), answer
