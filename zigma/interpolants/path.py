"""Interpolant paths xt = alpha_t * x1 + sigma_t * x0 (t=0 noise x0, t=1 data x1), as in SiT's `transport/path.py`.

Every coefficient takes a time tensor of any shape and returns one of the same shape.
`drift_var(t)` is SiT's "drift variance" w*_t = (d_alpha/alpha) * sigma^2 - sigma * d_sigma: the factor that turns the
score into the velocity, `v = (d_alpha/alpha) * x + drift_var * score`. The SDE diffusion forms are SiT's, with the
official misspelling "inccreasing-decreasing" spelled "increasing-decreasing" and "SBDM" as "sbdm".
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["DIFFUSION_FORMS", "PATHS", "GVPPath", "LinearPath", "Path", "VPPath", "expand_t"]

#: SDE diffusion coefficient forms w_t (registry keys of the `diffusion_form` option).
DIFFUSION_FORMS: tuple[str, ...] = ("constant", "sbdm", "sigma", "linear", "decreasing", "increasing-decreasing")


def expand_t(t: Tensor, x: Tensor) -> Tensor:
    """t (N,) or () -> broadcastable against x (N, ...): (N, 1, ..., 1) or ()."""
    return t.reshape(-1, *([1] * (x.dim() - 1))) if t.dim() == 1 else t


class Path:
    """Base path: subclasses define alpha, sigma and their time derivatives."""

    name: str = ""

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_log_alpha(self, t: Tensor) -> Tensor:
        """d_alpha / alpha (SiT's `compute_d_alpha_alpha_ratio_t`); infinite where alpha = 0."""
        return self.d_alpha(t) / self.alpha(t)

    def sigma_d_sigma(self, t: Tensor) -> Tensor:
        """sigma * d_sigma, kept finite where sigma = 0 for paths that can."""
        return self.sigma(t) * self.d_sigma(t)

    def drift_var(self, t: Tensor) -> Tensor:
        """w*_t = (d_alpha/alpha) sigma^2 - sigma d_sigma: v = (d_alpha/alpha) x + w*_t score."""
        return self.d_log_alpha(t) * self.sigma(t) ** 2 - self.sigma_d_sigma(t)

    def diffusion(self, t: Tensor, form: str = "sigma", norm: float = 1.0) -> Tensor:
        """SDE diffusion w_t for `form` in DIFFUSION_FORMS; the SDE is dx = (v + w_t score) dt + sqrt(2 w_t) dW."""
        if form == "constant":
            return torch.full_like(t, norm)
        if form == "sbdm":
            return norm * self.drift_var(t)
        if form == "sigma":
            return norm * self.sigma(t)
        if form == "linear":
            return norm * (1 - t)
        if form == "decreasing":
            return 0.25 * (norm * torch.cos(math.pi * t) + 1) ** 2
        if form == "increasing-decreasing":
            return norm * torch.sin(math.pi * t) ** 2
        raise ValueError(f"unknown diffusion form {form!r}; available: {', '.join(DIFFUSION_FORMS)}")

    def plan(self, t: Tensor, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        """t (N,), x0 noise and x1 data (N, ...) -> (xt, ut) with ut = d_alpha x1 + d_sigma x0, both (N, ...)."""
        te = expand_t(t, x1)
        xt = self.alpha(te) * x1 + self.sigma(te) * x0
        ut = self.d_alpha(te) * x1 + self.d_sigma(te) * x0
        return xt, ut

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LinearPath(Path):
    """Linear (rectified flow / SiT ICPlan): alpha_t = t, sigma_t = 1 - t."""

    name = "linear"

    def alpha(self, t: Tensor) -> Tensor:
        return t

    def sigma(self, t: Tensor) -> Tensor:
        return 1 - t

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)


class GVPPath(Path):
    """Generalised variance preserving (SiT GVPCPlan): alpha_t = sin(pi t / 2), sigma_t = cos(pi t / 2)."""

    name = "gvp"

    def alpha(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * t)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.cos(0.5 * math.pi * t)

    def d_alpha(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)


class VPPath(Path):
    """Variance preserving (SiT VPCPlan: the VP-SDE of score-based models, beta_t from 20 at t=0 to 0.1 at t=1).

    alpha_t = exp(-(1-t)^2 (b1-b0)/4 - (1-t) b0/2), sigma_t = sqrt(1 - alpha_t^2), b0 = sigma_min = 0.1,
    b1 = sigma_max = 20. alpha_0 = exp(-5.025) ~ 0.0066 is not 0; sigma_t -> 0 and d_sigma_t -> -inf as t -> 1.
    """

    name = "vp"

    def __init__(self, sigma_min: float = 0.1, sigma_max: float = 20.0) -> None:
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def _log_alpha(self, t: Tensor) -> Tensor:
        s = 1 - t
        return -0.25 * s**2 * (self.sigma_max - self.sigma_min) - 0.5 * s * self.sigma_min

    def beta(self, t: Tensor) -> Tensor:
        """beta_t = b0 + (1 - t)(b1 - b0); d log(alpha_t) / dt = beta_t / 2."""
        return self.sigma_min + (1 - t) * (self.sigma_max - self.sigma_min)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(self._log_alpha(t))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(2 * self._log_alpha(t)))

    def d_alpha(self, t: Tensor) -> Tensor:
        return self.alpha(t) * 0.5 * self.beta(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def d_log_alpha(self, t: Tensor) -> Tensor:
        return 0.5 * self.beta(t)

    def sigma_d_sigma(self, t: Tensor) -> Tensor:
        return -self.alpha(t) * self.d_alpha(t)

    def drift_var(self, t: Tensor) -> Tensor:
        return 0.5 * self.beta(t)

    def __repr__(self) -> str:
        return f"VPPath(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"


#: registry key -> path class (the plugin registers exactly these).
PATHS: dict[str, type[Path]] = {cls.name: cls for cls in (LinearPath, GVPPath, VPPath)}
