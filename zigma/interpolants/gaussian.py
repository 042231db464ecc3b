"""Closed-form fields for Gaussian data x1 ~ N(m, S): the exact answer samplers are measured against.

With x0 ~ N(0, I) independent of x1, xt = a x1 + s x0 and ut = a' x1 + s' x0 are jointly Gaussian:
    E[xt] = a m,   Cov(xt) = Sigma_t = a^2 S + s^2 I,   Cov(ut, xt) = a a' S + s s' I,
so the optimal (minimum-loss) velocity is the linear regression
    v*(x, t) = E[ut | xt = x] = a' m + (a a' S + s s' I) Sigma_t^{-1} (x - a m),
and the score is grad log N(x; a m, Sigma_t) = -Sigma_t^{-1} (x - a m). The flow of v* carries N(a m, Sigma_t) along
the path, and dSigma_t/dt = 2 a a' S + 2 s s' I = A Sigma_t + Sigma_t A^T with A = (a a' S + s s' I) Sigma_t^{-1}.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .path import Path

__all__ = ["GaussianData"]


class GaussianData:
    """Data N(mean (D,), cov (D, D)); fields take x (N, D) and t (N,) (one shared time is fine too)."""

    def __init__(self, mean: Tensor, cov: Tensor) -> None:
        assert mean.dim() == 1 and cov.shape == (mean.numel(), mean.numel()), "mean (D,) and cov (D, D)"
        self.mean, self.cov = mean, cov
        self.dim = mean.numel()

    def _coeffs(self, path: Path, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        t = t.reshape(-1, 1, 1).to(self.cov)                                   # (N, 1, 1)
        a = path.alpha(t)
        return a, path.sigma(t), path.d_alpha(t), path.sigma_d_sigma(t)

    def _fields(self, path: Path, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Mean a m (N, D), Sigma_t (N, D, D), drift matrix A_t (N, D, D) and a' m (N, D)."""
        a, s, da, sds = self._coeffs(path, t)
        eye = torch.eye(self.dim, dtype=self.cov.dtype, device=self.cov.device)
        cov_t = a**2 * self.cov + s**2 * eye
        cross = a * da * self.cov + sds * eye                                  # (N, D, D) Cov(ut, xt)
        drift = torch.linalg.solve(cov_t, cross, left=False)                   # cross @ inv(cov_t)
        return a[:, :, 0] * self.mean, cov_t, drift, da[:, :, 0] * self.mean

    @staticmethod
    def _times(t: Tensor, x: Tensor) -> Tensor:
        """(N,) or () times -> (N,), or (1,) when all are equal (one solve broadcast over the batch)."""
        t = t.reshape(-1)
        return t[:1] if bool((t == t[0]).all()) else t.expand(x.shape[0])

    def marginal(self, path: Path, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (N, D) and covariance (N, D, D) of xt at times t (N,)."""
        mean, cov_t, _, _ = self._fields(path, t)
        return mean, cov_t

    def drift_matrix(self, path: Path, t: Tensor) -> Tensor:
        """A_t = (a a' S + s s' I) Sigma_t^{-1} (N, D, D): v*(x, t) = a' m + A_t (x - a m)."""
        return self._fields(path, t)[2]

    def velocity(self, path: Path, x: Tensor, t: Tensor) -> Tensor:
        """v*(x, t) = E[ut | xt = x] (N, D)."""
        mean, _, drift, d_mean = self._fields(path, self._times(t, x))
        return (d_mean + ((x - mean).unsqueeze(1) @ drift.transpose(1, 2))[:, 0]).to(x)

    def score(self, path: Path, x: Tensor, t: Tensor) -> Tensor:
        """grad log p_t(x) = -Sigma_t^{-1} (x - a m) (N, D)."""
        mean, cov_t, _, _ = self._fields(path, self._times(t, x))
        return -torch.linalg.solve(cov_t, (x - mean).unsqueeze(-1))[..., 0].to(x)

    def log_prob(self, x: Tensor) -> Tensor:
        """log N(x; m, S) (N,)."""
        return torch.distributions.MultivariateNormal(self.mean, self.cov).log_prob(x.to(self.cov))
