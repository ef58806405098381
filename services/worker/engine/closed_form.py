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

from services.worker.engine.series import FLOAT32_MAX, SeriesBatch

# vxx this small against E[x^2] is rounding noise: all t_u equal, H singular.
_SINGULAR = 1e-20


class GradientDescent:
    def __init__(self, batch: SeriesBatch) -> None:
        self.batch = batch
        mx, my, vxx, vxy, vyy = batch.moments()
        sxx = vxx + mx * mx

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

        self.diverged_at = self._divergence_epoch()
        self.epochs_done = torch.where(self.diverged_at > 0, self.diverged_at - 1, batch.epochs)
        self.w, self.b = self.params_after(self.epochs_done)

    def params_after(self, updates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(w, b) after the given number of updates, per fit."""
        k = updates.to(torch.float64)
        z1 = self.z1 * torch.pow(self.rho1, k)
        z2 = self.z2 * torch.pow(self.rho2, k)
        return self.w_opt + self.cos * z1 - self.sin * z2, self.b_opt + self.sin * z1 + self.cos * z2

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

    def _overflows(self, epoch: torch.Tensor) -> torch.Tensor:
        limit = math.log(FLOAT32_MAX) - torch.log(self.batch.n.to(torch.float64))
        return self._log_loss(epoch) > limit

    def _divergence_epoch(self) -> torch.Tensor:
        epochs = self.batch.epochs
        ones = torch.ones_like(epochs)
        at_first = self._overflows(ones)
        at_last = self._overflows(epochs)
        lo, hi = ones, epochs.clone()  # invariant: lo does not overflow, hi does
        while bool(((hi - lo) > 1).any()):
            mid = (lo + hi) // 2
            over = self._overflows(mid)
            hi = torch.where(over, mid, hi)
            lo = torch.where(over, lo, mid)
        found = torch.where(at_first, ones, hi)
        return torch.where(at_first | at_last, found, torch.zeros_like(epochs))

    def losses(self, first: int, last: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Losses of epochs first..last (inclusive) for every fit, (B, L), NaN past epochs_done.

        r^(k-1) is split as r^(first-1+q*S) * r^j with k - first = q*S + j, so the
        (B, L) block is one batched matrix product of (B, Q, 2) by (B, 2, S)
        instead of 2*B*L calls of exp. Every term is non-negative, so nothing
        cancels and float32 output (what is stored) costs only rounding: the powers
        are taken in float64 and only the (B, L) product is in `dtype`.
        """
        length = last - first + 1
        width = max(1, math.isqrt(length - 1) + 1)
        rows = -(-length // width)
        dev, f64 = self.loss_opt.device, torch.float64
        r = torch.stack([self.rho1 * self.rho1, self.rho2 * self.rho2], 1)  # (B, 2)
        excess = torch.stack([self.excess1, self.excess2], 1)
        row_exp = (first - 1) + width * torch.arange(rows, dtype=f64, device=dev)
        col_exp = torch.arange(width, dtype=f64, device=dev)
        heads = torch.pow(r[:, :, None], row_exp) * excess[:, :, None]  # (B, 2, Q)
        heads = torch.where(excess[:, :, None] == 0, torch.zeros_like(heads), heads)
        steps = torch.pow(r[:, :, None], col_exp)  # (B, 2, S)
        block = torch.baddbmm(self.loss_opt.to(dtype)[:, None, None],
                              heads.transpose(1, 2).to(dtype), steps.to(dtype))
        block = block.reshape(self.batch.size, rows * width)[:, :length]
        if int(self.epochs_done.min()) >= last:
            return block
        epoch = torch.arange(first, last + 1, device=dev)
        return block.masked_fill(epoch[None, :] > self.epochs_done[:, None], math.nan)
