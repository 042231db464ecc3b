"""Transport: what the model predicts, how it is trained and how its output converts between targets (SiT)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .path import Path, VPPath, expand_t

__all__ = ["LOSS_WEIGHTS", "PREDICTIONS", "TIME_SAMPLERS", "Transport"]

PREDICTIONS: tuple[str, ...] = ("velocity", "noise", "score")
LOSS_WEIGHTS: tuple[str, ...] = ("none", "velocity", "likelihood")
TIME_SAMPLERS: tuple[str, ...] = ("uniform", "logit-normal")

ModelFn = Callable[[Tensor, Tensor], Tensor]


def _choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; available: {', '.join(choices)}")
    return value


def _mean_flat(x: Tensor) -> Tensor:
    """(N, ...) -> (N,) mean over every non-batch dimension."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


class Transport:
    """A path plus a prediction target, loss weighting, time sampler and the official time trimming.

    prediction: 'velocity' (target ut = d_alpha x1 + d_sigma x0), 'noise' (target x0) or 'score' (trained as
    score * sigma_t + x0 -> 0). loss_weight (noise and score only): 'none', 'velocity' (w*_t / sigma_t)^2 or
    'likelihood' w*_t / sigma_t^2, with w*_t = path.drift_var(t). time_sampler: 'uniform' on [t0, t1] or
    'logit-normal' t = t0 + (t1 - t0) * sigmoid(logit_mean + logit_std * n), n ~ N(0, 1) (t = 1 is data here, so a
    positive logit_mean favours the data end, the opposite sign of SD3's convention).
    train_eps / sample_eps: None takes SiT's defaults: vp 1e-5 / 1e-3; linear and gvp with noise or score 1e-3 / 1e-3;
    linear and gvp with velocity 0 / 0.
    """

    def __init__(self, path: Path, prediction: str = "velocity", loss_weight: str = "none",
                 time_sampler: str = "uniform", train_eps: float | None = None, sample_eps: float | None = None,
                 *, logit_mean: float = 0.0, logit_std: float = 1.0) -> None:
        if not isinstance(path, Path):
            raise TypeError(f"path must be a zigma.interpolants.Path, got {type(path).__name__}")
        self.path = path
        self.prediction = _choice(prediction, PREDICTIONS, "prediction")
        self.loss_weight = _choice(loss_weight, LOSS_WEIGHTS, "loss weight")
        self.time_sampler = _choice(time_sampler, TIME_SAMPLERS, "time sampler")
        if prediction == "velocity" and loss_weight != "none":
            raise ValueError(f"loss_weight {loss_weight!r} applies to noise and score predictions only "
                             "(the velocity loss is unweighted)")
        if logit_std <= 0:
            raise ValueError(f"logit_std must be > 0, got {logit_std}")
        self.logit_mean, self.logit_std = float(logit_mean), float(logit_std)
        is_vp, is_velocity = isinstance(path, VPPath), prediction == "velocity"
        default_train, default_sample = (1e-5, 1e-3) if is_vp else (0.0, 0.0) if is_velocity else (1e-3, 1e-3)
        self.train_eps = default_train if train_eps is None else float(train_eps)
        self.sample_eps = default_sample if sample_eps is None else float(sample_eps)
        for key, eps in (("train_eps", self.train_eps), ("sample_eps", self.sample_eps)):
            if not 0.0 <= eps < 0.5:
                raise ValueError(f"{key} must be in [0, 0.5), got {eps}")

    def __repr__(self) -> str:
        return (f"Transport({self.path!r}, prediction={self.prediction!r}, loss_weight={self.loss_weight!r}, "
                f"time_sampler={self.time_sampler!r}, train_eps={self.train_eps}, sample_eps={self.sample_eps})")

    # -- time intervals (SiT `check_interval`) -------------------------------------------------------------------
    def _interval(self, eps: float, *, sde: bool, diffusion_form: str, last_step_size: float) -> tuple[float, float]:
        t1_trim = 1 - last_step_size if (sde and last_step_size > 0) else 1 - eps
        if isinstance(self.path, VPPath):
            return 0.0, t1_trim
        if self.prediction != "velocity" or sde:
            t0 = eps if (sde and diffusion_form == "sbdm") or self.prediction != "velocity" else 0.0
            return t0, t1_trim
        return 0.0, 1.0

    def train_interval(self) -> tuple[float, float]:
        """[t0, t1] that training times are drawn from."""
        return self._interval(self.train_eps, sde=False, diffusion_form="", last_step_size=0.0)

    def sample_interval(self, *, sde: bool = False, diffusion_form: str = "sigma",
                        last_step_size: float = 0.0) -> tuple[float, float]:
        """[t0, t1] a sampler integrates over (an SDE's final step then covers [t1, t1 + last_step_size])."""
        return self._interval(self.sample_eps, sde=sde, diffusion_form=diffusion_form, last_step_size=last_step_size)

    # -- training ------------------------------------------------------------------------------------------------
    def sample_t(self, n: int, *, generator: torch.Generator, device=None, dtype=None) -> Tensor:
        """(n,) training times in [t0, t1] from the time sampler, drawn on the generator's device."""
        t0, t1 = self.train_interval()
        gdev = generator.device
        if self.time_sampler == "uniform":
            u = torch.rand(n, generator=generator, device=gdev)
        else:
            u = torch.sigmoid(self.logit_mean + self.logit_std * torch.randn(n, generator=generator, device=gdev))
        return (t0 + (t1 - t0) * u).to(device=device, dtype=dtype)

    def draw(self, shape: tuple[int, ...], *, generator: torch.Generator, device=None,
             dtype=None) -> tuple[Tensor, Tensor]:
        """(x0, t) of a training batch of `shape` (N, ...): noise x0 (N, ...) then times t (N,), in this order from
        `generator` (what `loss` draws; a rank of a distributed trial draws the global batch's and keeps its rows)."""
        x0 = torch.randn(shape, generator=generator, device=generator.device).to(device=device, dtype=dtype)
        return x0, self.sample_t(shape[0], generator=generator, device=device, dtype=dtype)

    def loss(self, model_fn: ModelFn, x1: Tensor, *, generator: torch.Generator | None = None,
             x0: Tensor | None = None, t: Tensor | None = None) -> Tensor:
        """Per-sample loss (N,) for data x1 (N, ...); x0 and t are drawn from `generator` unless given."""
        if (x0 is None or t is None) and generator is None:
            raise ValueError("Transport.loss needs a torch.Generator (or both x0 and t)")
        if x0 is None and t is None:
            x0, t = self.draw(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        if x0 is None:
            x0 = torch.randn(x1.shape, generator=generator, device=generator.device).to(x1)
        if t is None:
            t = self.sample_t(x1.shape[0], generator=generator, device=x1.device, dtype=x1.dtype)
        xt, ut = self.path.plan(t, x0, x1)                                  # (N, ...) each
        out = model_fn(xt, t)
        assert out.shape == x1.shape, f"model output {tuple(out.shape)} must match x {tuple(x1.shape)}"
        if self.prediction == "velocity":
            return _mean_flat((out - ut) ** 2)
        te = expand_t(t, x1)
        sigma = self.path.sigma(te)
        if self.loss_weight == "none":
            weight = torch.ones_like(sigma)
        elif self.loss_weight == "velocity":
            weight = (self.path.drift_var(te) / sigma) ** 2
        else:
            weight = self.path.drift_var(te) / sigma**2
        err = out - x0 if self.prediction == "noise" else out * sigma + x0
        return _mean_flat(weight * err**2)

    # -- conversions between targets -----------------------------------------------------------------------------
    def _coeffs(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        te = expand_t(t, x)
        return self.path.alpha(te), self.path.sigma(te), self.path.d_alpha(te), self.path.d_sigma(te)

    def noise_from(self, model_out: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """E[x0 | xt] (N, ...) from the model output (N, ...) at times t (N,)."""
        if self.prediction == "noise":
            return model_out
        a, s, da, ds = self._coeffs(t, xt)
        if self.prediction == "score":
            return -s * model_out
        # xt = a x1 + s x0 and v = da x1 + ds x0, solved for x0 (det = a ds - s da, never 0 for t < 1)
        return (a * model_out - da * xt) / (a * ds - s * da)

    def score_from(self, model_out: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """grad log p_t(xt) = -E[x0 | xt] / sigma_t (N, ...)."""
        if self.prediction == "score":
            return model_out
        return -self.noise_from(model_out, xt, t) / self.path.sigma(expand_t(t, xt))

    def velocity_from(self, model_out: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """E[ut | xt] = (da xt + (a ds - s da) E[x0 | xt]) / a (N, ...); singular at alpha_t = 0 unless velocity."""
        if self.prediction == "velocity":
            return model_out
        a, s, da, ds = self._coeffs(t, xt)
        eps = self.noise_from(model_out, xt, t)
        return (da * xt + (a * ds - s * da) * eps) / a

    def data_from(self, model_out: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """E[x1 | xt] = (xt - sigma_t E[x0 | xt]) / alpha_t (N, ...) (Tweedie's estimate)."""
        a, s, _, _ = self._coeffs(t, xt)
        return (xt - s * self.noise_from(model_out, xt, t)) / a
