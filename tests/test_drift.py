"""Drift's math on parameter vectors (shared/domain/drift.py): χ² with as many degrees of freedom as
parameters, the line's written-out 2×2 form the same figure; figures past float's range are no
figure, never an error."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from shared.domain.drift import chi2_of_difference, chi2_p_value, rms_of_line
from shared.store.drift import Calibration


def _covariance(rng: np.random.Generator, p: int) -> np.ndarray:
    root = rng.normal(size=(p, p))
    return root @ root.T + 0.1 * np.eye(p)


@pytest.mark.parametrize("p", [2, 3, 4, 6])
def test_chi2_is_the_mahalanobis_distance_with_p_degrees_of_freedom(p: int) -> None:
    rng = np.random.default_rng(p)
    for _ in range(20):
        covariance = _covariance(rng, p) + _covariance(rng, p)
        delta = rng.normal(size=p)
        chi2 = chi2_of_difference(delta, covariance)
        assert chi2 == pytest.approx(float(delta @ np.linalg.inv(covariance) @ delta), rel=1e-10)
        assert chi2_p_value(chi2, p) == pytest.approx(float(stats.chi2.sf(chi2, p)), rel=1e-10)


@pytest.mark.parametrize("p", [2, 3])
def test_no_verdict_where_the_covariance_is_singular_or_not_finite(p: int) -> None:
    singular = np.ones((p, p))  # rank 1: both fits exact along every direction but one
    assert chi2_of_difference(np.ones(p), singular) is None
    broken = np.eye(p)
    broken[0, 0] = np.inf
    assert chi2_of_difference(np.ones(p), broken) is None


def test_figures_past_floats_range_are_no_figure_never_an_error() -> None:
    # Python's ** raises OverflowError where a product is inf (a fuzzed fit failed as internal so).
    assert rms_of_line(5, 1e200, 0.0, 10.0, 0.0, 0.0) is None  # the residual SD's square
    assert rms_of_line(5, 1.0, 1e200, 10.0, 1e200, 0.0) is None  # the offset's square
    assert rms_of_line(5, 1.0, 1.0, 10.0, 0.5, 0.25) == pytest.approx(math.sqrt((3 + 5 * 0.75**2 + 2.5) / 5))
    unset = {field.name: None for field in dataclasses.fields(Calibration)}
    huge = Calibration(**unset | {"se_w": 1e200, "se_b": 1.0, "cov_wb": 0.0})
    covariance = huge.covariance()
    assert covariance is not None and math.isinf(covariance[0, 0]) and covariance[1, 1] == 1.0
