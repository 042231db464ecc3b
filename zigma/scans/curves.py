"""2-D paths on an H x W token grid: zigzag (ZigMa's snakes), JPEG anti-diagonals and spirals.

A *path family* is a function `(h, w) -> tuple of 8 (h*w,) int64 paths`; path[s] = token r*w + c seen at
step s. The 8 members are the images of one base curve under the rectangle's symmetries, in ZigMa's order:
variant k starts from corner k // 2 in (top-left, top-right, bottom-left, bottom-right) and is transposed when
k is odd (a row-snake becomes a column-snake). Results are cached; callers must not modify them in place.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch

__all__ = ["dihedral_variants", "zigzag_paths", "jpeg_paths", "spiral_paths"]

Cells = list[tuple[int, int]]


def dihedral_variants(base: Callable[[int, int], Cells], h: int, w: int) -> tuple[torch.Tensor, ...]:
    """The 8 symmetric images of `base(h, w)` (a list of (row, col) cells) as (h*w,) int64 paths."""
    out = []
    for k in range(8):
        corner, transposed = divmod(k, 2)
        cells = [(c, r) for r, c in base(w, h)] if transposed else base(h, w)
        flip_r, flip_c = corner >= 2, corner % 2 == 1
        rc = torch.tensor(cells, dtype=torch.int64).reshape(-1, 2)
        rows = h - 1 - rc[:, 0] if flip_r else rc[:, 0]
        cols = w - 1 - rc[:, 1] if flip_c else rc[:, 1]
        out.append(rows * w + cols)
    return tuple(out)


def _row_snake(h: int, w: int) -> Cells:
    """Boustrophedon from the top-left: row 0 left to right, row 1 right to left, ..."""
    return [(r, c if r % 2 == 0 else w - 1 - c) for r in range(h) for c in range(w)]


def _jpeg(h: int, w: int) -> Cells:
    """JPEG zigzag from the top-left, first step to the right, along anti-diagonals r + c = d."""
    cells: Cells = []
    for d in range(h + w - 1):
        rows = range(max(0, d - w + 1), min(h - 1, d) + 1)
        cells += [(r, d - r) for r in (rows if d % 2 else reversed(rows))]
    return cells


def _spiral_in(h: int, w: int) -> Cells:
    """Clockwise spiral from the top-left corner inwards, one ring at a time."""
    cells: Cells = []
    top, bottom, left, right = 0, h - 1, 0, w - 1
    while top <= bottom and left <= right:
        cells += [(top, c) for c in range(left, right + 1)]
        cells += [(r, right) for r in range(top + 1, bottom + 1)]
        if top < bottom:
            cells += [(bottom, c) for c in range(right - 1, left - 1, -1)]
        if left < right:
            cells += [(r, left) for r in range(bottom - 1, top, -1)]
        top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1
    return cells


@lru_cache(maxsize=256)
def zigzag_paths(h: int, w: int) -> tuple[torch.Tensor, ...]:
    """ZigMa's 8 snakes: 0 row-snake from top-left, 1 column-snake from top-left, 2/3 top-right,
    4/5 bottom-left, 6/7 bottom-right. Every step moves to a 4-neighbour."""
    return dihedral_variants(_row_snake, h, w)


@lru_cache(maxsize=256)
def jpeg_paths(h: int, w: int) -> tuple[torch.Tensor, ...]:
    """JPEG anti-diagonal zigzags: 4 start corners x first step along the row (even k) or column (odd k)."""
    return dihedral_variants(_jpeg, h, w)


@lru_cache(maxsize=256)
def spiral_paths(h: int, w: int) -> tuple[torch.Tensor, ...]:
    """Centre-out spirals and their outside-in reversals: (S0, rev S0, S1, rev S1, ...), S0..S3 centre-out
    spirals of both chiralities ending at the top-left or bottom-right corner; steps are to 4-neighbours."""
    inward = dihedral_variants(_spiral_in, h, w)
    out = []
    for k in (0, 1, 6, 7):
        out += [inward[k].flip(0), inward[k]]
    return tuple(out)
