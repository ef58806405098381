"""Exact least squares on parameter vectors (shared/domain/least_squares.py) against the published
worked examples, statsmodels, and the line's own statistics."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from shared.domain.calibration import data_stats
from shared.domain.least_squares import solve


def polynomial_design(t_u: np.ndarray, degree: int) -> np.ndarray:
    """t_u, t_u², …, t_u^d, then the constant: the engine's order."""
    return np.stack([*(t_u**k for k in range(1, degree + 1)), np.ones_like(t_u)], 1)


def test_gum_annex_h3_thermometer_calibration() -> None:
    # JCGM 100:2008 (GUM) H.3: corrections b_k of a thermometer read at t_k, fitted by
    # b(t) = y1 + y2 (t − t0), t0 = 20 °C, ordinary least squares. Published: y1 = −0.1712 °C,
    # y2 = 0.00218, s(y1) = 0.0029 °C, s(y2) = 0.00067, r(y1, y2) = −0.930, s = 0.0035 °C.
    t = np.array([21.521, 22.012, 22.512, 23.003, 23.507, 23.999, 24.513, 25.002, 25.503, 26.010, 26.511])
    b = np.array([-0.171, -0.169, -0.166, -0.159, -0.164, -0.165, -0.156, -0.157, -0.159, -0.161, -0.160])
    found = solve(polynomial_design(t - 20, 1), b, np.array([11]))
    y2, y1 = found.parameters[0]
    s_y2, s_y1 = found.standard_uncertainties[0]
    assert (round(y1, 4), round(y2, 5)) == (-0.1712, 0.00218)
    assert (round(s_y1, 4), round(s_y2, 5)) == (0.0029, 0.00067)
    assert round(found.covariance[0, 0, 1] / (s_y1 * s_y2), 3) == -0.930
    assert round(float(found.residual_sd[0]), 4) == 0.0035
    assert not np.isfinite(found.chi2_obs[0]) and not found.consistent[0]


def test_iso_ts_28037_clause_6_weighted_least_squares() -> None:
    # ISO/TS 28037:2010 clause 6, the example with equal weights (the data of NPL's published software
    # for it): x = 1…6, u(y) = 0.5. Published: a = 1.867, b = 1.757, u(a) = 0.465, u(b) = 0.120,
    # cov(a, b) = −0.050, χ²_obs = 1.665 against the 95 % quantile 9.488 of χ²₄: consistent.
    x = np.arange(1.0, 7.0)
    y = np.array([3.3, 5.6, 7.1, 9.3, 10.7, 12.1])
    found = solve(polynomial_design(x, 1), y, np.array([6]), u_y=np.full(6, 0.5))
    b, a = found.parameters[0]
    u_b, u_a = found.standard_uncertainties[0]
    assert (round(a, 3), round(b, 3), round(u_a, 3), round(u_b, 3)) == (1.867, 1.757, 0.465, 0.120)
    assert round(found.covariance[0, 0, 1], 3) == -0.050
    assert round(float(found.chi2_obs[0]), 3) == 1.665 and found.dof[0] == 4 and found.consistent[0]
    # The same data with u(y) ten times smaller: χ²_obs 166.5, far past 9.488.
    tight = solve(polynomial_design(x, 1), y, np.array([6]), u_y=np.full(6, 0.05))
    assert not tight.consistent[0] and float(tight.chi2_p[0]) < 1e-30


def test_the_line_is_what_data_stats_has_always_reported() -> None:
    rng = np.random.default_rng(3)
    sizes = [3, 11, 40, 7]
    t_u = [rng.uniform(20, 90, n) for n in sizes]
    t_c = [0.55 * u - 17 + rng.normal(0, 1, n) for u, n in zip(t_u, sizes, strict=True)]
    stats = data_stats(t_u, t_c, [1.0] * 4)
    found = solve(polynomial_design(np.concatenate(t_u), 1), np.concatenate(t_c), np.array(sizes))
    for i, st in enumerate(stats):
        w, b = found.parameters[i]
        assert (w, b) == pytest.approx((st.w_opt, st.b_opt), rel=1e-11)
        assert tuple(found.standard_uncertainties[i]) == pytest.approx((st.se_w, st.se_b), rel=1e-9)
        assert found.covariance[i, 0, 1] == pytest.approx(st.cov_wb, rel=1e-9)
        assert float(found.r2[i]) == pytest.approx(st.r2, rel=1e-11)
        assert float(found.residual_sd[i]) == pytest.approx(st.residual_sd, rel=1e-9)


@pytest.mark.parametrize("degree", [2, 3, 5])
def test_polynomials_of_a_batch_are_statsmodels_ols_and_wls(degree: int) -> None:
    rng = np.random.default_rng(degree)
    sizes = [9, 30, 14]
    t_u = [rng.uniform(-2, 3, n) for n in sizes]
    t_c = [1 - u + 0.3 * u**2 + rng.normal(0, 0.2, len(u)) for u in t_u]
    u_c = [rng.uniform(0.1, 0.4, len(u)) for u in t_u]
    design = polynomial_design(np.concatenate(t_u), degree)
    ols = solve(design, np.concatenate(t_c), np.array(sizes))
    wls = solve(design, np.concatenate(t_c), np.array(sizes), u_y=np.concatenate(u_c))
    for i in range(len(sizes)):
        x = polynomial_design(t_u[i], degree)
        by_ols = sm.OLS(t_c[i], x).fit()
        np.testing.assert_allclose(ols.parameters[i], by_ols.params, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(ols.covariance[i], by_ols.cov_params(), rtol=1e-7, atol=1e-12)
        assert float(ols.r2[i]) == pytest.approx(by_ols.rsquared, rel=1e-9)
        # Stated uncertainties: the covariance is not rescaled by the residuals (a fixed scale of 1).
        by_wls = sm.WLS(t_c[i], x, weights=1 / u_c[i] ** 2).fit(cov_type="fixed scale", cov_kwds={"scale": 1.0})
        np.testing.assert_allclose(wls.parameters[i], by_wls.params, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(wls.covariance[i], by_wls.cov_params(), rtol=1e-7, atol=1e-12)
        assert float(wls.chi2_obs[i]) == pytest.approx(by_wls.ssr, rel=1e-9)
        assert float(wls.r2[i]) == pytest.approx(by_wls.rsquared, rel=1e-9)


def test_points_that_do_not_determine_the_model_say_so() -> None:
    # A cubic through 3 points: C is singular; the parameters are a minimum-norm solution through
    # the points, and no uncertainty is claimed.
    x = np.array([1.0, 2.0, 4.0])
    found = solve(polynomial_design(x, 3), np.array([1.0, 3.0, 2.0]), np.array([3]))
    assert not found.determined[0]
    assert np.isnan(found.covariance[0]).all() and np.isnan(found.residual_sd[0])
    np.testing.assert_allclose(polynomial_design(x, 3) @ found.parameters[0], [1.0, 3.0, 2.0], atol=1e-9)
