"""Scan path pictures for scan studies, drawn by the scan library's `harness scans show` code when it is there."""

from __future__ import annotations

import functools
import importlib
from typing import Any

from .plots import png_bytes

__all__ = ["scan_pictures"]

IMAGE_GRID = (8, 8, 1)
VIDEO_GRID = (4, 4, 3)
DEPTH = 8


def _figure_maker() -> Any:
    """`harness.commands.scans.scan_figure(name, grid, depth, seed) -> Figure` if exported, else one built from
    its drawing helpers; None when the scan command is absent or changed."""
    try:
        mod = importlib.import_module("harness.commands.scans")
    except Exception:  # noqa: BLE001 - the report leaves the section out rather than fail
        return None
    if hasattr(mod, "scan_figure"):
        return mod.scan_figure
    if not all(hasattr(mod, n) for n in ("_layer_scans", "_distinct", "_draw")):
        return None

    def scan_figure(name: str, grid: Any, depth: int, seed: int) -> Any:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        panels = mod._distinct(mod._layer_scans(name, grid, depth, seed))[:4]
        fig = Figure(figsize=(2.4 * len(panels) * max(1, grid.t * 0.8), 2.6))
        FigureCanvasAgg(fig)
        for i, (scan, k, layers) in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), i + 1)
            mod._draw(ax, scan, k, grid)
            shown = ", ".join(map(str, layers[:4])) + (", …" if len(layers) > 4 else "")
            ax.set_title(f"layers {shown}" + (f" · dir {k}" if scan.num_directions > 1 else ""), fontsize=7)
        fig.suptitle(name, fontsize=9)
        fig.tight_layout()
        return fig

    return scan_figure


def scan_pictures(names: list[str]) -> list[tuple[str, bytes]]:
    """(scan name, PNG) for each registered scan in names; [] where the scan library cannot draw them."""
    out = []
    for name in names:
        png = _picture(name)
        if png is not None:
            out.append((name, png))
    return out


@functools.lru_cache(maxsize=64)
def _picture(name: str) -> bytes | None:
    make = _figure_maker()
    if make is None:
        return None
    try:
        from plugins.registry import load_registries
        from zigma.scans import Grid

        scans = load_registries().scans
        if name not in scans:
            return None
        grid = Grid(*(VIDEO_GRID if scans.get(name).modality == "video" else IMAGE_GRID))
        return png_bytes(lambda: make(name, grid, DEPTH, 0))
    except Exception:  # noqa: BLE001 - an undrawable scan leaves its picture out
        return None
