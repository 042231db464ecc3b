"""Multi-head attention with torch's scaled_dot_product_attention: self-attention (DiT) and cross-attention (text)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["CrossAttention", "SelfAttention"]


class SelfAttention(nn.Module):
    """(N, L, D) -> (N, L, D): fused qkv Linear (with bias), SDPA over all tokens, output Linear (DiT/timm)."""

    def __init__(self, width: int, heads: int, *, device=None, dtype=None) -> None:
        super().__init__()
        assert width % heads == 0, f"width {width} is not divisible by {heads} heads"
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, device=device, dtype=dtype)
        self.proj = nn.Linear(width, width, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "n l (three h e) -> three n h l e", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)          # (N, H, L, E)
        return self.proj(rearrange(out, "n h l e -> n l (h e)"))


class CrossAttention(nn.Module):
    """Queries x (N, L, D) attend to context (N, S, Dc) -> (N, L, D).

    As the official ZigMa block: q, k, v Linear without bias (inner dim heads*head_dim, 8 x 64 there),
    output Linear with bias. `mask` (N, S) bool marks real context tokens (every row needs one True).
    """

    def __init__(self, width: int, context_dim: int, heads: int, head_dim: int, *, device=None,
                 dtype=None) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(width, inner, bias=False, device=device, dtype=dtype)
        self.to_kv = nn.Linear(context_dim, 2 * inner, bias=False, device=device, dtype=dtype)
        self.proj = nn.Linear(inner, width, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q = rearrange(self.to_q(x), "n l (h e) -> n h l e", h=self.heads)                 # (N, H, L, E)
        k, v = rearrange(self.to_kv(context), "n s (two h e) -> two n h s e", two=2, h=self.heads)
        attn_mask = None if mask is None else mask[:, None, None, :]                   # (N, 1, 1, S)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)              # (N, H, L, E)
        return self.proj(rearrange(out, "n h l e -> n l (h e)"))
