"""Model sizes: the one table that size names (`tiny`, `XS`, `S`, `B`, `L`, `XL`) are read from.

Each size has a row per block family, because a Mamba block (mixer + adaLN, no MLP) holds about half the
parameters of a DiT block (attention + MLP + adaLN): the released ZigMa sizes use twice DiT's depth.

- mamba (zigma, vim): ZigMa's factory presets S 368x24, B 768x24, L 1024x48 (model_zigma.py); XL is ours
  (DiT-XL's width, twice its depth). `heads` x `head_dim` is the text cross-attention (8 x 64 in ZigMa).
- attention (dit): DiT's S/B/L/XL (width x depth, heads); head_dim = width / heads.
- tiny: ours, for CPU tests. XS: ours, for small GPU studies (about 7 M parameters in either family).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FAMILIES", "SIZES", "Size", "get_size"]

FAMILIES = ("mamba", "attention")


@dataclass(frozen=True)
class Size:
    width: int      # d_model
    depth: int      # number of blocks
    heads: int      # attention heads (self-attention for dit, cross-attention for text)
    head_dim: int   # cross-attention head width (dit's self-attention uses width // heads)


SIZES: dict[str, dict[str, Size]] = {
    "tiny": {"mamba": Size(64, 4, 4, 16), "attention": Size(64, 2, 4, 16)},
    "XS": {"mamba": Size(256, 12, 4, 64), "attention": Size(256, 6, 4, 64)},
    "S": {"mamba": Size(368, 24, 8, 64), "attention": Size(384, 12, 6, 64)},
    "B": {"mamba": Size(768, 24, 8, 64), "attention": Size(768, 12, 12, 64)},
    "L": {"mamba": Size(1024, 48, 8, 64), "attention": Size(1024, 24, 16, 64)},
    "XL": {"mamba": Size(1152, 56, 8, 64), "attention": Size(1152, 28, 16, 72)},
}


def get_size(size: str, family: str) -> Size:
    """SIZES[size][family], with a clear error for an unknown size."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; available: {', '.join(SIZES)}")
    return SIZES[size][family]
