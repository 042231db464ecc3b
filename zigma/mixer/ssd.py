"""Chunked SSD (Mamba-2's state space duality, Dao & Gu 2024, §6) in pure PyTorch.

Layout as `mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined`: x (B, L, H, P), dt (B, L, H),
A (H,), B and C (B, L, G, N) with head h reading group h // (H / G), D (H,), dt_bias (H,):

    dt_t = softplus(dt_t + dt_bias)
    h_t  = exp(dt_t * A) h_{t-1} + dt_t * B_t x_t^T           (per head: state (P, N))
    y_t  = h_t C_t + D * x_t

The sequence is cut into chunks of Q tokens (the last one padded with dt = 0, which neither decays nor adds
anything). Within a chunk the output is the quadratic "attention" form y = (L o C B^T) (dt x) with the decay
mask L[i, j] = exp(sum_{k=j+1..i} dt_k A); between chunks each chunk's final state is carried by a recurrence
over chunks (a (C+1, C+1) decay matrix, C chunks), and its contribution is C_t exp(cumsum(dt A)_t) h_chunk.
All of it is einsum / cumsum / exp, so autograd differentiates it exactly. It computes in fp32 (fp64 inputs
stay fp64) and returns x's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat

__all__ = ["ssd_chunked"]


def _segsum(a: torch.Tensor) -> torch.Tensor:
    """a (..., T) -> (..., T, T): out[i, j] = sum_{k=j+1..i} a_k for i >= j, -inf above the diagonal.

    Differences of one cumsum would cancel catastrophically for long chunks; this sums each segment directly
    (a masked cumsum down the columns)."""
    t = a.shape[-1]
    a = repeat(a, "... t -> ... t s", s=t)  # a[..., i, j] = a_i
    strict = torch.tril(torch.ones(t, t, dtype=torch.bool, device=a.device), diagonal=-1)
    out = torch.cumsum(a.masked_fill(~strict, 0), dim=-2)
    return out.masked_fill(~torch.tril(torch.ones_like(strict)), float("-inf"))


def ssd_chunked(x, dt, A, B, C, *, chunk_size: int = 256, D=None, dt_bias=None, dt_softplus: bool = True):
    """x (B, L, H, P), dt (B, L, H), A (H,), B/C (B, L, G, N) -> y (B, L, H, P) in x's dtype (D skip included)."""
    _batch, length, heads, _ = x.shape
    groups = B.shape[2]
    assert heads % groups == 0, f"{heads} heads do not split into {groups} groups"
    work = torch.promote_types(x.dtype, torch.float32)
    xw, dtw = x.to(work), dt.to(work)
    if dt_bias is not None:
        dtw = dtw + dt_bias.to(work)
    if dt_softplus:
        dtw = F.softplus(dtw)
    Bw = B.to(work).repeat_interleave(heads // groups, dim=2)  # (B, L, H, N)
    Cw = C.to(work).repeat_interleave(heads // groups, dim=2)
    q = max(1, min(chunk_size, length))
    pad = (-length) % q
    if pad:  # dt = 0 on padding: decay exp(0) = 1 and no input, so the real tokens are unchanged
        xw, Bw, Cw = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (xw, Bw, Cw))
        dtw = F.pad(dtw, (0, 0, 0, pad))
    xs, Bs, Cs = (rearrange(t, "b (c q) h n -> b c q h n", q=q) for t in (xw * dtw[..., None], Bw, Cw))
    dA = rearrange(dtw * A.to(work), "b (c q) h -> b h c q", q=q)  # (B, H, C, Q), <= 0
    dA_cum = torch.cumsum(dA, dim=-1)

    # 1. within each chunk: y_i = sum_{j <= i} (C_i . B_j) exp(dA_{j+1..i}) dt_j x_j
    scores = torch.einsum("bcihn,bcjhn->bchij", Cs, Bs) * rearrange(torch.exp(_segsum(dA)), "b h c i j -> b c h i j")
    y = torch.einsum("bchij,bcjhp->bcihp", scores, xs)
    # 2. each chunk's final state from its own tokens: sum_j exp(dA_{j+1..end}) B_j (dt_j x_j)^T
    to_end = rearrange(torch.exp(dA_cum[..., -1:] - dA_cum), "b h c j -> b c j h")  # (B, C, Q, H)
    states = torch.einsum("bcjhn,bcjhp->bchpn", Bs * to_end[..., None], xs)
    # 3. carry states across chunks: state entering chunk c = sum_{c' < c} exp(dA of chunks c'+1..c-1) states_c'
    chunk_dA = F.pad(dA_cum[..., -1], (1, 0))  # (B, H, C+1)
    carried = torch.einsum("bhzc,bchpn->bzhpn", torch.exp(_segsum(chunk_dA)),
                           torch.cat([torch.zeros_like(states[:, :1]), states], dim=1))[:, :-1]
    # 4. the entering state's output at each token: C_i exp(dA_{start..i}) h_in
    from_start = rearrange(torch.exp(dA_cum), "b h c i -> b c i h")[..., None]  # (B, C, Q, H, 1)
    y = y + torch.einsum("bcihn,bchpn->bcihp", Cs * from_start, carried)
    y = rearrange(y, "b c q h p -> b (c q) h p")[:, :length]
    if D is not None:
        y = y + x.to(work) * D.to(work)[:, None]
    return y.to(x.dtype)  # (B, L, H, P)
