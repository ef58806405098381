"""Predictions of any linear-in-parameters model with their uncertainty (shared/domain/predictions.py),
against statsmodels, the line's own interval, and the GUM's propagation written out for the line."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from shared.domain import calibration
from shared.domain.least_squares import solve
from shared.domain.predictions import observation_interval, predicted, standard_uncertainty
from tests.test_least_squares import polynomial_design


@pytest.mark.parametrize("degree", [1, 2, 4])
def test_intervals_and_uncertainties_are_statsmodels(degree: int) -> None:
    rng = np.random.default_rng(degree)
    # Readings of unit size: a quartic in t_u of 0…10 has a Gram matrix of condition 1e12, where two
    # float64 solutions (statsmodels' pseudo-inverse, the centred one here) differ in the 7th digit.
    t_u = rng.uniform(-2, 3, 25)
    t_c = 2 + 0.5 * t_u - 0.3 * t_u**2 + rng.normal(0, 0.3, 25)
    fit = solve(polynomial_design(t_u, degree), t_c, np.array([25]))
    new = polynomial_design(np.array([-2.5, -0.1, 1.0, 2.9, 4.0]), degree)
    frame = sm.OLS(t_c, polynomial_design(t_u, degree)).fit().get_prediction(new).summary_frame(alpha=0.05)
    theta, covariance = fit.parameters[0], fit.covariance[0]
    np.testing.assert_allclose(predicted(new, theta), frame["mean"], rtol=1e-10)
    np.testing.assert_allclose(standard_uncertainty(new, covariance), frame["mean_se"], rtol=1e-8)
    lower, upper = observation_interval(new, theta, covariance, float(fit.residual_sd[0]), int(fit.dof[0]), 0.95)
    np.testing.assert_allclose(lower, frame["obs_ci_lower"], rtol=1e-9)
    np.testing.assert_allclose(upper, frame["obs_ci_upper"], rtol=1e-9)


def test_the_lines_interval_is_the_one_the_service_serves() -> None:
    rng = np.random.default_rng(9)
    t_u = rng.uniform(20, 90, 12)
    t_c = 0.55 * t_u - 17 + rng.normal(0, 1, 12)
    stats = calibration.data_stats([t_u], [t_c], [1.0])[0]
    fit = solve(polynomial_design(t_u, 1), t_c, np.array([12]))
    readings = [10.0, 50.0, 95.0]
    spread = calibration.Spread(12, stats.residual_sd or 0.0, stats.t_u_mean, stats.t_u_sxx)
    served = calibration.predict(stats.w_opt or 0.0, stats.b_opt or 0.0, readings, interval=0.9, spread=spread)
    design = polynomial_design(np.array(readings), 1)
    sd = float(fit.residual_sd[0])
    lower, upper = observation_interval(design, fit.parameters[0], fit.covariance[0], sd, 10, 0.9)
    np.testing.assert_allclose(lower, served.lower or [], rtol=1e-10)
    np.testing.assert_allclose(upper, served.upper or [], rtol=1e-10)


def test_a_readings_uncertainty_propagates_through_the_slope() -> None:
    # For the line t_c = w·t_u + b: u²(t_c) = u²(b) + 2 t_u cov(w, b) + t_u² u²(w) + w² u²(t_u).
    w = 0.5
    covariance = np.array([[4e-4, -0.02], [-0.02, 1.1]])  # (w, b) order, the engine's
    t_u = np.array([20.0, 60.0])
    found = standard_uncertainty(polynomial_design(t_u, 1), covariance, slope=np.full(2, w), u_t_u=0.3)
    expected = np.sqrt(1.1 + 2 * t_u * -0.02 + t_u**2 * 4e-4 + w**2 * 0.3**2)
    np.testing.assert_allclose(found, expected, rtol=1e-12)
    with pytest.raises(ValueError):
        standard_uncertainty(polynomial_design(t_u, 1), covariance, u_t_u=0.3)
