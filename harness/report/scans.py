"""Scan path pictures for scan studies, drawn by the scan library's `harness scans show` code."""

from __future__ import annotations

import functools

from .plots import png_bytes

__all__ = ["scan_pictures"]

IMAGE_GRID = (8, 8, 1)      # (H, W, frames) when the trials' token grid is unknown
VIDEO_GRID = (4, 4, 3)
DEPTH = 8


def scan_pictures(names: list[str], grid: tuple[int, int, int] | None = None) -> list[tuple[str, bytes]]:
    """(scan name, PNG) for each registered scan in names, drawn on grid (frames, H, W) when given; none where
    the scan library cannot draw one."""
    return [(name, png) for name in names if (png := _picture(name, grid)) is not None]


@functools.lru_cache(maxsize=64)
def _picture(name: str, token_grid: tuple[int, int, int] | None) -> bytes | None:
    try:
        from harness.commands.scans import scan_figure
        from plugins.registry import load_registries
        from zigma.scans import Grid

        scans = load_registries().scans
        if name not in scans:
            return None
        video = scans.get(name).modality == "video"
        if token_grid is not None and (token_grid[0] > 1) == video:
            grid = Grid(token_grid[1], token_grid[2], token_grid[0])
        else:
            grid = Grid(*(VIDEO_GRID if video else IMAGE_GRID))
        return png_bytes(lambda: scan_figure(name, grid, DEPTH, 0))
    except Exception:  # noqa: BLE001 - the report leaves a picture out rather than fail
        return None
