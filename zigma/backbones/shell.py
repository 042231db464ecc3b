"""The shell every backbone shares: tokens in (patch + positional embedding), conditioning, tokens out.

Conditioning vector c (N, D) = time embedding + class embedding (class models) + masked mean of the projected
context (text models, as ZigMa's pooled caption). Text models also hand the projected context (N, S, D) to their
cross-attention. Null conditioning for classifier-free guidance: label `num_classes`, or a caption row whose
`context_mask` is all False (the model then uses a learned null-context token). A missing `y` / `context`
on a conditional model means null. Label/caption dropout is not done in `forward` (no global RNG): the trainer
calls `drop_conditioning(..., p=, generator=)`.

Initialization: with `generator` every parameter is drawn from it (the modules' default init still runs
first and advances torch's default generator, as any nn.Module constructor does); without, from the default.

Activation checkpointing (`checkpointing=True`): while training with autograd recording, each block runs under
`torch.utils.checkpoint.checkpoint(use_reentrant=False)`, so only its inputs are kept and its activations are
recomputed in backward (Chen et al. 2016, "Training deep nets with sublinear memory cost"): about one more
forward of the blocks per step for memory that no longer grows with depth. The recomputation replays the same
stochastic-depth draws (see `_replaying`). Under `no_grad` / `inference_mode` or in eval mode it is inactive.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import (
    DropPath,
    FinalLayer,
    LabelEmbedder,
    PatchEmbed,
    PositionalEmbedding,
    TimestepEmbedder,
    unpatchify,
)

__all__ = ["Backbone"]


class Backbone(nn.Module):
    """Base class: subclasses build `self.blocks` and implement `forward_tokens(h, c, ctx, ctx_mask)`."""

    def __init__(self, *, input_shape: tuple[int, ...], patch_size: int, width: int, num_classes: int | None,
                 context_dim: int | None, pos_embed: str, temporal_pos_embed: bool, checkpointing: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__()
        if len(input_shape) not in (3, 4):
            raise ValueError(f"input_shape is (C, H, W) or (T, C, H, W), got {tuple(input_shape)}")
        c, hh, ww = input_shape[-3:]
        if hh % patch_size or ww % patch_size:
            raise ValueError(f"image size {hh}x{ww} is not divisible by patch_size {patch_size}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.patch_size, self.width = patch_size, width
        self.num_classes, self.context_dim = num_classes, context_dim
        self.checkpointing = bool(checkpointing)
        frames = input_shape[0] if len(input_shape) == 4 else 1
        self.grid = (frames, hh // patch_size, ww // patch_size)             # (t, h, w) tokens
        self.num_tokens = frames * self.grid[1] * self.grid[2]
        kw = {"device": device, "dtype": dtype}
        self.x_embedder = PatchEmbed(c, width, patch_size, **kw)
        self.pos_embed = PositionalEmbedding(pos_embed, width, self.grid, temporal=temporal_pos_embed, **kw)
        self.t_embedder = TimestepEmbedder(width, **kw)
        self.y_embedder = LabelEmbedder(num_classes, width, **kw) if num_classes else None
        if context_dim:
            self.context_proj = nn.Linear(context_dim, width, **kw)
            self.null_context = nn.Parameter(torch.zeros(1, 1, width, **kw))
        else:
            self.context_proj, self.null_context = None, None
        self.final_layer = FinalLayer(width, patch_size, c, **kw)

    def _init_shell(self, generator: torch.Generator | None) -> None:
        """DiT's init for the shared parts: xavier patch embed, N(0, .02) embeddings, zero final layer."""
        g = generator
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1), generator=g)
        nn.init.zeros_(self.x_embedder.proj.bias)
        for lin in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(lin.weight, std=0.02, generator=g)
            nn.init.zeros_(lin.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.table.weight, std=0.02, generator=g)
        if self.context_proj is not None:
            nn.init.xavier_uniform_(self.context_proj.weight, generator=g)
            nn.init.zeros_(self.context_proj.bias)
            nn.init.normal_(self.null_context, std=0.02, generator=g)
        for p in (*self.final_layer.adaLN_modulation[-1].parameters(), *self.final_layer.linear.parameters()):
            nn.init.zeros_(p)

    # ----------------------------------------------------------------------------------------- conditioning
    def condition(self, t: torch.Tensor, y: torch.Tensor | None, context: torch.Tensor | None,
                  context_mask: torch.Tensor | None):
        """-> c (N, D), ctx (N, S, D) or None, ctx_mask (N, S) bool or None."""
        n = t.shape[0]
        c = self.t_embedder(t)                                              # (N, D)
        if self.y_embedder is not None:
            if y is None:
                y = torch.full((n,), self.num_classes, dtype=torch.long, device=t.device)
            c = c + self.y_embedder(y)
        elif y is not None:
            raise ValueError("y was given to a model built without num_classes")
        ctx = ctx_mask = None
        if self.context_proj is not None:
            if context is None:
                context = torch.zeros(n, 1, self.context_dim, device=t.device, dtype=c.dtype)
                context_mask = torch.zeros(n, 1, dtype=torch.bool, device=t.device)
            ctx = self.context_proj(context)                                # (N, S, D)
            if context_mask is None:
                context_mask = torch.ones(ctx.shape[:2], dtype=torch.bool, device=ctx.device)
            null = ~context_mask.any(dim=1)                                 # (N,) rows with no caption
            ctx = torch.where(null[:, None, None], self.null_context.to(ctx.dtype).expand_as(ctx), ctx)
            ctx_mask = torch.cat([context_mask[:, :1] | null[:, None], context_mask[:, 1:]], dim=1)
            weights = ctx_mask.to(ctx.dtype).unsqueeze(-1)                  # (N, S, 1)
            c = c + (ctx * weights).sum(1) / weights.sum(1)                 # pooled caption
        elif context is not None:
            raise ValueError("context was given to a model built without context_dim")
        return c, ctx, ctx_mask

    def drop_conditioning(self, *, y: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                          p: float, generator: torch.Generator):
        """Classifier-free-guidance dropout: each sample's label / caption becomes null with probability p.

        Returns (y, context_mask) with dropped labels set to `num_classes` and dropped mask rows all False.
        """
        if y is not None and self.y_embedder is not None:
            y = self.y_embedder.drop(y, p, generator)
        if context_mask is not None:
            keep = torch.rand(context_mask.shape[:1], generator=generator, device=generator.device) >= p
            context_mask = context_mask & keep.to(context_mask.device)[:, None]
        return y, context_mask

    # ---------------------------------------------------------------------------------------------- misc
    def set_generator(self, generator: torch.Generator | None) -> None:
        """The generator every DropPath draws from (stochastic depth needs one while training)."""
        for m in self.modules():
            if isinstance(m, DropPath):
                m.generator = generator

    def num_params(self, trainable_only: bool = False) -> int:
        """Number of parameters (buffers such as scan orders are not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def _block(self, block: nn.Module, *args, **kwargs):
        """block(*args, **kwargs), under activation checkpointing when it is on and a training graph is recorded."""
        if not (self.checkpointing and self.training and torch.is_grad_enabled()):
            return block(*args, **kwargs)
        return checkpoint(_replaying(block), *args, use_reentrant=False, **kwargs)

    def forward_tokens(self, h, c, ctx, ctx_mask):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, y: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, C, H, W) or (N, T, C, H, W), t (N,) in [0, 1], y (N,), context (N, S, Dc) -> x's shape."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected input (N, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")
        h = self.pos_embed(self.x_embedder(x))                              # (N, L, D) raster order
        c, ctx, ctx_mask = self.condition(t, y, context, context_mask)       # (N, D), (N, S, D), (N, S)
        h = self.forward_tokens(h, c, ctx, ctx_mask)                         # (N, L, D) raster order
        out = self.final_layer(h, c)                                        # (N, L, p*p*C)
        return unpatchify(out, self.input_shape, self.patch_size)           # x's shape


def _replaying(block: nn.Module):
    """block's forward for `checkpoint`: a recomputation in backward restores the generators of the block's
    DropPaths to their state at the first call (checkpoint itself only replays torch's global RNGs), so it
    draws the same stochastic-depth masks, then puts them back where training left them."""
    gens = list({id(m.generator): m.generator for m in block.modules()
                 if isinstance(m, DropPath) and m.p > 0 and m.generator is not None}.values())
    saved = [g.get_state() for g in gens]
    calls = [0]

    def run(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 1 or not gens:
            return block(*args, **kwargs)
        now = [g.get_state() for g in gens]
        for g, state in zip(gens, saved):
            g.set_state(state)
        try:
            return block(*args, **kwargs)
        finally:
            for g, state in zip(gens, now):
                g.set_state(state)
    return run
