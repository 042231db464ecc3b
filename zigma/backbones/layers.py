"""Parts every backbone shares: patch embedding, time/label embeddings, positional embeddings, final layer.

Tokens are frame-major, row-major: token (f, r, c) <-> f*h*w + r*w + c, with (h, w) the patch grid.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

__all__ = [
    "POS_EMBEDS",
    "DropPath",
    "FinalLayer",
    "LabelEmbedder",
    "Mlp",
    "PatchEmbed",
    "PositionalEmbedding",
    "TimestepEmbedder",
    "gated_residual",
    "modulate",
    "sincos_1d",
    "sincos_2d",
    "unpatchify",
]

#: positional-embedding choices (registry-style names)
POS_EMBEDS = ("none", "sincos", "learned")


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (N, L, D) * (1 + scale (N, D)) + shift (N, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """adaLN-Zero residual x (N, L, D) + gate (N, D) * y (N, L, D).

    Kept as a multiply and an add: as one torch.addcmul it was measured on an H100 at +1.5 % step time and
    +2.3 GB peak memory for ZigMa-B and DiT-B alike (autocast promotes addcmul's inputs to the widest dtype, so
    the bf16 branch output y is saved for backward as an fp32 copy)."""
    return x + gate.unsqueeze(1) * y


class PatchEmbed(nn.Module):
    """(N, C, H, W) or (N, T, C, H, W) -> (N, L, D) tokens, frames patchified independently (frame-major)."""

    def __init__(self, in_channels: int, width: int, patch_size: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, width, patch_size, stride=patch_size, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        video = x.dim() == 5
        if video:
            n = x.shape[0]
            x = x.flatten(0, 1)                               # (N*T, C, H, W)
        # contiguous: a transposed view would hand its layout to every residual add after it (elementwise ops keep
        # their input's strides), leaving the whole stream feature-strided (ZigMa with no permutation, ViM and DiT
        # ran ~4 % slower on an H100, benchmarks/results/bench_h100.log before this)
        x = self.proj(x).flatten(2).transpose(1, 2).contiguous()  # (N[*T], h*w, D)
        if video:
            x = rearrange(x, "(n t) l d -> n (t l) d", n=n)   # (N, T*h*w, D)
        return x


def unpatchify(x: torch.Tensor, shape: tuple[int, ...], patch_size: int) -> torch.Tensor:
    """(N, L, p*p*C) -> (N, *shape) with shape (C, H, W) or (T, C, H, W)."""
    p = patch_size
    c, hh, ww = shape[-3:]
    h, w = hh // p, ww // p
    if len(shape) == 3:
        return rearrange(x, "n (h w) (p q c) -> n c (h p) (w q)", h=h, w=w, p=p, q=p, c=c)
    return rearrange(x, "n (t h w) (p q c) -> n t c (h p) (w q)", t=shape[0], h=h, w=w, p=p, q=p, c=c)


class TimestepEmbedder(nn.Module):
    """t (N,) in [0, 1] -> (N, D): sinusoid of 1000*t (256-d, cos first, as DiT/ZigMa) then an MLP."""

    def __init__(self, width: int, freq_dim: int = 256, *, device=None, dtype=None) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width, device=device, dtype=dtype), nn.SiLU(),
                                 nn.Linear(width, width, device=device, dtype=dtype))

    @staticmethod
    def sinusoid(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        """t (N,) -> (N, dim) = [cos(t*f), sin(t*f)] over dim/2 log-spaced frequencies f."""
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]                # (N, half)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = self.sinusoid(t * 1000.0, self.freq_dim)       # (N, 256)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))    # (N, D)


class LabelEmbedder(nn.Module):
    """y (N,) int64 in [0, num_classes] -> (N, D); index `num_classes` is the null (CFG) class."""

    def __init__(self, num_classes: int, width: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, width, device=device, dtype=dtype)

    def drop(self, y: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
        """Replace each label by the null class with probability p, drawing from `generator`."""
        keep = torch.rand(y.shape, generator=generator, device=generator.device) >= p
        return torch.where(keep.to(y.device), y, torch.full_like(y, self.num_classes))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.table(y)                                  # (N, D)


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """pos (M,) float -> (M, dim) = [sin(pos*w), cos(pos*w)], w = 1/10000^(2i/dim) (MAE convention)."""
    assert dim % 2 == 0, f"sin-cos embedding needs an even width, got {dim}"
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos.double()[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1).float()


def sincos_2d(dim: int, h: int, w: int) -> torch.Tensor:
    """(h*w, dim) fixed 2-D embedding, row-major: first half encodes the column, second half the row (MAE)."""
    assert dim % 4 == 0, f"2-D sin-cos embedding needs a width divisible by 4, got {dim}"
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, cols.flatten()), sincos_1d(dim // 2, rows.flatten())], dim=1)


class PositionalEmbedding(nn.Module):
    """Adds a (1, L, D) embedding to raster tokens: 'none', fixed 'sincos' or 'learned' (zero-init).

    Video (t > 1): 'learned' covers all t*h*w tokens (as the official video configs); 'sincos' adds a 2-D
    spatial and a 1-D temporal sinusoid. `temporal=True` adds a learned zero-init per-frame embedding (T, D).
    """

    def __init__(self, kind: str, width: int, grid: tuple[int, int, int], *, temporal: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__()
        if kind not in POS_EMBEDS:
            raise ValueError(f"unknown pos_embed {kind!r}; choose one of {POS_EMBEDS}")
        t, h, w = grid
        self.kind, self.frames = kind, t
        if kind == "learned":
            self.pos = nn.Parameter(torch.zeros(1, t * h * w, width, device=device, dtype=dtype))
        elif kind == "sincos":
            fixed = sincos_2d(width, h, w).repeat(t, 1)
            if t > 1:
                fixed = fixed + sincos_1d(width, torch.arange(t)).repeat_interleave(h * w, dim=0)
            self.register_buffer("pos", fixed[None].to(device=device, dtype=dtype), persistent=False)
        else:
            self.pos = None
        self.temporal = (nn.Parameter(torch.zeros(1, t, 1, width, device=device, dtype=dtype))
                         if temporal else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pos is not None:
            x = x + self.pos                                  # (N, L, D)
        if self.temporal is not None:
            n, l, d = x.shape
            x = (x.view(n, self.frames, l // self.frames, d) + self.temporal).view(n, l, d)
        return x


class Mlp(nn.Module):
    """(..., D) -> (..., D): Linear, GELU(tanh), Linear (DiT/ViT MLP)."""

    def __init__(self, width: int, hidden: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden, device=device, dtype=dtype)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, width, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's branch with probability p while training, rescaling the rest.

    No global RNG: it draws from `self.generator` (set by `Backbone.set_generator`); training with p > 0
    and no generator is an error.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def residual(self, x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x + drop(gate (N, D) * y): `gated_residual` whenever nothing is dropped."""
        if self.p == 0.0 or not self.training:
            return gated_residual(x, gate, y)
        return x + self(gate.unsqueeze(1) * y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        if self.generator is None:
            raise RuntimeError("DropPath with p > 0 needs a torch.Generator: call model.set_generator(g) first")
        keep = torch.rand((x.shape[0],), generator=self.generator, device=self.generator.device) >= self.p
        scale = keep.to(device=x.device, dtype=x.dtype) / (1.0 - self.p)
        return x * scale.view(-1, *([1] * (x.dim() - 1)))


class FinalLayer(nn.Module):
    """(N, L, D), c (N, D) -> (N, L, p*p*C): adaLN-modulated LayerNorm then Linear (DiT), both zero-init."""

    def __init__(self, width: int, patch_size: int, out_channels: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6, device=device, dtype=dtype)
        self.linear = nn.Linear(width, patch_size * patch_size * out_channels, device=device, dtype=dtype)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)   # (N, D) each
        return self.linear(modulate(self.norm(x), shift, scale))  # (N, L, p*p*C)
