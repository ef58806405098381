"""The exact fast path for optimizer "gd": every epoch of every fit in closed form.

The mean squared error of t_p = w*x + b depends on the data only through the
means of x and y and the (co)variances vxx, vxy, vyy, gathered in one pass in
float64. Its Hessian H = 2 [[E x^2, E x], [E x, 1]] is constant, so gradient
descent is the linear system  theta_{k+1} - theta* = (I - lr H)(theta_k - theta*).
In H's eigenbasis (eigenvalues l1 >= l2, rotation angle phi) each coordinate
z_i shrinks or grows by rho_i = 1 - lr*l_i per epoch, and the loss before the
k-th update is

    loss_k = L* + a1 * r1^(k-1) + a2 * r2^(k-1),   a_i = l_i z_i^2 / 2,  r_i = rho_i^2,

with L* the least-squares loss. Any epoch costs O(1) per fit whatever the
number of points, and the divergence epoch is found by bisection (loss_k is
convex in k, so once over the limit it stays over).
"""

from __future__ import annotations

import math

import torch

from services.worker.engine.series import FLOAT32_MAX, SeriesBatch, loss_at
from services.worker.engine.stopping import StopRule

# vxx this small against E[x^2] is rounding noise: all t_u equal, H singular.
_SINGULAR = 1e-20
# Bound on the (fits x epochs) losses one early-stopping window computes: 64 MB of float64.
_STOP_CELLS = 8_000_000


class GradientDescent:
    """Every epoch of every fit in closed form. With `validation` (the held-out points of each
    fit; none for some), the validation loss of each epoch too: the validation MSE at the
    parameters before that epoch's update. With `stopping`, each fit's last epoch is where its
    early-stopping rule stops it."""

    def __init__(
        self, batch: SeriesBatch, validation: SeriesBatch | None = None, stopping: StopRule | None = None
    ) -> None:
        self.batch = batch
        self.held_out = validation.moments() if validation is not None else None
        self.training = batch.moments()
        mx, my, vxx, vxy, vyy = self.training
        sxx = vxx + mx * mx
        # Readings near float64's limit make an average inf or NaN, and the power series
        # below would then hide that epoch 1's loss is not finite: such a fit diverges at 1.
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

        ew, eb = batch.w0 - w_opt, batch.b0 - b_opt
        self.z1 = self.cos * ew + self.sin * eb
        self.z2 = -self.sin * ew + self.cos * eb
        self.rho1 = 1 - batch.learning_rate * lam1
        self.rho2 = 1 - batch.learning_rate * lam2
        self.excess1 = 0.5 * lam1 * self.z1 * self.z1
        self.excess2 = 0.5 * lam2 * self.z2 * self.z2
        self.w_opt, self.b_opt = w_opt, b_opt
        self.lam1, self.lam2 = lam1, lam2

        self.last_epoch = batch.epochs if stopping is None else self._stop(stopping)
        self.stopped_early = self.last_epoch < batch.epochs
        diverged_at = self._divergence_epoch()
        epochs_done = torch.where(diverged_at > 0, diverged_at - 1, self.last_epoch)
        w, b = self.params_after(epochs_done)
        # Readings so large that even float64 cannot hold their squares (|t_u| near 1e308) leave
        # no representable line: by API.md's rule (the sum of squared residuals overflows) such
        # a fit diverged at epoch 1, having run none.
        broken = (diverged_at == 0) & ~(torch.isfinite(w) & torch.isfinite(b))
        self.diverged_at = torch.where(broken, torch.ones_like(diverged_at), diverged_at)
        self.epochs_done = torch.where(broken, torch.zeros_like(epochs_done), epochs_done)
        self.w, self.b = w, b

    def params_after(self, updates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(w, b) after the given number of updates: (B,) per fit, or (B, L) for L counts per fit."""
        k = updates.to(torch.float64)

        def per_fit(t: torch.Tensor) -> torch.Tensor:
            return t if k.dim() == 1 else t[:, None]

        z1 = per_fit(self.z1) * torch.pow(per_fit(self.rho1), k)
        z2 = per_fit(self.z2) * torch.pow(per_fit(self.rho2), k)
        cos, sin = per_fit(self.cos), per_fit(self.sin)
        return per_fit(self.w_opt) + cos * z1 - sin * z2, per_fit(self.b_opt) + sin * z1 + cos * z2

    def _stop(self, stopping: StopRule) -> torch.Tensor:
        """Each fit's last epoch under its rule, scanning the stored (float32) losses window by window."""
        window = max(1, _STOP_CELLS // self.batch.size)
        first = 1
        while first <= stopping.last_epoch_needed:
            last = min(first + window - 1, stopping.last_epoch_needed)
            wants_val = self.held_out is not None and bool(stopping.monitor_val.any())
            val = self._val_curve(first, last).T if wants_val else None
            stopping.update_from(self._curve(first, last, torch.float32).T, val, first)
            first = last + 1
        return stopping.epochs()

    def _log_loss(self, epoch: torch.Tensor) -> torch.Tensor:
        k = (epoch - 1).to(torch.float64)
        terms = torch.stack(
            [
                torch.log(self.loss_opt),
                torch.log(self.excess1) + k * torch.log(self.rho1 * self.rho1),
                torch.log(self.excess2) + k * torch.log(self.rho2 * self.rho2),
            ]
        )
        # 0 * (anything) is 0 even where log(r) is +inf or nan.
        terms = torch.nan_to_num(terms, nan=-math.inf)
        return torch.logsumexp(terms, 0)

    def _val_curve(self, first: int, last: int) -> torch.Tensor:
        """Validation losses of epochs first..last, (B, L) float32, not masked; NaN for fits without a split.

        The validation loss is quadratic in the parameters, and the parameters before
        epoch k are θ* + R·(z1 ρ1^(k-1), z2 ρ2^(k-1)) (R the Hessian's eigenvectors), so

            val_k = V* + h1 z1 ρ1^(k-1) + h2 z2 ρ2^(k-1)
                    + ½ M11 z1² ρ1^(2(k-1)) + M12 z1 z2 (ρ1 ρ2)^(k-1) + ½ M22 z2² ρ2^(2(k-1))

        with V* and h = Rᵀ ∇V the validation loss and gradient at the training optimum, and
        M = Rᵀ H_val R: five power series, computed like the training loss. The linear terms
        may be negative, so the sum is formed in float64.
        """
        assert self.held_out is not None
        mx, my, vxx, vxy, _ = self.held_out
        at_opt = loss_at(self.held_out, self.w_opt, self.b_opt)
        r = self.w_opt * mx + self.b_opt - my
        grad_w, grad_b = 2 * (self.w_opt * vxx - vxy + r * mx), 2 * r
        h1 = self.cos * grad_w + self.sin * grad_b
        h2 = -self.sin * grad_w + self.cos * grad_b
        hww, hwb, hbb = 2 * (vxx + mx * mx), 2 * mx, torch.full_like(mx, 2.0)
        c, s = self.cos, self.sin
        m11 = c * c * hww + 2 * c * s * hwb + s * s * hbb
        m22 = s * s * hww - 2 * c * s * hwb + c * c * hbb
        m12 = c * s * (hbb - hww) + (c * c - s * s) * hwb
        z1, z2, rho1, rho2 = self.z1, self.z2, self.rho1, self.rho2
        bases = torch.stack([rho1, rho2, rho1 * rho1, rho1 * rho2, rho2 * rho2], 1)
        coefficients = torch.stack([h1 * z1, h2 * z2, 0.5 * m11 * z1 * z1, m12 * z1 * z2, 0.5 * m22 * z2 * z2], 1)
        return _power_sums(at_opt, bases, coefficients, first, last, torch.float64).to(torch.float32)

    def val_losses(self, first: int, last: int) -> torch.Tensor | None:
        """Validation losses of epochs first..last (B, L) float32, NaN past epochs_done; None without a split."""
        if self.held_out is None:
            return None
        return self._past_done(self._val_curve(first, last), first, last)

    def _past_done(self, block: torch.Tensor, first: int, last: int) -> torch.Tensor:
        if int(self.epochs_done.min()) >= last:
            return block
        epoch = torch.arange(first, last + 1, device=block.device)
        return block.masked_fill(epoch[None, :] > self.epochs_done[:, None], math.nan)

    def _overflows(self, epoch: torch.Tensor) -> torch.Tensor:
        limit = math.log(FLOAT32_MAX) - torch.log(self.batch.n.to(torch.float64))
        return self._log_loss(epoch) > limit

    def _divergence_epoch(self) -> torch.Tensor:
        epochs = self.last_epoch
        ones = torch.ones_like(epochs)
        at_first = self._overflows(ones) | self.unrepresentable
        at_last = self._overflows(epochs)
        lo, hi = ones, epochs.clone()  # invariant: lo does not overflow, hi does
        while bool(((hi - lo) > 1).any()):
            mid = (lo + hi) // 2
            over = self._overflows(mid)
            hi = torch.where(over, mid, hi)
            lo = torch.where(over, lo, mid)
        found = torch.where(at_first, ones, hi)
        return torch.where(at_first | at_last, found, torch.zeros_like(epochs))

    def losses(self, first: int, last: int, dtype: torch.dtype) -> torch.Tensor:
        """Losses of epochs first..last (inclusive) for every fit, (B, L), NaN past epochs_done; in
        `dtype` (the closed form is float64; stored losses are float32)."""
        return self._past_done(self._curve(first, last, dtype), first, last)

    def _curve(self, first: int, last: int, dtype: torch.dtype) -> torch.Tensor:
        """Losses of epochs first..last for every fit, (B, L), whatever each fit's last epoch:
        loss_k = L* + a1 r1^(k-1) + a2 r2^(k-1). Every term is non-negative, so nothing cancels
        and the sum may be formed in float32 (what is stored) at the cost of rounding only."""
        r = torch.stack([self.rho1 * self.rho1, self.rho2 * self.rho2], 1)
        excess = torch.stack([self.excess1, self.excess2], 1)
        return _power_sums(self.loss_opt, r, excess, first, last, dtype)


def _power_sums(
    constant: torch.Tensor, bases: torch.Tensor, coefficients: torch.Tensor, first: int, last: int, dtype: torch.dtype
) -> torch.Tensor:
    """constant + Σ_t coefficients[:, t] · bases[:, t]^(k-1) for k = first..last: (B, L).

    base^(k-1) is split as base^(first-1+q*S) * base^j with k - first = q*S + j, so the
    (B, L) block is one batched matrix product of (B, Q, T) by (B, T, S) instead of
    T*B*L calls of exp. The powers are taken in float64; only the product is in `dtype`.
    """
    length = last - first + 1
    width = max(1, math.isqrt(length - 1) + 1)
    rows = -(-length // width)
    dev, f64 = constant.device, torch.float64
    row_exp = (first - 1) + width * torch.arange(rows, dtype=f64, device=dev)
    col_exp = torch.arange(width, dtype=f64, device=dev)
    heads = torch.pow(bases[:, :, None], row_exp) * coefficients[:, :, None]  # (B, T, Q)
    # 0 * (a power past float64's range) is 0, not NaN.
    heads = torch.where(coefficients[:, :, None] == 0, torch.zeros_like(heads), heads)
    steps = torch.pow(bases[:, :, None], col_exp)  # (B, T, S)
    block = torch.baddbmm(constant.to(dtype)[:, None, None], heads.transpose(1, 2).to(dtype), steps.to(dtype))
    return block.reshape(constant.shape[0], rows * width)[:, :length]
