"""The eigen-decomposition gradient descent is solved in, per fit: the optimum θ*, the least-squares
loss L*, the Hessian's eigenvalues λ_i (descending) and eigenvectors (the columns of R), and the
start's coordinates z = Rᵀ(θ_0 − θ*) in that basis. Each coordinate shrinks or grows by
ρ_i = 1 − lr·λ_i per epoch, so after k updates θ_k = θ* + R·(z ρ^k) and the loss before the k-th
update is L* + Σ_i ½ λ_i z_i² ρ_i^(2(k−1)) (services/worker/engine/closed_form.py).

`LineSpectrum` is the book's line in closed form (the 2×2 Hessian's eigenvalues by formula): every
figure calib has published comes from it, bit for bit. `GramSpectrum` is any model linear in its
parameters (services/worker/engine/models.py), through torch's batched `eigh`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# The rank rule of the exact least squares the service reports (a direction whose variance is
# rounding noise against the largest is left out), so the engine's optimum is the same one.
from shared.domain.least_squares import RANK_RTOL

# vxx this small against E[x^2] is rounding noise: all t_u equal, H singular.
_SINGULAR = 1e-20

Loss = Callable[[torch.Tensor], torch.Tensor]


class Spectrum:
    theta_opt: torch.Tensor  # (B, p)
    loss_opt: torch.Tensor  # (B,)
    curvature: torch.Tensor  # (B, p), the Hessian's eigenvalues, largest first
    basis: torch.Tensor  # (B, p, p), its eigenvectors as columns
    z: torch.Tensor  # (B, p)
    rho: torch.Tensor  # (B, p)
    excess: torch.Tensor  # (B, p), ½ λ z²: the loss's excess over L* along each eigenvector at the start
    # Averages past float64's range (readings near 1e308): no epoch of such a fit has a finite loss.
    unrepresentable: torch.Tensor  # (B,) bool

    def _settle(self, learning_rate: torch.Tensor) -> None:
        self.rho = 1 - learning_rate[:, None] * self.curvature
        self.excess = 0.5 * self.curvature * self.z * self.z

    def start_at_optimum(self, fits: torch.Tensor, theta0: torch.Tensor) -> None:
        """These fits' start fits their data exactly (every residual 0, as the book's loop computes
        it): the loop's gradient is exactly 0 there and it never moves, whatever the learning rate.
        The closed form's optimum, rounded, would sit an ulp away and an unstable rate would blow
        that ulp up into a divergence: their optimum is their start."""
        keep = fits[:, None]
        self.theta_opt = torch.where(keep, theta0, self.theta_opt)
        self.z = torch.where(keep, torch.zeros_like(self.z), self.z)
        self.loss_opt = torch.where(fits, torch.zeros_like(self.loss_opt), self.loss_opt)
        self.excess = torch.where(keep, torch.zeros_like(self.excess), self.excess)

    def params_after(self, updates: torch.Tensor) -> torch.Tensor:
        """θ after the given number of updates: (B, p) for one count per fit, (B, L, p) for L counts."""
        k = updates.to(torch.float64)
        if k.dim() == 1:
            moved = _moved(self.z, torch.pow(self.rho, k[:, None]))  # (B, p)
            theta = self.theta_opt.clone()
            for i in range(moved.shape[1]):  # one eigenvector at a time: the sum's order is fixed
                theta = theta + self.basis[:, :, i] * moved[:, i : i + 1]
            return theta
        moved = _moved(self.z[:, None, :], torch.pow(self.rho[:, None, :], k[:, :, None]))  # (B, L, p)
        theta = self.theta_opt[:, None, :].expand(-1, k.shape[1], -1)
        for i in range(moved.shape[2]):
            theta = theta + self.basis[:, None, :, i] * moved[:, :, i : i + 1]
        return theta

    def validation_terms(
        self, held_out_loss: Loss, gradient: torch.Tensor, hessian: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The validation loss before epoch k as V* + Σ_t coefficient_t · base_t^(k−1): its value V* at
        θ*, then with d = R·(z ρ^(k−1)), the linear terms h_i z_i ρ_i^(k−1) (h = Rᵀ∇V) and the quadratic
        ones ½ M_ij z_i z_j (ρ_i ρ_j)^(k−1) (M = Rᵀ H_val R). `gradient` (B, p) and `hessian` (B, p, p)
        are the validation loss's at θ*."""
        at_opt = held_out_loss(self.theta_opt)
        h = torch.einsum("bji,bj->bi", self.basis, gradient)
        m = torch.einsum("bji,bjk,bkl->bil", self.basis, hessian, self.basis)
        bases, coefficients = [], []
        p = self.z.shape[1]
        for i in range(p):
            bases.append(self.rho[:, i])
            coefficients.append(h[:, i] * self.z[:, i])
        for i in range(p):
            for j in range(i, p):
                weight = 0.5 if i == j else 1.0
                bases.append(self.rho[:, i] * self.rho[:, j])
                coefficients.append(weight * m[:, i, j] * self.z[:, i] * self.z[:, j])
        return at_opt, torch.stack(bases, 1), torch.stack(coefficients, 1)


class LineSpectrum(Spectrum):
    """The line's Hessian H = 2 [[E x², E x], [E x, 1]] decomposed in closed form from the five
    averages (series.Moments), with the rotation angle φ of its eigenvectors."""

    def __init__(
        self,
        moments: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
        theta0: torch.Tensor,
        learning_rate: torch.Tensor,
    ) -> None:
        self.moments = moments
        mx, my, vxx, vxy, vyy = moments
        sxx = vxx + mx * mx
        # Readings near float64's limit make an average inf or NaN, and the power series
        # would then hide that epoch 1's loss is not finite: such a fit diverges at 1.
        self.unrepresentable = ~torch.stack([mx, my, vxx, vxy, vyy]).isfinite().all(0)

        singular = vxx <= _SINGULAR * sxx
        safe_vxx = torch.where(singular, torch.ones_like(vxx), vxx)
        # The optimum; for singular data the minimum-norm one (b + w*mean(x) = mean(y)).
        w_opt = torch.where(singular, my * mx / (mx * mx + 1), vxy / safe_vxx)
        b_opt = torch.where(singular, my / (mx * mx + 1), my - (vxy / safe_vxx) * mx)
        self.loss_opt = torch.where(singular, vyy, vyy - vxy * vxy / safe_vxx).clamp_min(0)

        # Eigen-decomposition of H = [[a, c], [c, d]] in closed form.
        a, c, d = 2 * sxx, 2 * mx, torch.full_like(mx, 2.0)
        half_diff = (a - d) / 2
        lam1 = (a + d) / 2 + torch.hypot(half_diff, c)
        # det/l1 instead of the difference, which cancels badly when H is ill-conditioned.
        lam2 = torch.where(singular, torch.zeros_like(lam1), 4 * vxx / lam1)
        phi = 0.5 * torch.atan2(2 * c, a - d)
        self.cos, self.sin = torch.cos(phi), torch.sin(phi)

        ew, eb = theta0[:, 0] - w_opt, theta0[:, 1] - b_opt
        self.z = torch.stack([self.cos * ew + self.sin * eb, -self.sin * ew + self.cos * eb], 1)
        self.theta_opt = torch.stack([w_opt, b_opt], 1)
        self.curvature = torch.stack([lam1, lam2], 1)
        self.basis = torch.stack([torch.stack([self.cos, self.sin], 1), torch.stack([-self.sin, self.cos], 1)], 2)
        self._settle(learning_rate)

    def params_after(self, updates: torch.Tensor) -> torch.Tensor:
        # The line's published figures were computed as w* + cos z1 ρ1^k − sin z2 ρ2^k: kept as written.
        k = updates.to(torch.float64)

        def per_fit(t: torch.Tensor) -> torch.Tensor:
            # Contiguous, as they were: torch's vector and strided kernels of pow may differ in the last bit.
            t = t.contiguous()
            return t if k.dim() == 1 else t[:, None]

        z1 = _moved(per_fit(self.z[:, 0]), torch.pow(per_fit(self.rho[:, 0]), k))
        z2 = _moved(per_fit(self.z[:, 1]), torch.pow(per_fit(self.rho[:, 1]), k))
        cos, sin = per_fit(self.cos), per_fit(self.sin)
        w = per_fit(self.theta_opt[:, 0]) + cos * z1 - sin * z2
        b = per_fit(self.theta_opt[:, 1]) + sin * z1 + cos * z2
        return torch.stack([w, b], -1)

    def validation_terms(
        self, held_out_loss: Loss, gradient: torch.Tensor, hessian: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # The 2×2 products written out, as the line's validation losses were always computed.
        at_opt = held_out_loss(self.theta_opt)
        grad_w, grad_b = gradient[:, 0], gradient[:, 1]
        h1 = self.cos * grad_w + self.sin * grad_b
        h2 = -self.sin * grad_w + self.cos * grad_b
        hww, hwb, hbb = hessian[:, 0, 0], hessian[:, 0, 1], hessian[:, 1, 1]
        c, s = self.cos, self.sin
        m11 = c * c * hww + 2 * c * s * hwb + s * s * hbb
        m22 = s * s * hww - 2 * c * s * hwb + c * c * hbb
        m12 = c * s * (hbb - hww) + (c * c - s * s) * hwb
        z1, z2, rho1, rho2 = self.z[:, 0], self.z[:, 1], self.rho[:, 0], self.rho[:, 1]
        bases = torch.stack([rho1, rho2, rho1 * rho1, rho1 * rho2, rho2 * rho2], 1)
        coefficients = torch.stack([h1 * z1, h2 * z2, 0.5 * m11 * z1 * z1, m12 * z1 * z2, 0.5 * m22 * z2 * z2], 1)
        return at_opt, bases, coefficients


class GramSpectrum(Spectrum):
    """Any model linear in its parameters, from its feature averages (models.FeatureMoments):
    H = 2 [[C + m mᵀ, m], [mᵀ, 1]] decomposed by `eigh`; the optimum from the centred normal
    equations C θ_f = c (a pseudo-inverse where C is singular: features that do not vary), θ_0 =
    my − mᵀθ_f."""

    def __init__(self, moments: tuple[torch.Tensor, ...], theta0: torch.Tensor, learning_rate: torch.Tensor) -> None:
        mean_f, mean_y, cov_ff, cov_fy, var_y = moments
        size, q = mean_f.shape
        self.unrepresentable = ~torch.cat(
            [mean_f, mean_y[:, None], cov_ff.reshape(size, -1), cov_fy, var_y[:, None]], 1
        ).isfinite().all(1)
        finite = ~self.unrepresentable[:, None, None]
        safe_cov = torch.where(finite, cov_ff, torch.eye(q, dtype=cov_ff.dtype, device=cov_ff.device))
        # Centred normal equations through C's own eigen-decomposition: directions whose variance
        # is rounding noise against the largest are left out (the minimum-norm solution).
        var, vec = torch.linalg.eigh(safe_cov)
        kept = var > RANK_RTOL * var.abs().amax(1, keepdim=True).clamp_min(torch.finfo(var.dtype).tiny)
        inverse = torch.where(kept, 1 / torch.where(kept, var, torch.ones_like(var)), torch.zeros_like(var))
        safe_fy = torch.where(finite[:, :, 0], cov_fy, torch.zeros_like(cov_fy))
        coef = torch.einsum("bij,bj,bkj,bk->bi", vec, inverse, vec, safe_fy)
        const = mean_y - (coef * mean_f).sum(1)
        self.theta_opt = torch.cat([coef, const[:, None]], 1)
        self.loss_opt = (var_y - (coef * safe_fy).sum(1)).clamp_min(0)

        hessian = gram_hessian(mean_f, cov_ff)
        safe_h = torch.where(finite, hessian, torch.eye(q + 1, dtype=hessian.dtype, device=hessian.device))
        values, vectors = torch.linalg.eigh(safe_h)  # ascending
        self.curvature = values.flip(1).clamp_min(0)
        self.basis = vectors.flip(2)
        self.z = torch.einsum("bji,bj->bi", self.basis, theta0 - self.theta_opt)
        self._settle(learning_rate)


def _moved(z: torch.Tensor, powers: torch.Tensor) -> torch.Tensor:
    """z·ρ^k, 0 where z is 0 even when ρ^k is past float64's range (0·inf would be NaN)."""
    return torch.where(z == 0, torch.zeros_like(powers), z * powers)


def gram_hessian(mean_f: torch.Tensor, cov_ff: torch.Tensor) -> torch.Tensor:
    """2·E[φφᵀ] for φ = (f, 1): (B, q+1, q+1)."""
    size, q = mean_f.shape
    h = torch.empty((size, q + 1, q + 1), dtype=mean_f.dtype, device=mean_f.device)
    h[:, :q, :q] = cov_ff + mean_f[:, :, None] * mean_f[:, None, :]
    h[:, :q, q] = mean_f
    h[:, q, :q] = mean_f
    h[:, q, q] = 1
    return 2 * h
