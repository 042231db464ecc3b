"""Mamba2Mixer: a Mamba-2 (SSD) mixer with mamba_ssm.Mamba2's parameters, K scan directions and two backends.

Parameters, names, shapes and initialisation follow `mamba_ssm.modules.mamba2.Mamba2` (mamba-ssm 2.x, with
rmsnorm=True, norm_before_gate=False, D_has_hdim=False, d_ssm=d_inner): in_proj (d_model -> [z, x, B, C, dt] =
2E + 2GN + H), depthwise conv1d over xBC (E + 2GN channels), dt_bias (H,) = softplus^-1 of a log-uniform dt in
[dt_min, dt_max] clamped at dt_init_floor, A_log (H,) = log U(A_init_range), D (H,) = 1, norm (gated RMSNorm,
weight (E,), groups of E/G), out_proj (E -> d_model). E = expand * d_model, H = E / headdim, G = ngroups.
Creation order is Mamba2's, so one seed draws the same weights for num_directions=1.

num_directions=K (multi-direction scan layers, as MambaMixer): directions k >= 1 own conv1d, dt_bias, A_log and D
(suffix '_b' for k=1, '_p{k}' for k >= 2; A's log named 'A_b_log' / 'A_p{k}_log' as in Vim); in_proj, norm and
out_proj are shared. The K SSM outputs (D skip included) are combined in direction 0's order ('sum' or 'mean')
and then gated and normalised once: norm(y * silu(z)).

ssd picks the fused SSD kernel: 'mamba-ssm' (its Triton SSD, the default) or 'fla' (flash-linear-attention's
chunk_simple_gla, Mamba-2's SSD being scalar-gated linear attention: fused.ssd_as_gla; experimental). It changes
no parameter and not the reference path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from zigma.mixer import fused as _fused
from zigma.mixer.mamba import (
    BACKENDS,
    COMBINES,
    _causal_conv_silu,
    _copy_random,
    branch_orders,
    choose_backend,
    over_directions,
)
from zigma.mixer.ssd import ssd_chunked

__all__ = ["SSD_KERNELS", "GatedRMSNorm", "Mamba2Mixer"]

SSD_KERNELS = ("mamba-ssm", "fla")  # the fused path's SSD: mamba-ssm's Triton SSD or fla's simple GLA


def _names(k: int) -> dict[str, str]:
    """Attribute names of direction k's SSM parameters."""
    sfx = "" if k == 0 else "_b" if k == 1 else f"_p{k}"
    return {"conv1d": f"conv1d{sfx}", "dt_bias": f"dt_bias{sfx}", "A_log": f"A{sfx}_log", "D": f"D{sfx}"}


class GatedRMSNorm(nn.Module):
    """mamba_ssm's RMSNormGated with norm_before_gate=False: (y, z) (..., E) -> rmsnorm(y * silu(z)) * weight,
    the mean square taken over groups of `group_size` channels, in fp32, returned in y's dtype."""

    def __init__(self, dim: int, *, group_size: int, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        self.eps, self.group_size = eps, group_size
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, y: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """z None: y is gated already (y * silu(z), as mamba-ssm's split kernel returns it without its norm)."""
        work = torch.promote_types(y.dtype, torch.float32)
        gated = y.to(work) if z is None else y.to(work) * F.silu(z.to(work))
        g = rearrange(gated, "... (g d) -> ... g d", d=self.group_size)
        g = g * torch.rsqrt(g.square().mean(dim=-1, keepdim=True) + self.eps)
        return (rearrange(g, "... g d -> ... (g d)") * self.weight.to(work)).to(y.dtype)


class Mamba2Mixer(nn.Module):
    """Mamba-2 mixer (B, L, D) -> (B, L, D); backend 'fused' (mamba-ssm's Triton SSD + causal-conv1d, CUDA),
    'reference' (chunked SSD in PyTorch, any device) or 'auto' (fused where importable and the input on CUDA).
    ssd: the fused path's SSD kernel, 'mamba-ssm' or 'fla' (flash-linear-attention, needs fla-core here)."""

    def __init__(self, d_model, d_state=64, d_conv=4, expand=2, headdim=64, ngroups=1, A_init_range=(1, 16),
                 dt_min=1e-3, dt_max=0.1, dt_init_floor=1e-4, bias=False, conv_bias=True, chunk_size=256,
                 num_directions=1, combine="sum", backend="auto", ssd="mamba-ssm", layer_idx=None, device=None,
                 dtype=None, generator: torch.Generator | None = None):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown mixer backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if ssd not in SSD_KERNELS:
            raise ValueError(f"unknown ssd {ssd!r}; choose one of {', '.join(SSD_KERNELS)}")
        if combine not in COMBINES:
            raise ValueError(f"unknown combine {combine!r}; choose one of {', '.join(COMBINES)}")
        if num_directions < 1:
            raise ValueError(f"num_directions must be >= 1, got {num_directions}")
        d_inner = int(expand * d_model)
        if d_inner % headdim:
            fits = next(p for p in (64, 32, 16, 8, 4, 2, 1) if d_inner % p == 0 and p < headdim)
            raise ValueError(f"d_inner = expand * d_model = {d_inner} is not a multiple of headdim {headdim} "
                             f"(mixer option headdim: {fits} fits)")
        if (d_inner // headdim) % ngroups:
            raise ValueError(f"{d_inner // headdim} heads do not split into ngroups={ngroups}")
        if not 0 < A_init_range[0] <= A_init_range[1]:
            raise ValueError(f"A_init_range must satisfy 0 < low <= high, got {A_init_range}")
        if ssd == "fla":  # asked for by name: missing is an error on any backend, never a silent fallback
            _fused.gla_kernel()  # raises FusedUnavailableError naming fla-core and the install command
        elif backend == "fused":
            _fused.ssd_kernels()  # raises FusedUnavailableError naming the packages and the install command
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner, self.headdim, self.ngroups = d_inner, headdim, ngroups
        self.nheads = d_inner // headdim
        self.chunk_size, self.num_directions, self.combine = chunk_size, num_directions, combine
        self.backend, self.ssd, self.layer_idx = backend, ssd, layer_idx
        self._init = {"dt": (dt_min, dt_max, dt_init_floor), "A": tuple(A_init_range)}
        conv_dim = d_inner + 2 * ngroups * d_state

        self.in_proj = nn.Linear(d_model, 2 * d_inner + 2 * ngroups * d_state + self.nheads, bias=bias, **factory)
        for k in range(num_directions):
            names = _names(k)
            setattr(self, names["conv1d"], nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim,
                                                     padding=d_conv - 1, bias=conv_bias, **factory))
            setattr(self, names["dt_bias"], nn.Parameter(self._dt_bias(device, dtype, None)))
            A = torch.empty(self.nheads, dtype=torch.float32, device=device).uniform_(*A_init_range)
            setattr(self, names["A_log"], nn.Parameter(torch.log(A).to(dtype=dtype)))
            setattr(self, names["D"], nn.Parameter(torch.ones(self.nheads, device=device)))  # fp32
            for key in ("dt_bias", "A_log", "D"):
                getattr(self, names[key])._no_weight_decay = True
        self.norm = GatedRMSNorm(d_inner, group_size=d_inner // ngroups, eps=1e-5, **factory)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias, **factory)
        if generator is not None:
            self.reset_parameters(generator)

    def _dt_bias(self, device, dtype, generator) -> torch.Tensor:
        """softplus^-1(dt), dt = exp(U(log dt_min, log dt_max)) clamped at dt_init_floor: (H,)."""
        dt_min, dt_max, floor = self._init["dt"]
        gen = {} if generator is None else {"generator": generator}
        where = device if generator is None else generator.device
        u = torch.rand(self.nheads, device=where, dtype=dtype, **gen)
        dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
        return (dt + torch.log(-torch.expm1(-dt))).to(device)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Redraw every parameter from `generator` (nn.Linear/nn.Conv1d defaults + Mamba2's dt, A and D)."""
        for layer in self.modules():
            if isinstance(layer, (nn.Linear, nn.Conv1d)):
                bound = 1.0 / math.sqrt(layer.weight[0].numel())  # kaiming_uniform(a=sqrt 5) = U(+-1/sqrt(fan_in))
                _copy_random(layer.weight, generator, -bound, bound)
                if layer.bias is not None:
                    _copy_random(layer.bias, generator, -bound, bound)
        for k in range(self.num_directions):
            names = _names(k)
            dt_bias = getattr(self, names["dt_bias"])
            dt_bias.copy_(self._dt_bias(dt_bias.device, dt_bias.dtype, generator))
            A = torch.empty(self.nheads, dtype=torch.float32, device=generator.device)
            A.uniform_(*self._init["A"], generator=generator)
            getattr(self, names["A_log"]).copy_(torch.log(A))
            getattr(self, names["D"]).fill_(1.0)
        self.norm.weight.fill_(1.0)

    def direction_parameters(self, k: int) -> tuple[nn.Conv1d, nn.Parameter, nn.Parameter, nn.Parameter]:
        """(conv1d, dt_bias, A_log, D) of direction k."""
        names = _names(k)
        return tuple(getattr(self, names[key]) for key in ("conv1d", "dt_bias", "A_log", "D"))

    def backend_used(self, x: torch.Tensor) -> str:
        """'fused' or 'reference': the path `forward(x)` takes for this input (device, dtype)."""
        return choose_backend(self.backend, x, _fused.gla_available if self.ssd == "fla" else _fused.ssd_available)

    @property
    def fused_chunk(self) -> int:
        """The chunk length of the fused SSD kernel: chunk_size for mamba-ssm's, fla's own for ssd 'fla'."""
        return _fused.GLA_CHUNK if self.ssd == "fla" else self.chunk_size

    def _ssm(self, xbc: torch.Tensor, k: int, fused: bool) -> torch.Tensor:
        """Direction k's conv + SSD: xbc (B, L, E + 2GN) in its order -> y (B, L, E), D skip included."""
        conv1d, dt_bias, A_log, D = self.direction_parameters(k)
        e, gn = self.d_inner, self.ngroups * self.d_state
        dt = xbc[..., e + 2 * gn:]  # (B, L, H): the dt columns ride along after x, B, C
        xbc = xbc[..., : e + 2 * gn]
        xbc = _fused.causal_conv_silu(xbc, conv1d) if fused else _causal_conv_silu(xbc, conv1d)
        x, B, C = torch.split(xbc, [e, gn, gn], dim=-1)
        args = (rearrange(x, "b l (h p) -> b l h p", p=self.headdim), dt, -torch.exp(A_log.float()),
                rearrange(B, "b l (g n) -> b l g n", g=self.ngroups),
                rearrange(C, "b l (g n) -> b l g n", g=self.ngroups))
        if fused and self.ssd == "fla":
            y = _fused.gla_scan(*args, D=D, dt_bias=dt_bias)  # (B, L, H, P)
        elif fused:
            y = _fused.ssd_scan(*args, chunk_size=self.chunk_size, D=D, dt_bias=dt_bias)  # (B, L, H, P)
        else:
            with torch.autocast(xbc.device.type, enabled=False), torch.profiler.record_function("zigma::ssd"):
                # the reference SSD computes in fp32 throughout; the range names it in profiles
                y = ssd_chunked(*args, chunk_size=self.chunk_size, D=D, dt_bias=dt_bias)  # (B, L, H, P)
        return rearrange(y, "b l h p -> b l (h p)")

    def forward(self, x: torch.Tensor, *, segments: int = 1, branch_index=None) -> torch.Tensor:
        """x: (B, L, D) in direction 0's order -> (B, L, D) in the same order.

        segments: L splits into that many equal independent sequences. branch_index: for directions k >= 1,
        a (L,) LongTensor (direction k's sequence is x[:, idx]) or None for the reversed sequence.
        """
        batch, length, _ = x.shape
        if length % segments:
            raise ValueError(f"{length} tokens do not split into {segments} segments")
        orders = branch_orders(self.num_directions, branch_index, length, x.device)
        fused = self.backend_used(x) == "fused"
        if fused and self.num_directions == 1 and self.ssd == "mamba-ssm":
            out = _fused.mamba2_forward(self, x.reshape(batch * segments, length // segments, -1))
            return out.reshape(batch, length, -1)  # (B, L, D)
        if (fused and self.ssd == "mamba-ssm" and segments == 1
                and _fused.ssd_kernels()["split_conv1d_scan"] is not None):
            return _fused.mamba2_directions_forward(self, x, orders, self.combine)  # K split kernels, one norm
        zxbcdt = self.in_proj(x)  # (B, L, 2E + 2GN + H)
        z, xbcdt = zxbcdt[..., : self.d_inner], zxbcdt[..., self.d_inner:]
        y = over_directions(xbcdt, orders, segments, lambda u, k: self._ssm(u, k, fused), self.combine)  # (B, L, E)
        return self.out_proj(self.norm(y, z))  # (B, L, D)

    def flops(self, batch: int, length: int) -> int:
        """MACs of one call on (batch, length, d_model) tokens: projections, conv, and the chunked SSD as the
        fused kernels compute it (full Q x Q chunk products: C.B^T, its product with x, chunk states in/out;
        C.B^T once a group with mamba-ssm's kernel, once a head with fla's, which gets B and C expanded)."""
        bl, d, e, n, g = batch * length, self.d_model, self.d_inner, self.d_state, self.ngroups
        q, scores = min(self.fused_chunk, length), self.nheads if self.ssd == "fla" else g
        per_direction = bl * (e + 2 * g * n) * self.d_conv + bl * (q * scores * n + q * e + 2 * e * n) + bl * e
        return bl * d * (2 * e + 2 * g * n + self.nheads) + self.num_directions * per_direction + bl * e * d

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
                f"headdim={self.headdim}, ngroups={self.ngroups}, chunk_size={self.chunk_size}, "
                f"num_directions={self.num_directions}, combine={self.combine!r}, backend={self.backend!r}, "
                f"ssd={self.ssd!r}")

