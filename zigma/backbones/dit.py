"""DiT (Peebles & Xie 2023): adaLN-Zero blocks of self-attention + MLP, with an optional text cross-attention.

Follows facebookresearch/DiT `models.py`: LayerNorm without affine, shift/scale/gate from SiLU(c) -> Linear
(zero-init), MLP ratio 4 with GELU(tanh), final adaLN layer zero-init. Differences: torch's
scaled_dot_product_attention; no learned sigma (the output has the input's channels, as SiT/ZigMa); a null class
for CFG always exists; text models add a gated cross-attention sub-block (LayerNorm + adaLN-modulated queries,
as in the ZigMa block) between attention and MLP. Video tokens (frame-major) get full attention over T*h*w.
The scan is ignored: attention is order-invariant.
"""

from __future__ import annotations

import torch
from torch import nn

from .cross_attention import CrossAttention, SelfAttention
from .layers import Mlp, gated_residual, modulate
from .presets import get_size
from .shell import Backbone

__all__ = ["DiT", "DiTBlock", "build_dit"]


class DiTBlock(nn.Module):
    """(N, L, D), c (N, D) -> (N, L, D): x + g*Attn(mod(LN x)) [+ g*XAttn(...)] + g*MLP(mod(LN x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, *, cross: tuple[int, int] | None = None,
                 device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6, **kw)
        self.attn = SelfAttention(width, heads, **kw)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6, **kw)
        self.mlp = Mlp(width, int(width * mlp_ratio), **kw)
        self.cross = None
        if cross is not None:
            self.norm_x = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6, **kw)
            self.cross = CrossAttention(width, width, cross[0], cross[1], **kw)
        self.chunks = 9 if cross is not None else 6
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, self.chunks * width, **kw))

    def forward(self, x, c, ctx=None, ctx_mask=None):
        mods = self.adaLN_modulation(c).chunk(self.chunks, dim=1)             # each (N, D)
        x = gated_residual(x, mods[2], self.attn(modulate(self.norm1(x), mods[0], mods[1])))
        if self.cross is not None:
            x = gated_residual(x, mods[8], self.cross(modulate(self.norm_x(x), mods[6], mods[7]), ctx, ctx_mask))
        return gated_residual(x, mods[5], self.mlp(modulate(self.norm2(x), mods[3], mods[4])))


class DiT(Backbone):
    """Diffusion transformer over patch tokens; forward(x, t, *, y, context, context_mask) -> x's shape."""

    def __init__(self, *, width: int, depth: int, heads: int, head_dim: int, mlp_ratio: float = 4.0,
                 device=None, dtype=None, generator: torch.Generator | None = None, **shell) -> None:
        super().__init__(width=width, device=device, dtype=dtype, **shell)
        cross = (heads, head_dim) if self.context_dim else None
        self.blocks = nn.ModuleList(
            DiTBlock(width, heads, mlp_ratio, cross=cross, device=device, dtype=dtype) for _ in range(depth))
        self._init_weights(generator)

    def _init_weights(self, generator: torch.Generator | None) -> None:
        """DiT: xavier-uniform Linear weights, zero biases, zero adaLN; then the shell's init."""
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for blk in self.blocks:
            nn.init.zeros_(blk.adaLN_modulation[-1].weight)
            nn.init.zeros_(blk.adaLN_modulation[-1].bias)
        self._init_shell(generator)

    def forward_tokens(self, h, c, ctx, ctx_mask):
        for blk in self.blocks:
            h = self._block(blk, h, c, ctx, ctx_mask)                        # (N, L, D)
        return h


def build_dit(*, size: str, input_shape, patch_size: int, scan=None, num_classes: int | None = None,
              context_dim: int | None = None, pos_embed: str = "learned", mixer_backend: str = "auto",
              device=None, dtype=None, generator: torch.Generator | None = None, mlp_ratio: float = 4.0,
              temporal_pos_embed: bool = False, checkpointing: bool = False) -> DiT:
    """DiT at a SIZES preset ('attention' row). `scan` and `mixer_backend` are accepted and ignored;
    `checkpointing`: activation checkpointing of every block while training (see Backbone)."""
    s = get_size(size, "attention")
    return DiT(width=s.width, depth=s.depth, heads=s.heads, head_dim=s.head_dim, mlp_ratio=mlp_ratio,
               input_shape=tuple(input_shape), patch_size=patch_size, num_classes=num_classes,
               context_dim=context_dim, pos_embed=pos_embed, temporal_pos_embed=temporal_pos_embed,
               checkpointing=checkpointing, device=device, dtype=dtype, generator=generator)
