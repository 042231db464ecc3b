"""MambaMixer: a Mamba-1 mixer with mamba_ssm.Mamba's parameters, K scan directions and two backends."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import repeat
from torch import nn

from zigma.mixer import fused as _fused
from zigma.mixer.segments import SEGMENT_LAYOUTS, SegmentPacking, segment_layout_used
from zigma.mixer.selective_scan import selective_scan_bld
from zigma.scans.base import inverse, permute_tokens

__all__ = ["BACKENDS", "COMBINES", "MambaMixer", "branch_orders", "direction_names"]

BACKENDS = ("auto", "fused", "reference")
COMBINES = ("sum", "mean")
_FUSABLE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def choose_backend(backend: str, x: torch.Tensor, available) -> str:
    """'fused' or 'reference' for a mixer asked for `backend` and given input x; `available()` says whether the
    fused kernels import. Asking for 'fused' on a tensor the kernels cannot take is an error, not a fallback."""
    fusable = x.is_cuda and x.dtype in _FUSABLE_DTYPES
    if backend == "reference":
        return "reference"
    if backend == "fused":
        if not fusable:
            raise ValueError(f"mixer backend 'fused' runs on CUDA fp32/fp16/bf16 tensors, got a {x.dtype} "
                             f"tensor on {x.device}; use backend 'reference' or 'auto'")
        return "fused"
    return "fused" if fusable and available() else "reference"
_reference_scan = selective_scan_bld  # module attribute so tests can swap in the step-by-step loop


def direction_names(k: int) -> dict[str, str]:
    """Attribute names of direction k's SSM: k=0 mamba_ssm's, k=1 Vim's '_b' names, k>=2 '_p{k}'."""
    sfx = "" if k == 0 else "_b" if k == 1 else f"_p{k}"
    return {"conv1d": f"conv1d{sfx}", "x_proj": f"x_proj{sfx}", "dt_proj": f"dt_proj{sfx}",
            "A_log": f"A{sfx}_log", "D": f"D{sfx}"}


class MambaMixer(nn.Module):
    """Mamba-1 mixer (B, L, D) -> (B, L, D); parameters named, shaped and initialised as `mamba_ssm.Mamba`.

    num_directions=K runs K SSMs (own conv1d/x_proj/dt_proj/A_log/D each; in_proj and out_proj shared) on K
    token orders of the same sequence and combines their outputs before out_proj ('sum', as Vim v2 and
    ZigMa's Sweep-2, or 'mean'). Every direction gets mamba_ssm's dt and S4D-real initialisation (Vim leaves
    dt_proj_b at nn.Linear's default). backend: 'fused' (mamba-ssm kernels, CUDA tensors), 'reference'
    (pure PyTorch, any device) or 'auto' (fused where importable and the input is on CUDA). segment_layout:
    how `forward(x, segments=S)` runs S > 1 independent segments, 'batch' (folded into the batch) or 'packed' (one
    row a sample, the state reset at separators; zigma/mixer/segments.py), the same function either way; 'auto'
    picks one (`segment_layout_used`).
    """

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_rank="auto", dt_min=1e-3, dt_max=0.1,
                 dt_init="random", dt_scale=1.0, dt_init_floor=1e-4, conv_bias=True, bias=False,
                 num_directions=1, combine="sum", backend="auto", segment_layout="auto", layer_idx=None,
                 device=None, dtype=None, generator: torch.Generator | None = None):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown mixer backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if segment_layout not in SEGMENT_LAYOUTS:
            raise ValueError(f"unknown segment_layout {segment_layout!r}; choose one of {', '.join(SEGMENT_LAYOUTS)}")
        if combine not in COMBINES:
            raise ValueError(f"unknown combine {combine!r}; choose one of {', '.join(COMBINES)}")
        if dt_init not in ("random", "constant"):
            raise ValueError(f"unknown dt_init {dt_init!r}; choose 'random' or 'constant'")
        if num_directions < 1:
            raise ValueError(f"num_directions must be >= 1, got {num_directions}")
        if backend == "fused":
            _fused.fused_kernels()  # raises FusedUnavailableError naming the packages and the install command
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.num_directions, self.combine, self.backend, self.layer_idx = num_directions, combine, backend, layer_idx
        self.segment_layout = segment_layout
        self._dt = {"dt_min": dt_min, "dt_max": dt_max, "dt_init": dt_init, "dt_scale": dt_scale,
                    "dt_init_floor": dt_init_floor}

        # Creation order = mamba_ssm.Mamba's, so one seed gives the same weights for num_directions=1.
        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias, **factory)
        for k in range(num_directions):
            names = direction_names(k)
            setattr(self, names["conv1d"], nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner,
                                                     padding=d_conv - 1, bias=conv_bias, **factory))
            setattr(self, names["x_proj"], nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory))
            dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)
            setattr(self, names["dt_proj"], dt_proj)
            self._init_dt_proj(dt_proj, None)
            A = repeat(torch.arange(1, d_state + 1, dtype=torch.float32, device=device), "n -> d n", d=self.d_inner)
            setattr(self, names["A_log"], nn.Parameter(torch.log(A.contiguous())))  # S4D real, fp32
            setattr(self, names["D"], nn.Parameter(torch.ones(self.d_inner, device=device)))  # fp32
            getattr(self, names["A_log"])._no_weight_decay = True
            getattr(self, names["D"])._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)
        if generator is not None:
            self.reset_parameters(generator)

    def _init_dt_proj(self, dt_proj: nn.Linear, generator: torch.Generator | None) -> None:
        """mamba_ssm's dt init: weight U(+-std) (or constant), bias = softplus^-1(dt), dt log-uniform."""
        c = self._dt
        std = self.dt_rank**-0.5 * c["dt_scale"]
        w = dt_proj.weight
        if c["dt_init"] == "constant":
            nn.init.constant_(w, std)
        elif generator is None:
            nn.init.uniform_(w, -std, std)
        else:
            _copy_random(w, generator, -std, std)
        gen = {} if generator is None else {"generator": generator}
        where = w.device if generator is None else generator.device
        u = torch.rand(self.d_inner, device=where, dtype=w.dtype, **gen).to(w.device)
        lo, hi = math.log(c["dt_min"]), math.log(c["dt_max"])
        dt = torch.exp(u * (hi - lo) + lo).clamp(min=c["dt_init_floor"])
        inv_dt = dt + torch.log(-torch.expm1(-dt))  # inverse softplus
        with torch.no_grad():
            dt_proj.bias.copy_(inv_dt)
        dt_proj.bias._no_reinit = True

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Redraw every parameter from `generator` (same distributions as nn.Linear/nn.Conv1d + mamba_ssm)."""
        for layer in self.modules():
            if isinstance(layer, (nn.Linear, nn.Conv1d)) and layer is not self:
                bound = 1.0 / math.sqrt(layer.weight[0].numel())  # kaiming_uniform(a=sqrt 5) = U(+-1/sqrt(fan_in))
                _copy_random(layer.weight, generator, -bound, bound)
                if layer.bias is not None:
                    _copy_random(layer.bias, generator, -bound, bound)
        for k in range(self.num_directions):
            names = direction_names(k)
            self._init_dt_proj(getattr(self, names["dt_proj"]), generator)
            A = torch.arange(1, self.d_state + 1, dtype=torch.float32)
            getattr(self, names["A_log"]).copy_(torch.log(A).expand(self.d_inner, -1))
            getattr(self, names["D"]).fill_(1.0)

    def direction_parameters(self, k: int) -> tuple[nn.Conv1d, nn.Linear, nn.Linear, nn.Parameter, nn.Parameter]:
        """(conv1d, x_proj, dt_proj, A_log, D) of direction k."""
        names = direction_names(k)
        return tuple(getattr(self, names[key]) for key in ("conv1d", "x_proj", "dt_proj", "A_log", "D"))

    def backend_used(self, x: torch.Tensor) -> str:
        """'fused' or 'reference': the path `forward(x)` takes for this input (device, dtype)."""
        return choose_backend(self.backend, x, _fused.fused_available)

    def forward(self, x: torch.Tensor, *, segments: int = 1, branch_index=None) -> torch.Tensor:
        """x: (B, L, D) in direction 0's order -> (B, L, D) in the same order.

        segments: L splits into that many equal independent sequences. branch_index: for directions k >= 1,
        a (L,) LongTensor (direction k's sequence is x[:, idx]) or None for the reversed sequence.
        """
        batch, length, _ = x.shape
        if length % segments:
            raise ValueError(f"{length} tokens do not split into {segments} segments")
        orders = branch_orders(self.num_directions, branch_index, length, x.device)
        backend = self.backend_used(x)
        packed = segment_layout_used(self.segment_layout, segments=segments, length=length, backend=backend) == "packed"
        if backend == "fused" and self.num_directions == 1 and not packed:
            out = _fused.mamba_forward(self, x.reshape(batch * segments, length // segments, -1))
            return out.reshape(batch, length, -1)  # (B, L, D)
        if backend == "fused" and segments == 1 and _fused.fused_kernels()["mamba_inner_fn"] is not None:
            return _fused.mamba_directions_forward(self, x, orders, self.combine)  # K fused layers, one in_proj
        branch = _fused.ssm_branch if backend == "fused" else _reference_branch
        packing = SegmentPacking(segments, length, self.d_conv) if packed else None
        xz = F.linear(x, self.in_proj.weight, self.in_proj.bias)  # (B, L, 2 * d_inner)
        # packed: each direction's whole sequence goes to the branch (over_directions splits nothing), which packs it
        y = over_directions(xz, orders, 1 if packed else segments,
                            lambda u, k: branch(u, *self.direction_parameters(k), packing=packing),
                            self.combine)  # (B, L, d_inner)
        return self.out_proj(y)  # (B, L, D)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
                f"dt_rank={self.dt_rank}, num_directions={self.num_directions}, combine={self.combine!r}, "
                f"backend={self.backend!r}, segment_layout={self.segment_layout!r}")


def over_directions(u: torch.Tensor, orders: list, segments: int, branch, combine: str) -> torch.Tensor:
    """u (B, L, C) in direction 0's order -> the directions' outputs (B, L, E) back in that order, summed (or
    averaged: combine 'mean'). Direction k sees u in its own order (`orders[k - 1]`: a gather index, or None for
    the reversed sequence), split into `segments` independent sequences: `branch(u_k (B*S, L/S, C), k)`."""
    batch, length, _ = u.shape
    y = None
    for k in range(len(orders) + 1):
        idx = orders[k - 1] if k else None
        inv = None if idx is None else inverse(idx)
        u_k = u if k == 0 else u.flip(1) if idx is None else permute_tokens(u, idx, inv)  # direction k's order
        y_k = branch(u_k.reshape(batch * segments, length // segments, -1), k).reshape(batch, length, -1)
        if k:
            y_k = y_k.flip(1) if idx is None else permute_tokens(y_k, inv, idx)  # back to order 0
        y = y_k if y is None else y + y_k
    return y / (len(orders) + 1) if combine == "mean" else y


def branch_orders(num_directions: int, branch_index, length: int, device) -> list[torch.Tensor | None]:
    """Gather index of directions 1..K-1 (None = reversed sequence), checked: any mixer's `branch_index`."""
    extra = num_directions - 1
    if branch_index is None:
        return [None] * extra
    branch_index = list(branch_index)
    if len(branch_index) != extra:
        raise ValueError(f"branch_index has {len(branch_index)} entries; a mixer with {num_directions} "
                         f"directions needs {extra}")
    for k, idx in enumerate(branch_index, start=1):
        if idx is not None and (idx.dtype != torch.long or idx.shape != (length,)):
            raise ValueError(f"branch_index[{k - 1}] must be a ({length},) LongTensor, got "
                             f"{tuple(idx.shape)} {idx.dtype}")
    return [None if idx is None else idx.to(device) for idx in branch_index]


def _copy_random(t: torch.Tensor, generator: torch.Generator, lo: float, hi: float) -> None:
    """t <- U(lo, hi) drawn on the generator's device."""
    draw = torch.empty(t.shape, dtype=t.dtype, device=generator.device).uniform_(lo, hi, generator=generator)
    t.copy_(draw)


class _CausalConvSiLU(torch.autograd.Function):
    """silu(causal depthwise conv1d(x)) in token-major layout: x (B, L, D); weight (D, K); bias (D,) or None.

    conv[t] = bias + sum_k weight[:, k] x[t - (K - 1) + k] (zeros before the start), as K shifted in-place
    multiply-adds over the whole sequence, with a hand-written backward (the same shifts the other way), so no
    (B, D, L) transposes and no zero-padded copies: ~2-3x faster than nn.Conv1d + SiLU forward + backward on CPU.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        k_last = weight.shape[1] - 1
        pre = x * weight[:, k_last] if bias is None else torch.addcmul(bias, x, weight[:, k_last])  # (B, L, D)
        for k in range(k_last):
            shift = k_last - k  # tap k reads x[t - shift]
            pre[:, shift:].addcmul_(x[:, :-shift], weight[:, k])
        ctx.save_for_backward(x, weight, pre)
        ctx.has_bias = bias is not None
        return F.silu(pre)  # (B, L, D)

    @staticmethod
    def backward(ctx, dout):
        x, weight, pre = ctx.saved_tensors
        k_last = weight.shape[1] - 1
        dpre = torch.ops.aten.silu_backward(dout, pre)  # (B, L, D)
        dx = dpre * weight[:, k_last]  # (B, L, D)
        dweight = torch.empty_like(weight)  # (D, K)
        dweight[:, k_last] = (dpre * x).sum((0, 1))
        for k in range(k_last):
            shift = k_last - k
            dx[:, :-shift].addcmul_(dpre[:, shift:], weight[:, k])
            dweight[:, k] = (dpre[:, shift:] * x[:, :-shift]).sum((0, 1))
        return dx, dweight, dpre.sum((0, 1)) if ctx.has_bias else None


def _causal_conv_silu(x: torch.Tensor, conv1d: nn.Conv1d) -> torch.Tensor:
    """Causal depthwise conv + SiLU in token-major layout: (B, L, D) -> (B, L, D); conv1d holds the weights."""
    return _CausalConvSiLU.apply(x, conv1d.weight[:, 0], conv1d.bias)  # weight (D, 1, K) -> (D, K)


def _reference_branch(xz, conv1d, x_proj, dt_proj, A_log, D, *, packing=None) -> torch.Tensor:
    """One direction in pure PyTorch: xz (B, L, 2 * d_inner) -> y (B, L, d_inner), before out_proj.

    packing: a `SegmentPacking`: xz's segments then run as one packed row a sample (see zigma/mixer/segments.py)."""
    if packing is not None:
        xz = packing.pack(xz)  # (B, L', 2 * d_inner), L' = S * (P + T)
    x, z = xz.chunk(2, dim=-1)  # (B, L, d_inner) each
    x = _causal_conv_silu(x, conv1d)  # (B, L, d_inner)
    if packing is not None:
        x = packing.zero_separators(x, channels_last=True)  # u = 0 there, so B = C = 0 there too
    d_state = A_log.shape[1]
    dt, B, C = torch.split(F.linear(x, x_proj.weight), [dt_proj.in_features, d_state, d_state], dim=-1)
    dt = F.linear(dt, dt_proj.weight)  # (B, L, d_inner); the bias is added in fp32 inside the scan
    A = -torch.exp(A_log.float())  # (d_inner, d_state)
    if packing is not None:
        dt = packing.reset_steps(dt, A, dt_proj.bias, channels_last=True)  # (B, L, d_inner)
    y = _reference_scan(x, dt, A, B, C, D.float(), z, dt_proj.bias.float(), True)
    return y if packing is None else packing.unpack(y)  # (B, L, d_inner) real tokens
