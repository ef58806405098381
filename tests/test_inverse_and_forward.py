"""Forward and inverse evaluation on a calibration line with uncertainties (shared/domain/predictions.py),
against the worked examples of ISO/TS 28037:2010 (as published in the standard, 6.3 and Annex E, and
reproduced to 15 digits by NPL/MSL's GUM Tree Calculator documentation)."""

from __future__ import annotations

import numpy as np
import pytest

from shared.domain.predictions import forward_uncertainty, inverse_on_line, line_covariance


def test_iso_ts_28037_example_1_a_reading_from_a_reference_value_and_back() -> None:
    # Equal weights, u(y) = 0.5 (clause 6.3): a = 1.86667, b = 1.75714, u(a) = 0.465475,
    # u(b) = 0.119523, cov(a, b) = −0.05. ISO/TS 28037 names the intercept a and the slope b;
    # calib names them b and w.
    slope, intercept = 1.75714285714286, 1.86666666666667
    covariance = line_covariance(0.119522860933439, 0.465474668125631, -0.05)
    # A further observation y1 = 10.5 with u(y1) = 0.5: x1 = 4.91328, u(x1) = 0.322036.
    t_u, u_t_u = inverse_on_line(np.array([10.5]), slope, intercept, covariance, 0.5)
    assert t_u[0] == pytest.approx(4.91327913279133, abs=1e-12)
    assert u_t_u[0] == pytest.approx(0.32203556012891, abs=1e-12)
    # A stimulus x2 = 3.5 with u(x2) = 0.2: y2 = 8.01667, u(y2) = 0.406410.
    x2 = np.array([3.5])
    t_c, u_t_c = slope * x2 + intercept, forward_uncertainty(x2, slope, covariance, 0.2)
    assert t_c[0] == pytest.approx(8.01666666666667, abs=1e-12)
    assert u_t_c[0] == pytest.approx(0.406409531732455, abs=1e-12)


def test_iso_ts_28037_example_2_unequal_weights() -> None:
    # u(y) = 0.5, 0.5, 0.5, 1, 1, 1: a = 0.885232, b = 2.05696, u(a) = 0.529708, u(b) = 0.177892,
    # cov(a, b) = −0.0822785; y1 = 10.5 with u(y1) = 1: x1 = 4.67426, u(x1) = 0.533181.
    covariance = line_covariance(0.177892016741205, 0.529708143508836, -0.0822784810126582)
    t_u, u_t_u = inverse_on_line(np.array([10.5]), 2.05696202531646, 0.885232067510549, covariance, 1.0)
    assert t_u[0] == pytest.approx(4.67425641025641, abs=1e-12)
    assert u_t_u[0] == pytest.approx(0.533180902231294, abs=1e-12)


def test_without_uncertainty_of_the_value_only_the_lines_remains_and_the_two_are_inverse() -> None:
    covariance = line_covariance(0.04, 0.16, -0.006)
    readings = np.array([-3.0, 0.0, 2.5, 40.0])
    t_c, u_t_c = 1.96 * readings + 1.17, forward_uncertainty(readings, 1.96, covariance)
    back, u_back = inverse_on_line(t_c, 1.96, 1.17, covariance)
    assert back == pytest.approx(readings, abs=1e-12)
    # With no u(t_c) given, u(t_u) is the line's own uncertainty at that reading, divided by the slope.
    assert u_back == pytest.approx(u_t_c / 1.96, rel=1e-12)
