"""Samplers from noise (t=0) to data (t=1): ODE euler, heun, dopri5 and SDE euler-maruyama, heun (SiT's integrators).

Every sampler has `.sample(transport, model_fn, x0, *, seeds) -> SampleResult`; model_fn(x (N, ...), t (N,)) returns
the model output, converted by `transport` to a velocity (ODE) or a velocity and a score (SDE). `nfe` counts calls of
model_fn (with classifier-free guidance, one call is one forward pass of a doubled batch; see `cfg_model_fn`).
SDE increments come from per-sample generators (`zigma.random`, stream 1 of `seeds[i]`), so samples do not depend on
the batch size. Fixed-step samplers take `steps` solver steps (the official `num_steps` counts grid points: = steps + 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import Tensor
from torchdiffeq import odeint

from ..random import PerSampleNoise
from .path import DIFFUSION_FORMS, expand_t
from .transport import Transport

__all__ = ["LAST_STEPS", "Dopri5", "Euler", "EulerMaruyama", "Heun", "SDEHeun", "SampleResult", "cfg_model_fn"]

#: How an SDE run ends (SiT's `last_step`): 'mean' = one noiseless step of the SDE drift, 'euler' = one ODE step,
#: 'tweedie' = E[x1 | xt], 'none' = stop at t1 = 1 - sample_eps.
LAST_STEPS: tuple[str, ...] = ("mean", "euler", "tweedie", "none")

ModelFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class SampleResult:
    """x1: samples (N, ...); nfe: model_fn calls; trajectory: (S, N, ...) every state from x0 on, when asked for."""

    x1: Tensor
    nfe: int
    trajectory: Tensor | None = None


class _Counted:
    """model_fn wrapper counting its calls."""

    def __init__(self, fn: ModelFn) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        return self.fn(x, t)


def _tvec(t: float | Tensor, x: Tensor) -> Tensor:
    """Scalar time -> (N,) in x's dtype and device."""
    return torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)


def _grid(t0: float, t1: float, steps: int) -> list[float]:
    return torch.linspace(t0, t1, steps + 1, dtype=torch.float64).tolist()


def _check_steps(steps: int) -> int:
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return int(steps)


def _check_finite(sampler: object, transport: Transport, times: Sequence[float],
                  field: Callable[[Tensor, Tensor, Tensor], Tensor], hint: str = "") -> None:
    """ValueError when the field the sampler integrates (the model output converted by `transport`) is not finite at
    one of the times it evaluates it: a conversion dividing by alpha_t or sigma_t = 0 there gives NaN samples."""
    one = torch.ones(1, 1, dtype=torch.float64)
    for t in times:
        if not torch.isfinite(field(one, one, torch.full((1,), float(t), dtype=torch.float64))).all():
            raise ValueError(
                f"{type(sampler).__name__} evaluates the model at t={t:g}, where converting a "
                f"{transport.prediction!r} output on the {transport.path.name!r} path divides by zero (NaN samples); "
                f"give the transport sample_eps > 0 (e.g. 1e-3){hint}")


class _FixedStepODE:
    steps: int
    #: whether a step evaluates the field at its end point (Heun's corrector) besides its start
    evaluates_end: bool = False

    def _step(self, v: Callable[[Tensor, float], Tensor], x: Tensor, t: float, h: float) -> Tensor:
        raise NotImplementedError

    def check(self, transport: Transport) -> None:
        """ValueError where the velocity is not finite at a time this sampler evaluates it (t0, and t1 for Heun)."""
        t0, t1 = transport.sample_interval()
        _check_finite(self, transport, [t0, t1] if self.evaluates_end else [t0],
                      lambda out, x, t: transport.velocity_from(out, x, t))

    @torch.no_grad()
    def sample(self, transport: Transport, model_fn: ModelFn, x0: Tensor, *, seeds: Sequence[int] | None = None,
               return_trajectory: bool = False) -> SampleResult:
        """x0 (N, ...) noise at t0 -> SampleResult with x1 (N, ...) at t1; seeds are unused (deterministic)."""
        self.check(transport)
        fn = _Counted(model_fn)

        def v(x: Tensor, t: float) -> Tensor:
            tv = _tvec(t, x)
            return transport.velocity_from(fn(x, tv), x, tv)

        ts = _grid(*transport.sample_interval(), self.steps)
        x, traj = x0, [x0]
        for t, t_next in pairwise(ts):
            x = self._step(v, x, t, t_next - t)
            if return_trajectory:
                traj.append(x)
        return SampleResult(x, fn.calls, torch.stack(traj) if return_trajectory else None)


class Euler(_FixedStepODE):
    """Explicit Euler on the probability-flow ODE dx/dt = v(x, t); `steps` NFE, first order."""

    def __init__(self, steps: int = 50) -> None:
        self.steps = _check_steps(steps)

    def __repr__(self) -> str:
        return f"Euler(steps={self.steps})"

    def _step(self, v, x, t, h):
        return x + h * v(x, t)


class Heun(_FixedStepODE):
    """Heun (explicit trapezoid) on the probability-flow ODE; 2 * `steps` NFE, second order."""

    evaluates_end = True

    def __init__(self, steps: int = 50) -> None:
        self.steps = _check_steps(steps)

    def __repr__(self) -> str:
        return f"Heun(steps={self.steps})"

    def _step(self, v, x, t, h):
        k1 = v(x, t)
        k2 = v(x + h * k1, t + h)
        return x + 0.5 * h * (k1 + k2)


def _per_sample_rms_max(r: Tensor) -> Tensor:
    """Error norm for dopri5: the worst per-sample RMS, so every sample meets the tolerance whatever its batch."""
    return r.reshape(r.shape[0], -1).pow(2).mean(dim=1).sqrt().max()


class Dopri5:
    """Adaptive Dormand-Prince 5(4) via torchdiffeq (the official default sampler), atol 1e-6 and rtol 1e-3.

    The step size is shared by the batch, so samples depend on the batch only within the tolerance; the error norm
    is the worst per-sample RMS, so each sample meets atol/rtol. Steps never overshoot t1 (the vp path is undefined
    beyond t = 1). The trajectory holds the two end states.
    """

    def __init__(self, atol: float = 1e-6, rtol: float = 1e-3) -> None:
        if atol <= 0 or rtol <= 0:
            raise ValueError(f"atol and rtol must be > 0, got atol={atol}, rtol={rtol}")
        self.atol, self.rtol = float(atol), float(rtol)

    def __repr__(self) -> str:
        return f"Dopri5(atol={self.atol}, rtol={self.rtol})"

    def check(self, transport: Transport) -> None:
        """ValueError where the velocity is not finite at t0 or t1 (Dormand-Prince evaluates both ends)."""
        _check_finite(self, transport, transport.sample_interval(), lambda out, x, t: transport.velocity_from(out, x, t))

    @torch.no_grad()
    def sample(self, transport: Transport, model_fn: ModelFn, x0: Tensor, *, seeds: Sequence[int] | None = None,
               return_trajectory: bool = False) -> SampleResult:
        """x0 (N, ...) noise at t0 -> SampleResult with x1 (N, ...) at t1; seeds are unused (deterministic)."""
        self.check(transport)
        fn = _Counted(model_fn)

        def f(t: Tensor, x: Tensor) -> Tensor:
            tv = _tvec(t, x)
            return transport.velocity_from(fn(x, tv), x, tv)

        t0, t1 = transport.sample_interval()
        ts = torch.tensor([t0, t1], dtype=x0.dtype, device=x0.device)
        traj = odeint(f, x0, ts, method="dopri5", atol=self.atol, rtol=self.rtol,
                      options={"norm": _per_sample_rms_max, "step_t": ts[1:]})  # (2, N, ...)
        return SampleResult(traj[-1], fn.calls, traj if return_trajectory else None)


class _SDE:
    """dx = (v + w_t score) dt + sqrt(2 w_t) dW on [t0, t1] in `steps` steps, then the last step."""

    def __init__(self, steps: int = 249, diffusion_form: str = "sigma", diffusion_norm: float = 1.0,
                 last_step: str = "mean", last_step_size: float = 0.04) -> None:
        if diffusion_form not in DIFFUSION_FORMS:
            raise ValueError(f"unknown diffusion form {diffusion_form!r}; available: {', '.join(DIFFUSION_FORMS)}")
        if last_step not in LAST_STEPS:
            raise ValueError(f"unknown last step {last_step!r}; available: {', '.join(LAST_STEPS)}")
        if not 0.0 <= last_step_size < 1.0:
            raise ValueError(f"last_step_size must be in [0, 1), got {last_step_size}")
        self.steps = _check_steps(steps)
        self.diffusion_form, self.diffusion_norm = diffusion_form, float(diffusion_norm)
        self.last_step = last_step
        self.last_step_size = 0.0 if last_step == "none" else float(last_step_size)  # as SiT

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(steps={self.steps}, diffusion_form={self.diffusion_form!r}, "
                f"diffusion_norm={self.diffusion_norm}, last_step={self.last_step!r}, "
                f"last_step_size={self.last_step_size})")

    def _step(self, drift, w, noise: PerSampleNoise, x: Tensor, t: float, h: float) -> Tensor:
        raise NotImplementedError

    def _diffusion(self, transport: Transport, x: Tensor, t: Tensor) -> Tensor:
        """w_t at t (N,), broadcast to x (N, ...)."""
        return expand_t(transport.path.diffusion(t, self.diffusion_form, self.diffusion_norm), x)

    def _drift(self, transport: Transport, out: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """The SDE drift v + w_t * score (N, ...) of model output `out` at (x, t (N,))."""
        return transport.velocity_from(out, x, t) + self._diffusion(transport, x, t) * transport.score_from(out, x, t)

    def check(self, transport: Transport) -> None:
        """ValueError where this SDE cannot run on `transport`: its diffusion is infinite at t0, or its drift (the
        velocity plus w_t times the score) is not finite at a time it evaluates it: t0, and t1 for stochastic
        Heun's corrector or a last step (at t1 = 1 with sample_eps 0 the score divides by sigma = 0)."""
        t0, t1 = transport.sample_interval(sde=True, diffusion_form=self.diffusion_form,
                                           last_step_size=self.last_step_size)
        w0 = transport.path.diffusion(torch.tensor(t0, dtype=torch.float64), self.diffusion_form, self.diffusion_norm)
        if not torch.isfinite(w0):
            raise ValueError(f"the {self.diffusion_form!r} diffusion is infinite at t0={t0} on the "
                             f"{transport.path.name!r} path; give the transport sample_eps > 0")

        at_t1 = isinstance(self, SDEHeun) or self.last_step != "none"
        _check_finite(self, transport, [t0, t1] if at_t1 else [t0],
                      lambda out, x, t: self._drift(transport, out, x, t),
                      hint=(" or a last_step_size > 0" if self.last_step != "none" else
                            " or last_step 'mean' with a last_step_size > 0") if at_t1 else "")

    @torch.no_grad()
    def sample(self, transport: Transport, model_fn: ModelFn, x0: Tensor, *, seeds: Sequence[int],
               return_trajectory: bool = False) -> SampleResult:
        """x0 (N, ...) noise at t0 -> SampleResult with x1 (N, ...); seeds (N,) seed the SDE increments."""
        if len(seeds) != x0.shape[0]:
            raise ValueError(f"need one seed per sample: {len(seeds)} seeds for {x0.shape[0]} samples")
        self.check(transport)
        t0, t1 = transport.sample_interval(sde=True, diffusion_form=self.diffusion_form,
                                           last_step_size=self.last_step_size)
        fn, noise = _Counted(model_fn), PerSampleNoise(seeds, stream=1)

        def w(x: Tensor, t: float) -> Tensor:
            return self._diffusion(transport, x, _tvec(t, x))

        def drift(x: Tensor, t: float) -> tuple[Tensor, Tensor]:
            tv = _tvec(t, x)
            out = fn(x, tv)
            return self._drift(transport, out, x, tv), out

        x, traj = x0, [x0]
        ts = _grid(t0, t1, self.steps)
        for t, t_next in pairwise(ts):
            x = self._step(drift, w, noise, x, t, t_next - t)
            if return_trajectory:
                traj.append(x)
        x = self._last(transport, drift, x, t1)
        if return_trajectory:
            traj.append(x)
        return SampleResult(x, fn.calls, torch.stack(traj) if return_trajectory else None)

    def _last(self, transport: Transport, drift, x: Tensor, t1: float) -> Tensor:
        if self.last_step == "none":
            return x
        d, out = drift(x, t1)
        tv = _tvec(t1, x)
        if self.last_step == "mean":
            return x + self.last_step_size * d
        if self.last_step == "euler":
            return x + self.last_step_size * transport.velocity_from(out, x, tv)
        return transport.data_from(out, x, tv)


class EulerMaruyama(_SDE):
    """Euler-Maruyama: x += drift h + sqrt(2 w_t h) z; `steps` + 1 NFE (SiT's default SDE sampler)."""

    def _step(self, drift, w, noise, x, t, h):
        z = noise.normal(x.shape[1:], device=x.device, dtype=x.dtype)
        return x + h * drift(x, t)[0] + torch.sqrt(2 * w(x, t) * h) * z


class SDEHeun(_SDE):
    """SiT's stochastic Heun: noise first (x^ = x + sqrt(2 w_t h) z), then a Heun step of the drift; 2 steps + 1 NFE."""

    def _step(self, drift, w, noise, x, t, h):
        z = noise.normal(x.shape[1:], device=x.device, dtype=x.dtype)
        xh = x + torch.sqrt(2 * w(x, t) * h) * z
        k1 = drift(xh, t)[0]
        k2 = drift(xh + h * k1, t + h)[0]
        return xh + 0.5 * h * (k1 + k2)


def cfg_model_fn(model: Callable[..., Tensor], scale: float, cond: Mapping[str, Tensor],
                 uncond: Mapping[str, Tensor]) -> ModelFn:
    """Classifier-free guidance: model_fn(x, t) = u + scale (c - u), c = model(x, t, **cond), u = model(x, t, **uncond).

    Both halves run as one forward pass of a doubled batch; scale 1 calls model(x, t, **cond) alone. Guiding the
    raw output equals guiding the velocity (the conversions are affine in it). Class labels:
    `cfg_model_fn(model, 4.0, {"y": y}, {"y": torch.full_like(y, num_classes)})`; captions: pass
    {"context": c, "context_mask": m} and the empty caption's.
    """
    if set(cond) != set(uncond):
        raise ValueError(f"cond and uncond must have the same keys, got {sorted(cond)} and {sorted(uncond)}")
    if scale == 1.0:
        return lambda x, t: model(x, t, **cond)
    both = {k: torch.cat([cond[k], uncond[k]]) for k in cond}

    def guided(x: Tensor, t: Tensor) -> Tensor:
        out = model(torch.cat([x, x]), torch.cat([t, t]), **both)               # (2N, ...)
        c, u = out.chunk(2)
        return u + scale * (c - u)

    return guided
