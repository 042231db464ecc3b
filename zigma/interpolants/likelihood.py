"""ODE log-likelihood (instantaneous change of variables, FFJORD/SiT), with Hutchinson or exact divergence.

log p_1(x1) = log N(x_{t0}; 0, I) - int_{t0}^{t1} div v(x_t, t) dt, integrating the probability-flow ODE from data
(t1) back to noise (t0) with dopri5. Bits per dimension are in the units of x: an image in [-1, 1] from 8 bits needs
the dequantisation offset (+ log2(127.5) per dimension) added by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchdiffeq import odeint

from ..random import PerSampleNoise
from .transport import Transport

__all__ = ["LikelihoodResult", "log_likelihood"]


@dataclass(frozen=True)
class LikelihoodResult:
    """logp (N,) nats, bpd (N,) bits per dimension, x0 (N, ...) the noise x1 maps to, nfe model_fn calls."""

    logp: Tensor
    bpd: Tensor
    x0: Tensor
    nfe: int


def _divergence(v: Tensor, x: Tensor, probes: Tensor | None) -> Tensor:
    """div v (N,): Hutchinson e^T (dv/dx) e with Rademacher e (N, ...) or, when probes is None, exact (small D)."""
    if probes is not None:
        (g,) = torch.autograd.grad(v, x, probes, create_graph=False)
        return (g * probes).reshape(x.shape[0], -1).sum(dim=1)
    vf, xf = v.reshape(x.shape[0], -1), x
    div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(vf.shape[1]):
        (g,) = torch.autograd.grad(vf[:, i].sum(), xf, retain_graph=True)
        div = div + g.reshape(x.shape[0], -1)[:, i]
    return div


def log_likelihood(transport: Transport, model_fn: Callable[[Tensor, Tensor], Tensor], x1: Tensor, *,
                   seeds: Sequence[int] | None = None, exact: bool = False, atol: float = 1e-6,
                   rtol: float = 1e-3) -> LikelihoodResult:
    """Log-likelihood of data x1 (N, ...); one Rademacher probe per sample from `seeds` (stream 2) unless exact."""
    if not exact and (seeds is None or len(seeds) != x1.shape[0]):
        raise ValueError("Hutchinson estimation needs one seed per sample (or exact=True)")
    probes = None if exact else PerSampleNoise(seeds, stream=2).rademacher(x1.shape[1:], device=x1.device,
                                                                           dtype=x1.dtype)
    calls = 0

    def f(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        nonlocal calls
        calls += 1
        x = state[0]
        tv = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            v = transport.velocity_from(model_fn(x, tv), x, tv)                 # (N, ...)
            div = _divergence(v, x, probes)                                    # (N,)
        return v.detach(), div.detach()

    t0, t1 = transport.sample_interval()
    ts = torch.tensor([t1, t0], dtype=x1.dtype, device=x1.device)              # data -> noise
    start = (x1, torch.zeros(x1.shape[0], dtype=x1.dtype, device=x1.device))
    xs, integrals = odeint(f, start, ts, method="dopri5", atol=atol, rtol=rtol, options={"step_t": ts[1:]})
    x0, delta = xs[-1], integrals[-1]                                         # delta = -int_{t0}^{t1} div dt
    d = x0[0].numel()
    prior = -0.5 * (x0.reshape(x0.shape[0], -1) ** 2).sum(dim=1) - 0.5 * d * math.log(2 * math.pi)
    logp = prior + delta
    return LikelihoodResult(logp, -logp / (d * math.log(2)), x0, calls)
