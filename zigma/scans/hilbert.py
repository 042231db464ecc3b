"""Generalized Hilbert curves on any H x W grid, and the order the official ZigMa code actually scans.

The curve fills a block recursively: a block much longer than wide is cut into two halves along its length;
otherwise it is cut Hilbert-style into three parts (up the first half, across the top, back down the second
half). Each part starts next to where the previous one ended. A block of `la` cells along its travel axis and
`lb` across can be filled from one corner to the next corner along the travel axis, every step a 4-neighbour,
exactly when `la` is even or `lb` is odd (grid colouring); the cuts keep that true for every part, and the top
level picks a travel axis that satisfies it, so every step of every curve is a 4-neighbour. On 2^n x 2^n grids
the curve is the Hilbert curve. The base curve travels along the rows where parity allows, so its transposed
variants (odd k) travel down the columns and differ from it on non-square grids too.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .base import inverse
from .curves import dihedral_variants

__all__ = ["hilbert_paths", "hilbert_as_released_paths"]

Vec = tuple[int, int]


def _fill(cells: list[tuple[int, int]], r: int, c: int, ua: Vec, la: int, ub: Vec, lb: int) -> None:
    """Append the la x lb block at (r, c): travel along unit vector ua, across along ub; ends at (la-1)*ua."""
    if lb == 1:
        cells.extend((r + i * ua[0], c + i * ua[1]) for i in range(la))
        return
    assert la > 1 and (la % 2 == 0 or lb % 2 == 1), f"block {la}x{lb} cannot end at the next corner"
    if 2 * la > 3 * lb:                                   # long block: two halves side by side
        half = la // 2 + (la // 2 % 2 if la > 2 else 0)   # an even first half keeps both halves fillable
        _fill(cells, r, c, ua, half, ub, lb)
        _fill(cells, r + half * ua[0], c + half * ua[1], ua, la - half, ub, lb)
        return
    hb = lb // 2 + (lb // 2 % 2 if lb > 2 else 0)        # even height for the two side parts
    ha = la // 2
    neg_a, neg_b = (-ua[0], -ua[1]), (-ub[0], -ub[1])
    _fill(cells, r, c, ub, hb, ua, ha)                                          # up the first half
    _fill(cells, r + hb * ub[0], c + hb * ub[1], ua, la, ub, lb - hb)            # across the top
    end_r, end_c = r + (la - 1) * ua[0] + (hb - 1) * ub[0], c + (la - 1) * ua[1] + (hb - 1) * ub[1]
    _fill(cells, end_r, end_c, neg_b, hb, neg_a, la - ha)                      # back down the second half


def _gilbert(h: int, w: int) -> list[tuple[int, int]]:
    """Generalized Hilbert curve from the top-left corner to the top-right one as (row, col) cells, or to the
    bottom-left one when the grid rules out the former (w odd and h even, or w = 1)."""
    axes = [(w, h, (0, 1), (1, 0)), (h, w, (1, 0), (0, 1))]   # travel along the rows, else down the columns
    la, lb, ua, ub = next(a for a in axes if (a[0] % 2 == 0 or a[1] % 2 == 1) and (a[0] > 1 or a[1] == 1))
    cells: list[tuple[int, int]] = []
    _fill(cells, 0, 0, ua, la, ub, lb)
    return cells


@lru_cache(maxsize=256)
def hilbert_paths(h: int, w: int) -> tuple[torch.Tensor, ...]:
    """The 8 symmetric images of the generalized Hilbert curve (variant order of zigzag_paths); with one odd
    and one even side only 4 differ (a curve between adjacent corners must travel along the even side)."""
    return dihedral_variants(_gilbert, h, w)


@lru_cache(maxsize=256)
def hilbert_as_released_paths(h: int, w: int) -> tuple[torch.Tensor, ...]:
    """The official code's 'hilbert' orders: each rank map (token -> step) used as a path (step -> token).

    Square grids, in the official list order (ZigMa `hilbert_path(N)`): R, Rᵀ, rot90(R), rot90(R)ᵀ, rot180(R), ...,
    rot270(R)ᵀ, where R[x, y] is the step of cell (x, y) on the curve that starts along the first axis; layer i
    of hilbert-as-released-K uses entry i mod K. The official code is square-only: other grids get the inverses
    of hilbert_paths."""
    if h != w:
        return tuple(inverse(p) for p in hilbert_paths(h, w))
    rank = torch.empty(h * w, dtype=torch.int64)
    rank[torch.tensor([r * w + c for r, c in _gilbert(h, w)])] = torch.arange(h * w)
    base = rank.reshape(h, w).T                          # (x, y): the official curve starts along x
    out = []
    for k in range(4):
        m = torch.rot90(base, k, dims=(0, 1))
        out += [m.flatten(), m.T.flatten()]
    return tuple(p.contiguous() for p in out)
