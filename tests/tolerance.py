"""The tolerances of thermometer.json: losses 1e-5 relative, parameters 1e-4 relative.

The book prints parameters with four decimals (b = -0.0149), so a parameter may
also differ by half a unit of the last printed digit.
"""

from __future__ import annotations

from typing import Any

LOSS_RTOL = 1e-5
PARAM_RTOL = 1e-4


def printed_half_unit(value: float) -> float:
    text = repr(value)
    decimals = len(text.split(".")[1]) if "." in text and "e" not in text else 0
    return 0.5 * 10.0**-decimals


def loss_close(actual: float, expected: float) -> bool:
    return abs(actual - expected) <= LOSS_RTOL * abs(expected)


def printed_loss_close(actual: float, expected: float) -> bool:
    """For a loss the book prints with fewer digits (the split run's 3.0125): 1e-5 relative,
    or half a unit of its last printed digit."""
    return abs(actual - expected) <= max(LOSS_RTOL * abs(expected), printed_half_unit(expected))


def param_close(actual: float, expected: float) -> bool:
    return abs(actual - expected) <= PARAM_RTOL * abs(expected) + printed_half_unit(expected)


def gd_cases(reference: dict[str, Any]) -> list[dict[str, Any]]:
    return [case for case in reference["cases"] if case["request"]["optimizer"] == "gd"]
