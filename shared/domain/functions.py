"""Calibration functions that are linear in their parameters after a change of variables (shared/
design/API.md, "Models beyond a line"): Callendar–Van Dusen for platinum resistance thermometers
(IEC 60751) and Steinhart–Hart for thermistors. numpy only; the engine's side is services/worker/
engine/models.Transformed, which takes its features from here so that both sides fit one function.

Each is fitted as y ≈ Σ c_j·f_j(v) + c_0 with a regressor v and a response y made from (t_u, t_c):
- Callendar–Van Dusen, in the response direction (IEC 60751 gives R from T): v = t_c (°C), y = t_u
  (Ω), features T, T² and, only where some training point lies below 0 °C, (T − 100)·T³ for T < 0
  (0 above: the standard's C term applies below 0 °C only). Its coefficients (R0·A, R0·B, R0·C, R0)
  are presented as A, B, C and R0, their covariance carried through the Jacobian of that map.
- Steinhart–Hart: v = ln t_u, y = 1/(t_c + 273.15) (kelvin), features L and L³: coefficients b, c, a.
  Stated u(t_c) weigh it as u(y) = u(t_c)/T² (first order at each reference value).
- Stated u(t_c) on Callendar–Van Dusen are the regressor's: each weighs the resistance by
  u(R) = |dR/dT|·u(T), the slope that of the unweighted fit (the effective-variance method in one
  step), kept in the fit's solution so that the engine weighs its loss the same.

Gradient descent runs on x = (v − shift)·scale, with the fit's normalize giving shift and scale as
for any model; `raw_map` is the exact linear map from model-space parameters to these coefficients.
Model-space features are Mᵀ·φ(v): for Steinhart–Hart, x and x³ + 3·shift·scale·x² (L³ re-expressed
about the shift, so the features are not nearly collinear with the constant); for Callendar–Van
Dusen, x, x² and scale⁴·(T − 100)·T³ (T < 0).

Predictions run from the reading t_u to the reference value t_c: Callendar–Van Dusen inverts R(T)
(the quadratic's root, then Newton's method where the C term applies), Steinhart–Hart evaluates
1/y − 273.15. Each gives the derivatives of t_c with respect to the coefficients, to t_u and to the
fitted response, for the law of propagation of uncertainty (GUM, first order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

KELVIN = 273.15  # 0 °C in kelvin
CVD_RANGE = (-200.0, 850.0)  # IEC 60751's range of the equation, °C
_NEWTON_STEPS = 30


@dataclass(frozen=True)
class Forward:
    """Predicted t_c at each reading (P,), with its derivatives: to the coefficients (P, p), to t_u
    (P,), and to the fitted response at that point (P,), which carries the residual scatter."""

    t_c: np.ndarray
    d_coefficients: np.ndarray
    d_t_u: np.ndarray
    d_response: np.ndarray


class Function:
    """What calib needs of a transformed calibration function."""

    kind: ClassVar[str]
    names: tuple[str, ...]  # the coefficients, in the engine's order (features, then the constant)

    @property
    def size(self) -> int:
        return len(self.names)

    def regressor(self, t_u: np.ndarray, t_c: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def response(self, t_u: np.ndarray, t_c: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def design(self, v: np.ndarray) -> np.ndarray:
        """(P,) regressor values → (P, p): the features, then 1."""
        raise NotImplementedError

    def raw_map(self, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """(B, p, p): model-space parameters → coefficients, for x = (v − shift)·scale."""
        raise NotImplementedError

    def model_design(self, v: np.ndarray, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """(P, p) model-space features of each point (shift, scale: each point's fit's): Mᵀ·φ(v)."""
        found: np.ndarray = np.einsum("pji,pj->pi", self.raw_map(shift, scale), self.design(v))
        return found

    def presented(self, coefficients: np.ndarray) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
        """The parameters users read, their values and the Jacobian of coefficients → parameters."""
        return self.names, coefficients, np.eye(self.size)

    def presented_covariance(self, coefficients: np.ndarray, covariance: np.ndarray) -> np.ndarray:
        """The coefficients' covariance carried to the presented parameters, J·V·Jᵀ (first order)."""
        _, _, jacobian = self.presented(coefficients)
        found: np.ndarray = jacobian @ covariance @ jacobian.T
        return found

    def forward(self, coefficients: np.ndarray, t_u: np.ndarray) -> Forward:
        raise NotImplementedError

    # Whether carrying u(t_c) to the response needs the function's slope (a first, unweighted fit).
    weighs_by_slope: ClassVar[bool] = False

    def response_uncertainty(
        self, t_u: np.ndarray, t_c: np.ndarray, u_t_c: np.ndarray, first: np.ndarray | None = None
    ) -> np.ndarray:
        """The stated u(t_c) carried to the fitted response, to first order; `first`: each point's
        coefficients of the unweighted fit, (P, p), where weighs_by_slope."""
        raise NotImplementedError


class CallendarVanDusen(Function):
    kind = "callendar_van_dusen"

    def __init__(self, below_zero: bool) -> None:
        self.below_zero = below_zero
        self.names = ("R0A", "R0B", "R0C", "R0") if below_zero else ("R0A", "R0B", "R0")

    def regressor(self, t_u: np.ndarray, t_c: np.ndarray) -> np.ndarray:
        return np.asarray(t_c, dtype=np.float64)

    def response(self, t_u: np.ndarray, t_c: np.ndarray) -> np.ndarray:
        return np.asarray(t_u, dtype=np.float64)

    def design(self, v: np.ndarray) -> np.ndarray:
        t = np.asarray(v, dtype=np.float64)
        columns = [t, t * t]
        if self.below_zero:
            columns.append(_c_term(t))
        return np.stack([*columns, np.ones_like(t)], 1)

    def raw_map(self, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
        c, s = np.asarray(shift, dtype=np.float64), np.asarray(scale, dtype=np.float64)
        out = np.zeros((len(c), self.size, self.size))
        last = self.size - 1
        out[:, 0, 0], out[:, last, 0] = s, -s * c  # x = s·T − s·c
        out[:, 0, 1], out[:, 1, 1], out[:, last, 1] = -2 * c * s * s, s * s, (c * s) ** 2  # x²
        if self.below_zero:
            out[:, 2, 2] = s**4  # scale⁴·(T − 100)·T³, degree 4 in T like the term itself
        out[:, last, last] = 1.0
        return out

    def presented(self, coefficients: np.ndarray) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
        """(R0·A, R0·B, [R0·C], R0) → (A, B, [C], R0), dividing by R0."""
        r0 = coefficients[-1]
        p = self.size
        # R0 can be 0 or tiny (data no PRT gives): A, B, C are then not finite, and are served as
        # null (shared/store/presenters.py), not warned about.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            values = np.append(coefficients[:-1] / r0, r0)
            jacobian = np.zeros((p, p))
            for j in range(p - 1):
                jacobian[j, j], jacobian[j, -1] = 1 / r0, -coefficients[j] / (r0 * r0)
        jacobian[-1, -1] = 1.0
        names = ("A", "B", "C", "R0") if self.below_zero else ("A", "B", "R0")
        return names, values, jacobian

    def forward(self, coefficients: np.ndarray, t_u: np.ndarray) -> Forward:
        """The temperature whose resistance is t_u: the root of c_T2·T² + c_T·T + c_0 − R nearest the
        line's (written so that nothing cancels when c_T2 is small), then Newton's method with the C term."""
        r = np.asarray(t_u, dtype=np.float64)
        c_t, c_t2, c_0 = coefficients[0], coefficients[1], coefficients[-1]
        with np.errstate(all="ignore"):
            excess = r - c_0
            t = 2 * excess / (c_t + np.sqrt(c_t * c_t + 4 * c_t2 * excess))
            if self.below_zero:
                for _ in range(_NEWTON_STEPS):
                    t = t - (self.design(t) @ coefficients - r) / self._slope(coefficients, t)
            slope = self._slope(coefficients, t)
            return Forward(t, -self.design(t) / slope[:, None], 1 / slope, 1 / slope)

    def _slope(self, coefficients: np.ndarray, t: np.ndarray) -> np.ndarray:
        """dR/dT: `coefficients` one vector (p,), or one per point (P, p)."""
        c = coefficients.T
        slope: np.ndarray = c[0] + 2 * c[1] * t
        if self.below_zero:
            slope = slope + c[2] * np.where(t < 0, 4 * t**3 - 300 * t**2, 0.0)
        return slope

    weighs_by_slope = True

    def response_uncertainty(
        self, t_u: np.ndarray, t_c: np.ndarray, u_t_c: np.ndarray, first: np.ndarray | None = None
    ) -> np.ndarray:
        """u(R) = |dR/dT|·u(T): the reference temperature's uncertainty carried to the resistance through
        the slope of the unweighted fit (`first`), the effective-variance method in one step, so that
        the weights are fixed before the weighted fit and the engine's loss uses the same ones."""
        assert first is not None, "Callendar–Van Dusen weighs by the unweighted fit's slope"
        found: np.ndarray = np.abs(self._slope(first, np.asarray(t_c, dtype=np.float64))) * np.asarray(u_t_c)
        return found


class SteinhartHart(Function):
    kind = "steinhart_hart"
    names = ("b", "c", "a")

    def regressor(self, t_u: np.ndarray, t_c: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.log(np.asarray(t_u, dtype=np.float64))

    def response(self, t_u: np.ndarray, t_c: np.ndarray) -> np.ndarray:
        return 1 / (np.asarray(t_c, dtype=np.float64) + KELVIN)

    def response_uncertainty(
        self, t_u: np.ndarray, t_c: np.ndarray, u_t_c: np.ndarray, first: np.ndarray | None = None
    ) -> np.ndarray:
        """u(1/T) = u(T)/T² (first order: the law of propagation at the reference value itself, which
        does not depend on the fit, so that the weights are the data's)."""
        kelvin = np.asarray(t_c, dtype=np.float64) + KELVIN
        found: np.ndarray = np.asarray(u_t_c, dtype=np.float64) / (kelvin * kelvin)
        return found

    def design(self, v: np.ndarray) -> np.ndarray:
        ln = np.asarray(v, dtype=np.float64)
        return np.stack([ln, ln**3, np.ones_like(ln)], 1)

    def raw_map(self, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """x = s·(L − c) and x³ + 3·c·s·x² = s³·(L³ − 3c²·L + 2c³)."""
        c, s = np.asarray(shift, dtype=np.float64), np.asarray(scale, dtype=np.float64)
        out = np.zeros((len(c), 3, 3))
        out[:, 0, 0], out[:, 2, 0] = s, -s * c
        out[:, 0, 1], out[:, 1, 1], out[:, 2, 1] = -3 * c * c * s**3, s**3, 2 * c**3 * s**3
        out[:, 2, 2] = 1.0
        return out

    def forward(self, coefficients: np.ndarray, t_u: np.ndarray) -> Forward:
        r = np.asarray(t_u, dtype=np.float64)
        with np.errstate(all="ignore"):
            ln = np.log(r)
            design = self.design(ln)
            y = design @ coefficients
            inverse_square = -1 / (y * y)
            d_ln = coefficients[0] + 3 * coefficients[1] * ln * ln
            return Forward(1 / y - KELVIN, design * inverse_square[:, None], inverse_square * d_ln / r, inverse_square)


def _c_term(t: np.ndarray) -> np.ndarray:
    return np.where(t < 0, (t - 100) * t**3, 0.0)


def function_of(stored: dict[str, Any] | None) -> Function | None:
    """The function of a fit's stored `model` column; None for the line and polynomials."""
    if stored is None:
        return None
    if stored["kind"] == CallendarVanDusen.kind:
        return CallendarVanDusen(bool(stored.get("below_zero")))
    if stored["kind"] == SteinhartHart.kind:
        return SteinhartHart()
    return None
