"""Independent segments of a sequence packed into one row: mamba-ssm's unchanged kernels, state reset at separators.

A scan layer may split its L tokens into S independent segments of T = L/S (a video's temporal layer: H*W segments
of T frames, its spatial layer: T segments of H*W). Two layouts compute the same function:

- 'batch': fold the segments into the batch, (B, L, C) -> (B*S, T, C). mamba-ssm's selective scan launches one
  thread block per (sequence, channel) and a block costs about the same at T = 8 as at T = 2,048, so short
  segments cost many blocks for little work each.
- 'packed': one row per sample, each segment preceded by P = max(d_conv - 1, 1) separator positions,

      [0]*P seg_0 [0]*P seg_1 ... [0]*P seg_{S-1}                         (S * (P + T) positions a row)

  The separators are zeros before the causal conv, so each segment's first token sees the zeros the 'batch'
  layout pads with. After the conv they get input u = 0 (hence B = C = x_proj(0) = 0: x_proj has no bias) and a
  step dt so large that exp(dt * A) underflows to exactly 0 for every state (`reset_steps`). At a separator s:

      h_s = exp(dt_s A) h_{s-1} + dt_s B_s u_s = 0 * h_{s-1} + 0 = 0   exactly,

  so every segment starts from the zero state, as in the 'batch' layout. Backward, with g_s the adjoint of h_s:
  the adjoint passed from s to s-1 is exp(dt_s A) g_s = 0; d(dt_s) = g_s A exp(dt_s A) h_{s-1} + g_s B_s u_s = 0;
  the separator's share of dA is g_s dt_s exp(dt_s A) h_{s-1} = 0, of dB_s g_s dt_s u_s = 0, of dC_s dy_s h_s = 0,
  of dD dy_s u_s = 0; dt_s is a constant (no gradient reaches dt_proj or x_proj from it) and u_s is masked (none
  reaches the conv's output there). Every gradient is therefore a sum over real tokens only, the 'batch' layout's,
  up to summation order. The products dt_s * 0 are exact as long as dt_s and what multiplies it stay finite,
  which bounds the step (`reset_steps`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["PACKED_MAX_SEGMENT_LEN", "SEGMENT_LAYOUTS", "SegmentPacking", "segment_layout_used"]

SEGMENT_LAYOUTS = ("auto", "batch", "packed")
_HEADROOM = 1e-12  # a reset step stays below this fraction of the scan dtype's largest value (see `reset_steps`)


#: the longest segment 'auto' packs: measured on one H200 (benchmarks/results/segment_layout_h200.md, bf16, one
#: Mamba-1 layer fwd+bwd) packed took 0.12x the batch-folded time at 64 segments of 8 tokens and 0.82-0.89x at 8 of
#: 64; longer segments were not measured, so they keep the batch layout
PACKED_MAX_SEGMENT_LEN = 64


def segment_layout_used(layout: str, *, segments: int, length: int, backend: str) -> str:
    """'batch' or 'packed': the layout a mixer asked for `layout` runs `segments` segments of a `length`-token
    sequence in, on `backend` ('fused' or 'reference'). The one place that decides 'auto': packed for the fused
    kernels with 2 or more segments of at most PACKED_MAX_SEGMENT_LEN tokens (where a GPU run measured it faster),
    batch otherwise (the CPU reference scan was not faster packed: benchmarks/results/segment_layout_cpu.md)."""
    if layout != "auto":
        return layout
    if backend == "fused" and segments > 1 and length // segments <= PACKED_MAX_SEGMENT_LEN:
        return "packed"
    return "batch"


class SegmentPacking:
    """The 'packed' layout of `segments` equal segments of a `length`-token sequence, with max(d_conv - 1, 1)
    separators before each (a reset needs one position even without a conv history to pad)."""

    def __init__(self, segments: int, length: int, d_conv: int) -> None:
        if segments < 1 or length % segments:
            raise ValueError(f"{length} tokens do not split into {segments} segments")
        self.segments, self.seg_len, self.pad = segments, length // segments, max(d_conv - 1, 1)
        self.period = self.pad + self.seg_len  # positions a segment takes in a packed row

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, C) -> (B, S * (P + T), C): each segment after P zero separators."""
        b, _, c = x.shape
        return F.pad(x.reshape(b, self.segments, self.seg_len, c), (0, 0, self.pad, 0)).reshape(b, -1, c)

    def unpack(self, y: torch.Tensor) -> torch.Tensor:
        """y (B, S * (P + T), C) -> the real tokens (B, L, C)."""
        b, _, c = y.shape
        return y.reshape(b, self.segments, self.period, c)[:, :, self.pad:].reshape(b, -1, c)

    def _separators(self, x: torch.Tensor, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(x with its packed axis split into (S, P + T), a bool mask of the separators broadcasting over it).
        x is (B, S * (P + T), C) when channels_last, else (B, C, S * (P + T))."""
        dim = 1 if channels_last else 2
        sep = torch.arange(self.period, device=x.device) < self.pad  # (P + T,)
        return x.unflatten(dim, (self.segments, self.period)), sep[:, None] if channels_last else sep

    def zero_separators(self, u: torch.Tensor, *, channels_last: bool) -> torch.Tensor:
        """u with zeros at the separators (no gradient flows into them); u is (B, S * (P + T), C) when
        channels_last, else (B, C, S * (P + T))."""
        view, sep = self._separators(u, channels_last)
        return view.masked_fill(sep, 0).flatten(*((1, 2) if channels_last else (2, 3)))

    def reset_steps(self, delta: torch.Tensor, A: torch.Tensor, delta_bias: torch.Tensor | None, *,
                    channels_last: bool) -> torch.Tensor:
        """delta (pre-softplus steps; (B, S * (P + T), D) when channels_last, else (B, D, S * (P + T))) with each
        channel's reset step at the separators; A (D, N) < 0, delta_bias (D,) as the scan takes them.

        The scan computes exp(softplus(delta + bias) * A) in a dtype whose smallest subnormal is e^-tau (fp32:
        tau = 103.3, also for bf16/fp16 inputs; fp64: 744.4). Channel d's step big_d = 2 tau / a_d + 2 |bias_d|,
        a_d = min_n |A_dn|, gives dt_d = softplus(big_d + bias_d) >= big_d + bias_d >= 2 tau / a_d (rounding big_d
        to bf16 costs < 1% of the margin 2), so every exp(dt_d A_dn) <= e^(-2 tau) rounds to exactly 0.
        Bound: big_d must stay below 1e-12 of the dtype's largest value (3.4e26 in fp32), so that dt times a
        gradient stays finite before it meets the zeros; that holds while a_d >= 2 tau / 3.4e26 (A_log >= -55.8
        in fp32, a time constant of 1e24 tokens; A_log starts at log(1..N)). A channel past it gets a NaN step,
        so a NaN output shows it instead of a silent leak between segments. fp16 deltas (largest value 65504) are
        returned in fp32: the caller then runs the scan in fp32.
        """
        scan_dtype = torch.promote_types(delta.dtype, torch.float32)
        info = torch.finfo(scan_dtype)
        tau = -math.log(info.tiny) - math.log(info.eps)  # smallest subnormal = tiny * eps
        big_max = info.max * _HEADROOM
        with torch.no_grad():
            a_min = A.detach().to(scan_dtype).abs().amin(dim=-1)  # (D,)
            big = 2 * tau / a_min
            if delta_bias is not None:
                big = big + 2 * delta_bias.detach().to(scan_dtype).abs()
            big = torch.where(big <= big_max, big, torch.nan)  # (D,); also a_min = 0 (inf) -> NaN
        if torch.finfo(delta.dtype).max < big_max:
            delta = delta.to(scan_dtype)
        view, sep = self._separators(delta, channels_last)
        big = big.to(delta.dtype) if channels_last else big.to(delta.dtype)[:, None, None]  # broadcast over D
        return torch.where(sep, big, view).flatten(*((1, 2) if channels_last else (2, 3)))
