"""shared/domain/calibration.py: the least-squares figures, the pre-flight, Student's t, degenerate data."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from shared.domain.calibration import (
    PredictionOutOfRange,
    Spread,
    data_stats,
    predict,
    student_t_quantile,
    warnings_for,
)
from tests.tolerance import param_close


def test_thermometer_figures(reference: dict[str, Any]) -> None:
    raw, scaled = data_stats([reference["t_u"]] * 2, [reference["t_c"]] * 2, [1.0, 0.1])
    ls = reference["least_squares"]
    for name in ("se_w", "se_b", "r2"):
        assert param_close(getattr(raw, name), ls[name])
    assert param_close(raw.w_opt, ls["w_raw"]) and param_close(raw.b_opt, ls["b_raw"])
    assert param_close(raw.lr_max, ls["lr_max_raw"]) and param_close(scaled.lr_max, ls["lr_max_scale_0.1"])
    # Scaling t_u changes the model's conditioning, not the raw-unit least-squares line.
    assert scaled.w_opt == pytest.approx(raw.w_opt, rel=1e-12)
    assert scaled.condition_number < raw.condition_number / 50


def test_against_numpy_least_squares_on_random_data() -> None:
    rng = np.random.default_rng(3)
    u = [rng.normal(50, 10, n).tolist() for n in (3, 17, 400)]
    c = [(0.5 * np.asarray(x) - 17 + rng.normal(0, 2, len(x))).tolist() for x in u]
    for stats, x, y in zip(data_stats(u, c, [1.0, 0.1, 2.0]), u, c, strict=True):
        a = np.column_stack([x, np.ones(len(x))])
        coef, sse, *_ = np.linalg.lstsq(a, y, rcond=None)
        cov = sse[0] / (len(x) - 2) * np.linalg.inv(a.T @ a)
        assert stats.w_opt == pytest.approx(coef[0], rel=1e-9)
        assert stats.b_opt == pytest.approx(coef[1], rel=1e-9)
        assert stats.se_w == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-9)
        assert stats.se_b == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-9)
        assert stats.cov_wb == pytest.approx(cov[0, 1], rel=1e-9)


@pytest.mark.parametrize(
    "p, dof, table",
    [
        (0.975, 9, 2.262157),
        (0.975, 1, 12.706205),
        (0.95, 30, 1.697261),
        (0.995, 3, 5.840909),
        (0.025, 9, -2.262157),
        (0.9995, 1, 636.619249),
        (0.99995, 1, 6366.197671),
    ],
)
def test_student_t_quantiles_match_the_tables(p: float, dof: int, table: float) -> None:
    assert student_t_quantile(p, dof) == pytest.approx(table, abs=2e-6)


def test_prediction_intervals_are_the_ols_formula() -> None:
    spread = Spread(n=11, residual_sd=1.9, t_u_mean=51.8, t_u_sxx=2833.14)
    got = predict(0.5, -17.0, [51.8, 90.0], interval=0.95, spread=spread)
    for u, c, lo, hi in zip([51.8, 90.0], got.t_c, got.lower, got.upper, strict=True):
        half = 2.262157 * 1.9 * math.sqrt(1 + 1 / 11 + (u - 51.8) ** 2 / 2833.14)
        assert c == 0.5 * u - 17.0 and hi - c == pytest.approx(half, rel=1e-6) and c - lo == pytest.approx(half)
    assert predict(0.5, -17.0, [1.0]).lower is None


@pytest.mark.parametrize(
    "t_u, interval, index",
    [
        ([1.0, 1e308, 2.0], None, 1),  # the line itself overflows
        ([5.7e16, 1.4e16, 1.2e227, -4.6e-278], 0.88, 2),  # (t_u - mean)² overflows (a fuzzer's find)
    ],
)
def test_predictions_past_float64_name_their_reading(t_u: list[float], interval: float | None, index: int) -> None:
    spread = Spread(n=11, residual_sd=1.9, t_u_mean=51.8, t_u_sxx=2833.14)
    with pytest.raises(PredictionOutOfRange) as raised:
        predict(5.0, -17.0, t_u, interval=interval, spread=spread)
    assert raised.value.index == index


def test_degenerate_data_has_no_invented_figures() -> None:
    equal, two = data_stats([[5.0, 5.0, 5.0], [1.0, 2.0]], [[1.0, 2.0, 3.0], [3.0, 5.0]], [1.0, 1.0])
    assert equal.w_opt is None and equal.condition_number is None and equal.se_w is None
    assert "slope is not determined" in warnings_for(equal, 0.01)[0]
    assert two.w_opt == pytest.approx(2.0) and two.se_w is None and two.residual_sd is None
