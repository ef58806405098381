"""The models the engine fits, behind one protocol: parameters are a vector, in `names` order.

Every calibration function calib fits is linear in its parameters in the form it is fitted in:
t_c ≈ θ_1·f_1(x) + … + θ_q·f_q(x) + θ_0, with x the model-space input ((t_u − shift)·scale) and
f the model's features (x for the book's line; x, x², …, x^d for a polynomial). So the mean
squared error of a fit depends on its data only through the averages of its features and of y,
taken about their means (the constant's coefficient θ_0 absorbs them, so nothing cancels when x
or y is large against its spread):

    L(θ) = θ_fᵀ C θ_f − 2 cᵀ θ_f + vyy + r²,   r = mᵀ θ_f + θ_0 − my

(m, my the means, C, c, vyy the covariances). Its Hessian 2·E[φφᵀ] (φ = (f, 1)) is constant, so
gradient descent is a linear recurrence, solved in closed form by services/worker/engine/
closed_form.py from the eigen-decomposition a model's `spectrum` gives (services/worker/engine/
spectra.py): the line keeps its exact 2×2 closed form, every other model takes torch's `eigh`.

A new linear-in-parameters model is a subclass of `LinearInParameters` with its features and
names, and its entry in MODELS.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from services.worker.engine.series import Moments, SeriesBatch, loss_at
from services.worker.engine.spectra import GramSpectrum, LineSpectrum, Spectrum, gram_hessian
from shared.domain.functions import CallendarVanDusen, Function, SteinhartHart


@dataclass(frozen=True)
class FeatureMoments:
    """Per fit: the means of the features (B, q) and of y (B,), the features' covariance (B, q, q),
    their covariance with y (B, q), and the variance of y (B,)."""

    mean_f: torch.Tensor
    mean_y: torch.Tensor
    cov_ff: torch.Tensor
    cov_fy: torch.Tensor
    var_y: torch.Tensor

    def as_tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.mean_f, self.mean_y, self.cov_ff, self.cov_fy, self.var_y)


class Model:
    """What the engine needs of a model: its parameter names (the vector's order: each feature's
    coefficient, then the constant), the averages of a batch its loss depends on, its loss at
    given parameters, and the eigen-decomposition of its loss's Hessian."""

    kind: ClassVar[str]
    names: tuple[str, ...]
    # Presented as the book's line (w, b and the line's columns), whatever its loss.
    is_line: ClassVar[bool] = False

    @property
    def size(self) -> int:
        return len(self.names)

    def start(self, w0: torch.Tensor, b0: torch.Tensor) -> torch.Tensor:
        """The book's start (w = w0, b = b0) for this model, (B, p): the first feature's coefficient
        w0, the constant b0, every other coefficient 0."""
        theta0 = torch.zeros((w0.shape[0], self.size), dtype=w0.dtype, device=w0.device)
        theta0[:, 0], theta0[:, -1] = w0, b0
        return theta0

    def moments(self, batch: SeriesBatch) -> Any:
        raise NotImplementedError

    def residuals(self, batch: SeriesBatch, theta: torch.Tensor) -> torch.Tensor:
        """t_p − y at every point (P,), each fit with its parameters theta (B, p), computed as the
        book's loop computes them."""
        raise NotImplementedError

    def loss_at(self, moments: Any, theta: torch.Tensor) -> torch.Tensor:
        """The mean squared error at theta, (B, p) or (B, L, p): (B,) or (B, L)."""
        raise NotImplementedError

    def gradient_at(self, moments: Any, theta: torch.Tensor) -> torch.Tensor:
        """The loss's gradient at theta (B, p)."""
        raise NotImplementedError

    def hessian(self, moments: Any) -> torch.Tensor:
        """The loss's (constant) Hessian, (B, p, p)."""
        raise NotImplementedError

    def spectrum(self, moments: Any, theta0: torch.Tensor, learning_rate: torch.Tensor) -> Spectrum:
        raise NotImplementedError

    def predict(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """t_p for model-space inputs x (B, N) with each fit's parameters theta (B, p)."""
        raise NotImplementedError

    def raw_map(self, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """The linear map (B, p, p) from model-space parameters, x = (t_u − shift)·scale, to the same
        function's parameters in t_u (raw units)."""
        raise NotImplementedError


class Line(Model):
    """The book's t_p = w·x + b. Its five averages and its exact 2×2 closed form are the ones every
    published figure of calib was computed with, so they stay as they were."""

    kind = "line"
    names = ("w", "b")
    is_line = True

    def moments(self, batch: SeriesBatch) -> Moments:
        return batch.moments()

    def residuals(self, batch: SeriesBatch, theta: torch.Tensor) -> torch.Tensor:
        return theta[batch.seg, 0] * batch.x + theta[batch.seg, 1] - batch.y

    def loss_at(self, moments: Moments, theta: torch.Tensor) -> torch.Tensor:
        return loss_at(moments, theta[..., 0], theta[..., 1])

    def gradient_at(self, moments: Moments, theta: torch.Tensor) -> torch.Tensor:
        mx, my, vxx, vxy, _ = moments
        w, b = theta[:, 0], theta[:, 1]
        r = w * mx + b - my
        return torch.stack([2 * (w * vxx - vxy + r * mx), 2 * r], 1)

    def hessian(self, moments: Moments) -> torch.Tensor:
        mx, _, vxx, _, _ = moments
        hwb = 2 * mx
        return torch.stack(
            [torch.stack([2 * (vxx + mx * mx), hwb], 1), torch.stack([hwb, torch.full_like(mx, 2.0)], 1)], 1
        )

    def spectrum(self, moments: Moments, theta0: torch.Tensor, learning_rate: torch.Tensor) -> Spectrum:
        return LineSpectrum(moments, theta0, learning_rate)

    def predict(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return theta[:, 0:1] * x + theta[:, 1:2]

    def raw_map(self, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """w_raw = s·w, b_raw = b − s·shift·w for x = (t_u − shift)·s: (B, 2, 2)."""
        zero, one = torch.zeros_like(scale), torch.ones_like(scale)
        return torch.stack([torch.stack([scale, zero], 1), torch.stack([-scale * shift, one], 1)], 1)


class DistanceLine(Line):
    """The line by generalized distance regression (ISO/TS 28037 clause 7), u(t_u) and u(t_c) stated:
    the loss is Σ r²/(u²(t_c) + w²·u²(x)) / Σ 1/u²(t_c), r = w·x + b − y, which with the batch's
    weights (1/u²(t_c), averaging 1) is the weighted mean of r²/(1 + w²·q), q = (u(x)/u(t_c))²: the
    weighted mean square where u(t_u) is 0. Not quadratic in w, so it has no closed form: every
    optimizer runs it epoch by epoch (services/worker/runner.py), on its own loss and gradient."""

    def moments(self, batch: SeriesBatch) -> SeriesBatch:  # type: ignore[override]
        return batch

    def loss_at(self, batch: SeriesBatch, theta: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        r, d, _ = self._parts(batch, theta)
        return batch.segment_mean(r * r / d)

    def gradient_at(self, batch: SeriesBatch, theta: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        r, d, q = self._parts(batch, theta)
        w = theta[batch.seg, 0]
        by_w = batch.segment_mean(2 * r * batch.x / d - r * r * 2 * w * q / (d * d))
        return torch.stack([by_w, batch.segment_mean(2 * r / d)], 1)

    def _parts(self, batch: SeriesBatch, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if theta.dim() != 2:
            raise ValueError("a distance regression's loss is taken at one parameter vector per fit")
        assert batch.reading_ratio is not None, "generalized distance regression needs u(t_u)"
        w, b, q = theta[batch.seg, 0], theta[batch.seg, 1], batch.reading_ratio
        r = w * batch.x + b - batch.y
        return r, 1 + w * w * q, q

    def hessian(self, moments: Any) -> torch.Tensor:
        raise NotImplementedError("a distance regression has no constant Hessian: it runs epoch by epoch")

    def spectrum(self, moments: Any, theta0: torch.Tensor, learning_rate: torch.Tensor) -> Spectrum:
        raise NotImplementedError("a distance regression has no closed form: it runs epoch by epoch")


class LinearInParameters(Model):
    """θ_1·f_1(x) + … + θ_q·f_q(x) + θ_0 for the features `features` gives."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(...,) model-space inputs → (..., q)."""
        raise NotImplementedError

    def point_features(self, batch: SeriesBatch) -> torch.Tensor:
        """(P, q): every point's features."""
        return self.features(batch.x)

    def moments(self, batch: SeriesBatch) -> FeatureMoments:
        f = self.point_features(batch)  # (P, q)
        mean_f = batch.segment_mean(f)
        mean_y = batch.segment_mean(batch.y)
        df = f - mean_f[batch.seg]
        dy = batch.y - mean_y[batch.seg]
        cov_ff = batch.segment_mean(df[:, :, None] * df[:, None, :])
        cov_fy = batch.segment_mean(df * dy[:, None])
        return FeatureMoments(mean_f, mean_y, cov_ff, cov_fy, batch.segment_mean(dy * dy))

    def residuals(self, batch: SeriesBatch, theta: torch.Tensor) -> torch.Tensor:
        at = theta[batch.seg]
        return (self.point_features(batch) * at[:, :-1]).sum(-1) + at[:, -1] - batch.y

    def loss_at(self, moments: FeatureMoments, theta: torch.Tensor) -> torch.Tensor:
        m = moments
        lead = (slice(None),) + (None,) * (theta.dim() - 2)  # a fit's averages against its L parameter vectors
        coef, const = theta[..., :-1], theta[..., -1]
        r = (coef * m.mean_f[lead]).sum(-1) + const - m.mean_y[lead]
        quadratic = torch.einsum("...i,...ij,...j->...", coef, m.cov_ff[lead], coef)
        loss = quadratic - 2 * (coef * m.cov_fy[lead]).sum(-1) + m.var_y[lead] + r * r
        # A mean square is not negative: at an exact fit the sum above is rounding noise of either sign.
        return loss.clamp_min(0.0)

    def gradient_at(self, moments: FeatureMoments, theta: torch.Tensor) -> torch.Tensor:
        m = moments
        coef, const = theta[:, :-1], theta[:, -1]
        r = (coef * m.mean_f).sum(1) + const - m.mean_y
        by_feature = torch.einsum("bij,bj->bi", m.cov_ff, coef) - m.cov_fy + r[:, None] * m.mean_f
        return 2 * torch.cat([by_feature, r[:, None]], 1)

    def hessian(self, moments: FeatureMoments) -> torch.Tensor:
        return gram_hessian(moments.mean_f, moments.cov_ff)

    def spectrum(self, moments: FeatureMoments, theta0: torch.Tensor, learning_rate: torch.Tensor) -> Spectrum:
        return GramSpectrum(moments.as_tensors(), theta0, learning_rate)

    def predict(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (self.features(x) * theta[:, None, :-1]).sum(-1) + theta[:, None, -1]


class Polynomial(LinearInParameters):
    """a0 + a1·x + … + ad·x^d (degree 2 is the chapter's exercise, w2·x² + w1·x + b); the vector is
    (a1, …, ad, a0), the constant last as for every model."""

    kind = "polynomial"

    def __init__(self, degree: int) -> None:
        if not 1 <= degree <= 5:
            raise ValueError("a polynomial's degree is 1 to 5")
        self.degree = degree
        self.names = (*(f"a{k}" for k in range(1, degree + 1)), "a0")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x**k for k in range(1, self.degree + 1)], -1)

    def raw_map(self, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """The linear map raw_coefficients is, (B, p, p): its columns are the images of the unit vectors."""
        size = self.size
        unit = torch.eye(size, dtype=scale.dtype, device=scale.device)
        columns = [self.raw_coefficients(unit[i].expand(scale.shape[0], -1), scale, shift) for i in range(size)]
        return torch.stack(columns, 2)

    def raw_coefficients(self, theta: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """(B, p) model-space parameters → the same polynomial in t_u, x = (t_u − shift)·scale, in the
        vector's order: Σ_k a_k·scale^k·Σ_j C(k, j)·t_u^j·(−shift)^(k−j)."""
        d = self.degree
        by_power = torch.cat([theta[:, -1:], theta[:, :-1]], 1)  # a0, a1, …, ad
        raw = torch.zeros_like(by_power)
        for k in range(d + 1):
            for j in range(k + 1):
                raw[:, j] += by_power[:, k] * scale**k * math.comb(k, j) * (-shift) ** (k - j)
        return torch.cat([raw[:, 1:], raw[:, :1]], 1)


class Transformed(LinearInParameters):
    """A function fitted after a change of variables (Callendar–Van Dusen, Steinhart–Hart): the batch
    holds its regressor and response (x = (v − shift)·scale, y), and its model-space features Mᵀ·φ(v)
    and raw map M come from shared/domain/functions.py, so the API's least squares and the engine fit
    one function."""

    def __init__(self, function: Function) -> None:
        self.function = function
        self.kind = function.kind  # type: ignore[misc]
        self.names = function.names

    def point_features(self, batch: SeriesBatch) -> torch.Tensor:
        assert batch.input_scale is not None and batch.input_shift is not None
        scale, shift = batch.input_scale[batch.seg], batch.input_shift[batch.seg]
        v = batch.x / scale + shift
        design = self.function.model_design(*(t.cpu().numpy() for t in (v, shift, scale)))
        return torch.from_numpy(design[:, :-1]).to(batch.x.device)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("a transformed function's features need each point's fit: point_features")

    def raw_map(self, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        found = self.function.raw_map(shift.cpu().numpy(), scale.cpu().numpy())
        return torch.from_numpy(found).to(scale.device)


LINE = Line()
DISTANCE_LINE = DistanceLine()


# Each model by the kind a fit names (shared/design/API.md, "Models beyond a line"), built from its options.
MODELS: dict[str, Callable[..., Model]] = {
    "line": lambda: LINE,
    "polynomial": lambda degree: Polynomial(int(degree)),
    "callendar_van_dusen": lambda below_zero: Transformed(CallendarVanDusen(bool(below_zero))),
    "steinhart_hart": lambda: Transformed(SteinhartHart()),
}


def model_of(kind: str, **options: Any) -> Model:
    """The model a fit names, with its options (a polynomial's degree)."""
    if kind not in MODELS:
        raise ValueError(f"no model {kind!r}")
    return MODELS[kind](**options)
