"""Scan schemes for token grids scanned as one sequence (images; videos frame-major over the whole sequence).

On a video grid every 2-D path is applied to each frame in turn (`frame_major`), so the layer still scans the
whole T*H*W sequence as one; random orders are permutations of the whole sequence.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch

from .base import Grid, LayerScan, ScanScheme, frame_major

__all__ = ["Sweep", "LayerCycle", "Parallel", "RandomCycle"]

PathFamily = Callable[[int, int], tuple[torch.Tensor, ...]]


def _family_orders(paths: PathFamily, k: int, grid: Grid) -> list[torch.Tensor]:
    """The first k paths of a family on grid's frames, as fresh (T*H*W,) orders."""
    family = paths(grid.h, grid.w)
    if not 1 <= k <= len(family):
        what = getattr(paths, "__name__", "path family")
        raise ValueError(f"{what} has {len(family)} paths, asked for {k}")
    return [frame_major(p, grid) for p in family[:k]]


def _check_depth(depth: int) -> None:
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")


class Sweep(ScanScheme):
    """Raster order in every layer; `directions=2` also runs the reversed raster in every layer (Vim v2)."""

    def __init__(self, directions: int = 1, *, name: str = "sweep") -> None:
        if directions not in (1, 2):
            raise ValueError(f"a sweep has 1 or 2 directions, got {directions}")
        self.name, self.directions = name, directions

    def layer_scans(self, grid: Grid, depth: int) -> list[LayerScan]:
        """`depth` LayerScans with orders (raster,) or (raster, reversed raster), each (T*H*W,)."""
        _check_depth(depth)
        raster = torch.arange(grid.num_tokens, dtype=torch.int64)
        scan = LayerScan((raster, raster.flip(0))[: self.directions])
        return [scan] * depth


class LayerCycle(ScanScheme):
    """One direction per layer; layer i scans path i mod k of a path family (ZigMa's layerwise switching)."""

    def __init__(self, paths: PathFamily, k: int, *, name: str) -> None:
        self.paths, self.k, self.name = paths, k, name

    def layer_scans(self, grid: Grid, depth: int) -> list[LayerScan]:
        """`depth` LayerScans, layer i with orders (path[i mod k],) of shape (T*H*W,)."""
        _check_depth(depth)
        scans = [LayerScan((o,)) for o in _family_orders(self.paths, self.k, grid)]
        return [scans[i % self.k] for i in range(depth)]


class Parallel(ScanScheme):
    """All k paths of a family inside every layer ("Parallel Mamba", ZigMa Fig. 8): k directions per layer."""

    def __init__(self, paths: PathFamily, k: int, *, name: str) -> None:
        self.paths, self.k, self.name, self.directions = paths, k, name, k

    def layer_scans(self, grid: Grid, depth: int) -> list[LayerScan]:
        """`depth` identical LayerScans with k orders of shape (T*H*W,)."""
        _check_depth(depth)
        return [LayerScan(tuple(_family_orders(self.paths, self.k, grid)))] * depth


@lru_cache(maxsize=64)
def _random_orders(num_tokens: int, k: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randperm(num_tokens, generator=gen, dtype=torch.int64) for _ in range(k))


class RandomCycle(ScanScheme):
    """k random permutations of the whole sequence drawn from `seed`; layer i uses permutation i mod k."""

    def __init__(self, k: int, *, seed: int, name: str) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.seed, self.name = k, int(seed), name

    def layer_scans(self, grid: Grid, depth: int) -> list[LayerScan]:
        """`depth` LayerScans, layer i with orders (perm[i mod k],) of shape (T*H*W,)."""
        _check_depth(depth)
        scans = [LayerScan((o.clone(),)) for o in _random_orders(grid.num_tokens, self.k, self.seed)]
        return [scans[i % self.k] for i in range(depth)]
