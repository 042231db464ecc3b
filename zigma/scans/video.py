"""Video scan schemes on a T x H x W grid (tokens frame-major): ZigMa's factorized spatial/temporal layers
and a continuous 3-D snake."""

from __future__ import annotations

import torch

from .base import Grid, LayerScan, ScanScheme, frame_major
from .curves import zigzag_paths

__all__ = ["Factorized", "Snake3d", "spatial_order", "temporal_order", "snake_3d"]


def _check_video(grid: Grid, depth: int, name: str) -> None:
    if not grid.is_video:
        raise ValueError(f"scan {name!r} needs a video grid (t > 1), got t={grid.t}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")


def spatial_order(path: torch.Tensor, grid: Grid) -> LayerScan:
    """Each frame scanned on its own with `path` (H*W,): order (T*H*W,) in T segments of H*W, kind 's'."""
    return LayerScan((frame_major(path, grid),), segments=grid.t, kind="s")


def temporal_order(grid: Grid, *, reverse: bool) -> LayerScan:
    """Each location scanned across frames, forward or reversed: (T*H*W,) order, H*W segments, kind 't'."""
    hw = grid.h * grid.w
    frames = torch.arange(grid.t, dtype=torch.int64)
    if reverse:
        frames = frames.flip(0)
    order = (torch.arange(hw, dtype=torch.int64)[:, None] + frames[None] * hw).reshape(-1)  # location-major
    return LayerScan((order,), segments=hw, kind="t")


class Factorized(ScanScheme):
    """ZigMa's factorized video scan: layer i is spatial or temporal as `pattern[i mod len(pattern)]` says.

    The j-th spatial layer scans every frame with zigzag path j mod 8; the j-th temporal layer scans every
    location forward in time when j is even, backward when odd. Inverses are the true inverses (the official
    temporal inverse writes frame f's output into frame T-1-f).
    """

    modality = "video"

    def __init__(self, pattern: str, *, name: str) -> None:
        if not pattern or set(pattern) - {"s", "t"}:
            raise ValueError(f"a factorized pattern is a string of 's' and 't', got {pattern!r}")
        self.pattern, self.name = pattern, name

    def layer_scans(self, grid: Grid, depth: int) -> list[LayerScan]:
        """`depth` LayerScans; spatial ones have segments=T, temporal ones segments=H*W."""
        _check_video(grid, depth, self.name)
        paths = zigzag_paths(grid.h, grid.w)
        spatial = [spatial_order(p, grid) for p in paths]
        temporal = [temporal_order(grid, reverse=r) for r in (False, True)]
        scans, counts = [], {"s": 0, "t": 0}
        for i in range(depth):
            kind = self.pattern[i % len(self.pattern)]
            j = counts[kind]
            counts[kind] += 1
            scans.append(spatial[j % len(spatial)] if kind == "s" else temporal[j % 2])
        return scans


def snake_3d(path: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(T*H*W,) order: frame 0 along `path`, frame 1 along it reversed (starting where frame 0 ended), ..."""
    hw = grid.h * grid.w
    return torch.cat([f * hw + (path if f % 2 == 0 else path.flip(0)) for f in range(grid.t)])


class Snake3d(ScanScheme):
    """One continuous snake through T x H x W (ZigMa's "3D Zigzag" baseline): layer i snakes through frames
    with zigzag path i mod k, reversing direction every frame, so every step moves to a 6-neighbour."""

    modality = "video"

    def __init__(self, k: int = 8, *, name: str) -> None:
        if not 1 <= k <= 8:
            raise ValueError(f"k must be in 1..8, got {k}")
        self.k, self.name = k, name

    def layer_scans(self, grid: Grid, depth: int) -> list[LayerScan]:
        """`depth` LayerScans with one (T*H*W,) order each, segments=1."""
        _check_video(grid, depth, self.name)
        scans = [LayerScan((snake_3d(p, grid),)) for p in zigzag_paths(grid.h, grid.w)[: self.k]]
        return [scans[i % self.k] for i in range(depth)]
