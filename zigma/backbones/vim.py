"""Vim-style baseline: bidirectional Mamba in every layer (Vim v2 / ZigMa's Sweep-2) in the ZigMa shell.

Every layer runs two SSMs, one over the raster (frame-major for video) order and one over its reversal, summed
before the shared out_proj (Vim's `bimamba_type="v2"` with `if_divide_out=False`, as ZigMa's `sweep2` configs
and the video "Bidirection" baseline `3d_sweep2`). Same blocks, conditioning and head as `zigma`, so
`vim` == `zigma` with scan `sweep-2`. Vim's classification extras (middle cls token) are not used.
"""

from __future__ import annotations

from ..scans import ScanScheme, Sweep
from .presets import get_size
from .zigma import ZigMa, _grid, build_zigma

__all__ = ["build_vim"]


def build_vim(*, size: str, input_shape, patch_size: int, scan: ScanScheme | None = None,
              num_classes: int | None = None, context_dim: int | None = None, pos_embed: str = "learned",
              mixer_backend: str = "auto", device=None, dtype=None, **options) -> ZigMa:
    """Vim at a SIZES preset ('mamba' row); `scan` is ignored; options as build_zigma's."""
    depth = get_size(size, "mamba").depth
    layer_scans = Sweep(2, name="sweep-2").layer_scans(_grid(input_shape, patch_size), depth)
    return build_zigma(size=size, input_shape=input_shape, patch_size=patch_size, scan=None,
                       num_classes=num_classes, context_dim=context_dim, pos_embed=pos_embed,
                       mixer_backend=mixer_backend, device=device, dtype=dtype, layer_scans=layer_scans, **options)
