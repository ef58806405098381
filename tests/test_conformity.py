"""Conformity decisions on one point (shared/domain/conformity.py): JCGM 106:2012's worked example,
and each outcome of simple acceptance and of a guard band (ILAC G8:2019) reached by a constructed case."""

from __future__ import annotations

import pytest

from shared.domain.conformity import probability_of_conformity, verdict, worst


def test_jcgm_106_example_probability_of_conformity() -> None:
    # JCGM 106:2012, 7.3 (example): a measured value 13.6 with standard uncertainty 1.8 against the
    # tolerance limits 12.5 and 16.3: the conformance probability is 0.66 (0.6626 to four digits).
    assert round(probability_of_conformity(13.6, 1.8, 12.5, 16.3), 4) == 0.6626


def test_the_probability_is_symmetric_falls_off_outside_and_is_certain_without_uncertainty() -> None:
    assert probability_of_conformity(0.0, 1.0, -1.0, 1.0) == pytest.approx(0.682689492, abs=1e-9)
    assert probability_of_conformity(3.0, 1.0, -1.0, 1.0) < 0.03
    assert probability_of_conformity(0.5, 0.0, -1.0, 1.0) == 1.0
    assert probability_of_conformity(1.5, 0.0, -1.0, 1.0) == 0.0


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (0.0, "pass"),  # inside the limits narrowed by w = 2 × 0.1
        (0.85, "conditional pass"),  # inside the limits, within w of the upper one
        (-0.85, "conditional pass"),
        (1.15, "conditional fail"),  # outside the limits, within w of them
        (-1.15, "conditional fail"),
        (1.25, "fail"),  # outside the limits widened by w
        (-1.25, "fail"),
        (0.8, "pass"),  # on the narrowed limit: pass
        (1.2, "conditional fail"),  # on the widened limit: not yet a fail
    ],
)
def test_each_guard_band_outcome(error: float, expected: str) -> None:
    assert verdict(error, 0.1, -1.0, 1.0, "guard_band", k=2.0) == expected


def test_simple_acceptance_is_the_limits_alone_and_the_worst_point_decides() -> None:
    assert [verdict(e, 0.5, -1.0, 1.0, "simple") for e in (-1.0, 0.99, 1.01)] == ["pass", "pass", "fail"]
    assert worst(["pass", "conditional fail", "conditional pass"]) == "conditional fail"
    assert worst(["pass", "fail"]) == "fail" and worst([]) is None
