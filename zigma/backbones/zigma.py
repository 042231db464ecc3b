"""ZigMa (Hu et al., ECCV 2024): DiT-style blocks with a Mamba mixer core, each layer scanning in its own order.

Follows the released architecture (CompVis/zigma `model_zigma.py`): patch embed,
sinusoidal time MLP (+ class embedding, + pooled text context), learned zero-init / sin-cos / no positional
embedding, then `depth` blocks of RMSNorm -> adaLN shift/scale -> Mamba mixer (Mamba-1 by default) -> gate, with an optional
cross-attention sub-block for text (8 heads x 64, LayerNorm + adaLN, gated) and no MLP.

Where we deliberately differ from the released code:
- Residual: a standard pre-norm adaLN-Zero residual `x + g * f(modulate(norm(x)))` per sub-block. The release
  returns `norm(res) + g*f(...)` and adds that to the residual, so `res_{i+1} = res_i + RMSNorm(res_i) + ...`:
  with zero gates every layer still adds a normalized copy of the stream, the residual norm grows with depth
  and no block is the identity at init. The adaLN-Zero form is what the paper describes (DiT-style blocks),
  makes ZigMa, Vim and DiT blocks differ only in their token mixers, and has the same parameters.
- Final layer: DiT's adaLN final layer (t-conditioned, zero-init) instead of RMSNorm -> LayerNorm -> Linear with
  default init (the release never builds its final adaLN, swallowing the error); +2*D*D parameters.
- Init: our own modules use DiT's init (xavier Linear, zero adaLN); the mixer keeps its own Mamba init (the
  release additionally re-draws out_proj scaled by 1/sqrt(depth)).
- Stochastic depth: off by default (`drop_path=0.0`; the release uses 0.1) and drawn from an explicit
  generator (`set_generator`).
- CFG: a null class and a learned null caption exist (the release has neither); dropout is the trainer's.
- Scan orders are persistent buffers (saved in checkpoints, identical on every rank); the release keeps them
  in Python lists. Video temporal layers use the true inverse (the release's is wrong, see reference §3).
- Token order: the residual stream is kept in the current layer's scan order and ONE relative permutation
  `rel_i = inv(order_{i-1})[order_i]` is applied between layers (`permute_mode="relative"`, default), instead of
  permuting and un-permuting around every mixer (`permute_mode="around"`, the released formulation). All
  other per-layer operations act per token, so both compute the same function (tested).
Gradient clipping (a no-op in the release) is the trainer's business.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..mixer import MambaMixer
from ..scans import Grid, LayerScan, ScanScheme, inverse, permute_tokens
from .cross_attention import CrossAttention
from .layers import DropPath, Mlp, modulate
from .presets import get_size
from .shell import Backbone

__all__ = ["PERMUTE_MODES", "ZigMa", "ZigMaBlock", "build_zigma"]

PERMUTE_MODES = ("relative", "around")


def _branch_indices(orders: torch.Tensor, segments: int) -> tuple[torch.Tensor, list[bool]]:
    """orders (K, L) -> for directions k >= 1 the (K-1, L) index gathering direction k's order from direction 0's
    order, and whether each is the exact reversal (passed to the mixer as None so it can flip)."""
    inv0 = inverse(orders[0])
    idx = inv0[orders[1:]]
    reversed_ = [segments == 1 and torch.equal(o, orders[0].flip(0)) for o in orders[1:]]
    return idx, reversed_


class ZigMaBlock(nn.Module):
    """(N, L, D) tokens in this layer's scan order, c (N, D) -> (N, L, D) in the same order."""

    def __init__(self, width: int, scan: LayerScan, *, layer_idx: int, mixer: Callable[..., nn.Module],
                 mixer_backend: str, mixer_options: dict, cross: tuple[int, int] | None, mlp_ratio: float, drop_path: float, device=None, dtype=None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.segments, self.num_directions = scan.segments, scan.num_directions
        self.norm = nn.RMSNorm(width, eps=1e-5, **kw)
        self.mixer = mixer(width, num_directions=scan.num_directions, backend=mixer_backend,
                           layer_idx=layer_idx, generator=generator, **mixer_options, **kw)
        self.cross = self.mlp = None
        if cross is not None:
            self.norm_x = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6, **kw)
            self.cross = CrossAttention(width, width, cross[0], cross[1], **kw)
        if mlp_ratio > 0:
            self.norm_m = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6, **kw)
            self.mlp = Mlp(width, int(width * mlp_ratio), **kw)
        self.chunks = 3 * (1 + (cross is not None) + (mlp_ratio > 0))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, self.chunks * width, **kw))
        self.drop_path = DropPath(drop_path)
        # scan orders (K, L) are saved; derived index buffers are rebuilt from them (see `derive`)
        self.register_buffer("orders", torch.stack(scan.orders).to(device), persistent=True)
        self.derive(torch.stack(scan.orders))

    def derive(self, orders: torch.Tensor) -> None:
        """Set the non-persistent buffers from orders (K, L): direction 0's inverse (for permute_mode='around')
        and the gather index of each direction k >= 1 (none for an exact reversal)."""
        device = self.orders.device
        self.register_buffer("inverse", inverse(orders[0]).to(device), persistent=False)
        idx, self.branch_reversed = _branch_indices(orders, self.segments)
        self.register_buffer("branch_index", idx.to(device), persistent=False)

    def mix(self, u: torch.Tensor, *, around: bool) -> torch.Tensor:
        """Mamba over u (N, L, D), given in this layer's order (or raster order when `around`)."""
        if around:
            u = permute_tokens(u, self.orders[0], self.inverse)              # (N, L, D) scan order
        branch = None
        if self.num_directions > 1:
            branch = [None if rev else self.branch_index[k] for k, rev in enumerate(self.branch_reversed)]
        y = self.mixer(u, segments=self.segments, branch_index=branch)      # (N, L, D)
        return permute_tokens(y, self.inverse, self.orders[0]) if around else y

    def forward(self, x, c, ctx=None, ctx_mask=None, *, around: bool = False):
        mods = self.adaLN_modulation(c).chunk(self.chunks, dim=1)           # each (N, D)
        u = modulate(self.norm(x), mods[0], mods[1])                        # (N, L, D)
        x = self.drop_path.residual(x, mods[2], self.mix(u, around=around))
        j = 3
        if self.cross is not None:
            u = modulate(self.norm_x(x), mods[j], mods[j + 1])
            x = self.drop_path.residual(x, mods[j + 2], self.cross(u, ctx, ctx_mask))
            j += 3
        if self.mlp is not None:
            u = modulate(self.norm_m(x), mods[j], mods[j + 1])
            x = self.drop_path.residual(x, mods[j + 2], self.mlp(u))
        return x


class ZigMa(Backbone):
    """Mamba diffusion backbone whose layer i scans `layer_scans[i]`; forward(x, t, *, y, context, context_mask)."""

    def __init__(self, *, width: int, depth: int, heads: int, head_dim: int, layer_scans: list[LayerScan],
                 mixer: Callable[..., nn.Module] = MambaMixer, mixer_backend: str = "auto", mlp_ratio: float = 0.0,
                 drop_path: float = 0.0, permute_mode: str = "relative", d_state: int | None = None,
                 d_conv: int = 4, expand: int = 2,
                 device=None, dtype=None, generator: torch.Generator | None = None, **shell) -> None:
        super().__init__(width=width, device=device, dtype=dtype, **shell)
        if permute_mode not in PERMUTE_MODES:
            raise ValueError(f"unknown permute_mode {permute_mode!r}; choose one of {PERMUTE_MODES}")
        if len(layer_scans) != depth:
            raise ValueError(f"{len(layer_scans)} layer scans for depth {depth}")
        for i, s in enumerate(layer_scans):
            if s.orders[0].numel() != self.num_tokens:
                raise ValueError(f"layer {i} scans {s.orders[0].numel()} tokens, the model has {self.num_tokens}")
        self.permute_mode = permute_mode
        cross = (heads, head_dim) if self.context_dim else None
        rates = torch.linspace(0, drop_path, depth).tolist() if depth > 1 else [drop_path]
        mixer_options = {"d_conv": d_conv, "expand": expand} | ({} if d_state is None else {"d_state": d_state})
        self.blocks = nn.ModuleList(
            ZigMaBlock(width, s, layer_idx=i, mixer=mixer, mixer_backend=mixer_backend, mixer_options=mixer_options,
                       cross=cross, mlp_ratio=mlp_ratio, drop_path=rates[i], device=device, dtype=dtype,
                       generator=generator)
            for i, s in enumerate(layer_scans))
        self._set_relative([s.orders[0] for s in layer_scans], device)
        self.register_load_state_dict_post_hook(ZigMa._orders_loaded)
        self._init_weights(generator)

    def _set_relative(self, orders: list[torch.Tensor], device=None) -> None:
        """relative[i] (L,) takes the stream from layer i-1's order (raster for i=0) to layer i's; the last row
        takes it back to raster. Identity steps are skipped."""
        raster = torch.arange(orders[0].numel(), device=orders[0].device)
        prev = [raster, *orders]
        rel = [inverse(a)[b] for a, b in zip(prev, [*orders, raster])]
        self._rel_skip = [torch.equal(r, raster) for r in rel]
        self.register_buffer("relative", torch.stack(rel).to(device), persistent=False)
        self.register_buffer("relative_inv", torch.stack([inverse(r) for r in rel]).to(device), persistent=False)

    @staticmethod
    def _orders_loaded(module: ZigMa, incompatible) -> None:
        """After load_state_dict: rebuild the derived index buffers from the loaded orders."""
        if module.relative.device.type == "meta":
            return
        for blk in module.blocks:
            blk.derive(blk.orders)
        module._set_relative([blk.orders[0] for blk in module.blocks], module.relative.device)

    def _init_weights(self, generator: torch.Generator | None) -> None:
        """DiT init for our own Linear layers (the mixers keep Mamba's init), zero adaLN, then the shell."""
        for blk in self.blocks:
            for sub in (blk.cross, blk.mlp):
                for m in (sub.modules() if sub is not None else ()):
                    if isinstance(m, nn.Linear):
                        nn.init.xavier_uniform_(m.weight, generator=generator)
                        if m.bias is not None:
                            nn.init.zeros_(m.bias)
            nn.init.zeros_(blk.adaLN_modulation[-1].weight)
            nn.init.zeros_(blk.adaLN_modulation[-1].bias)
        self._init_shell(generator)

    def forward_tokens(self, h, c, ctx, ctx_mask):
        if self.permute_mode == "around":
            for blk in self.blocks:
                h = self._block(blk, h, c, ctx, ctx_mask, around=True)       # (N, L, D) raster
            return h
        for i, blk in enumerate(self.blocks):
            if not self._rel_skip[i]:
                h = permute_tokens(h, self.relative[i], self.relative_inv[i])  # (N, L, D) layer i's order
            h = self._block(blk, h, c, ctx, ctx_mask)                       # (N, L, D); the gather stays outside
        if not self._rel_skip[-1]:
            h = permute_tokens(h, self.relative[-1], self.relative_inv[-1])  # (N, L, D) raster
        return h


def _grid(input_shape, patch_size: int) -> Grid:
    t = input_shape[0] if len(input_shape) == 4 else 1
    return Grid(h=input_shape[-2] // patch_size, w=input_shape[-1] // patch_size, t=t)


def build_zigma(*, size: str, input_shape, patch_size: int, scan: ScanScheme, num_classes: int | None = None,
                context_dim: int | None = None, pos_embed: str = "learned", mixer: Callable[..., nn.Module] = MambaMixer,
                mixer_backend: str = "auto",
                device=None, dtype=None, generator: torch.Generator | None = None, mlp_ratio: float = 0.0,
                drop_path: float = 0.0,
                temporal_pos_embed: bool = False, permute_mode: str = "relative", d_state: int | None = None,
                expand: int = 2, checkpointing: bool = False, layer_scans: list[LayerScan] | None = None) -> ZigMa:
    """ZigMa at a SIZES preset ('mamba' row); layer i scans scan.layer_scans(grid, depth)[i]; `mixer`: the token
    mixer's constructor (`mixer(width, *, num_directions, backend, layer_idx, generator, d_conv, expand, [d_state],
    device, dtype)`, MambaMixer by default; d_state=None leaves the mixer's own default); `checkpointing`:
    activation checkpointing of every block while training (see Backbone)."""
    s = get_size(size, "mamba")
    if layer_scans is None:
        if scan is None:
            raise ValueError("zigma needs a scan scheme")
        layer_scans = scan.layer_scans(_grid(input_shape, patch_size), s.depth)
    return ZigMa(width=s.width, depth=s.depth, heads=s.heads, head_dim=s.head_dim, layer_scans=layer_scans,
                 mixer=mixer, mixer_backend=mixer_backend, mlp_ratio=mlp_ratio, drop_path=drop_path,
                 permute_mode=permute_mode,
                 d_state=d_state, expand=expand, input_shape=tuple(input_shape), patch_size=patch_size,
                 num_classes=num_classes, context_dim=context_dim, pos_embed=pos_embed,
                 temporal_pos_embed=temporal_pos_embed, checkpointing=checkpointing, device=device, dtype=dtype,
                 generator=generator)
