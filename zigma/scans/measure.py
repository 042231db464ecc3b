"""Measurements of scan orders: spatial continuity and the number of distinct orders a network sees."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Grid, LayerScan

__all__ = ["neighbour_steps", "continuity", "distinct_orders"]


def neighbour_steps(order: torch.Tensor, grid: Grid, segments: int = 1) -> tuple[int, int]:
    """(steps to a grid 4/6-neighbour, all steps) along `order` (L,), not counting steps between segments."""
    hw = grid.h * grid.w
    f, r, c = order // hw, order % hw // grid.w, order % grid.w
    dist = (f.diff().abs() + r.diff().abs() + c.diff().abs()).reshape(-1)
    seg_len = order.numel() // segments
    inside = (torch.arange(1, order.numel()) % seg_len) != 0   # step s -> s+1 stays in one segment
    return int((dist[inside] == 1).sum()), int(inside.sum())


def continuity(scans: Sequence[LayerScan] | LayerScan, grid: Grid) -> float:
    """Fraction of steps, over all orders of all layers, that go to a grid neighbour (1.0 if none)."""
    scans = [scans] if isinstance(scans, LayerScan) else scans
    near = total = 0
    for scan in scans:
        for order in scan.orders:
            n, t = neighbour_steps(order, grid, scan.segments)
            near, total = near + n, total + t
    return near / total if total else 1.0


def distinct_orders(scans: Sequence[LayerScan]) -> int:
    """Number of different (L,) orders over all layers and directions."""
    return len({tuple(o.tolist()) for scan in scans for o in scan.orders})
