"""Did an instrument pass? Conformity decisions on one point's error, as API.md defines them.

At a point, the error e of the instrument as found (the reference value less what the previous
calibration made of the reading) and its standard uncertainty u are judged against the acceptable
limits [lower, upper] (in t_c units):
- the probability of conformity (JCGM 106:2012, 7.3, a normal distribution for the error):
      p = Φ((upper − e)/u) − Φ((lower − e)/u);
- simple acceptance (ILAC G8:2019, 4.2.1): `pass` if lower ≤ e ≤ upper, else `fail`;
- a guard band w = k·u (ILAC G8 4.2.2, k the coverage factor): `pass` inside the limits narrowed
  by w, `fail` outside them widened by w, and between: `conditional pass` inside the limits,
  `conditional fail` outside them.
A calibration's verdict is its worst point's, in the order pass < conditional pass < conditional
fail < fail. A point where the previous calibration gives no finite value (outside its function's
domain, or past float's range) cannot be judged: it fails, its figures null.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np

Verdict = Literal["pass", "conditional pass", "conditional fail", "fail"]
Rule = Literal["simple", "guard_band"]
WORST_LAST: tuple[Verdict, ...] = ("pass", "conditional pass", "conditional fail", "fail")


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def judgeable(error: float, u: float) -> bool:
    """Whether a point can be judged: a finite error and an uncertainty that is a number. Not where the
    previous calibration gives no value at the new reading (a thermistor's function at t_u ≤ 0, a
    polynomial past float's range): conformity cannot be shown there, so the point fails."""
    return math.isfinite(error) and not math.isnan(u)


def probability_of_conformity(error: float, u: float, lower: float, upper: float) -> float:
    """JCGM 106 7.3: the probability that the error lies within the limits; with u = 0, 1 or 0;
    NaN (served as null) at a point that cannot be judged."""
    if not judgeable(error, u):
        return math.nan
    if u == 0:
        return 1.0 if lower <= error <= upper else 0.0
    return normal_cdf((upper - error) / u) - normal_cdf((lower - error) / u)


def verdict(
    error: float, u: float, lower: float, upper: float, rule: Literal["simple", "guard_band"], k: float = 2.0
) -> Verdict:
    """The decision at one point under `rule`; `fail` where it cannot be judged (judgeable)."""
    if not judgeable(error, u):
        return "fail"
    inside = lower <= error <= upper
    if rule == "simple":
        return "pass" if inside else "fail"
    w = k * u
    if lower + w <= error <= upper - w:
        return "pass"
    if error < lower - w or error > upper + w:
        return "fail"
    return "conditional pass" if inside else "conditional fail"


def worst(verdicts: Iterable[Verdict]) -> Verdict | None:
    """A calibration's verdict: its worst point's (None without points)."""
    found = [WORST_LAST.index(v) for v in verdicts]
    return WORST_LAST[max(found)] if found else None


def decide(
    t_u: np.ndarray,
    t_c: np.ndarray,
    u_t_c: np.ndarray,
    found: np.ndarray,
    u_found: np.ndarray,
    limits: tuple[float, float],
    rule: Literal["simple", "guard_band"],
    k: float,
) -> dict[str, Any]:
    """The previous calibration as found at a new calibration's points (API.md's decision): at each point
    e = t_c − f_prev(t_u), u = sqrt(u_t_c² + u²(f_prev(t_u))), the probability of conformity and the
    verdict; and the calibration's verdict, its worst point's. `found`: f_prev(t_u) at each point,
    `u_found` its standard uncertainty from the previous calibration's covariance (0 where it has none),
    as shared/store/drift.Calibration.read gives them for any model."""
    with np.errstate(all="ignore"):  # a previous calibration without a value here: judgeable says so
        error = t_c - found
        u = np.sqrt(u_t_c * u_t_c + u_found * u_found)
    lower, upper = limits
    verdicts = [verdict(float(e), float(ui), lower, upper, rule, k) for e, ui in zip(error, u, strict=True)]
    points = [
        {
            "t_u": float(reading),
            "t_c": float(reference),
            "error": float(e),
            "u": float(ui),
            "probability_of_conformity": probability_of_conformity(float(e), float(ui), lower, upper),
            "verdict": judged,
        }
        for reading, reference, e, ui, judged in zip(t_u, t_c, error, u, verdicts, strict=True)
    ]
    return {"points": points, "verdict": worst(verdicts)}
