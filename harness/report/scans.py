"""Scan path pictures: one panel per distinct order of a scheme (`harness scans show`, scan studies' reports)."""

from __future__ import annotations

import functools

from plugins.errors import HarnessError
from plugins.registry import load_registries
from zigma.scans import Grid, LayerScan, continuity

from .plots import png_bytes

__all__ = ["layer_scans", "scan_figure", "scan_pictures"]

IMAGE_GRID = (8, 8, 1)      # (H, W, frames) when the trials' token grid is unknown
VIDEO_GRID = (4, 4, 3)
DEPTH = 8
MAX_WIDTH_IN = 13.0


def scan_pictures(names: list[str], grid: tuple[int, int, int] | None = None) -> list[tuple[str, bytes]]:
    """(scan name, PNG) for each registered scan in names, drawn on grid (frames, H, W) when given; none where
    the scan library cannot draw one."""
    return [(name, png) for name in names if (png := _picture(name, grid)) is not None]


@functools.lru_cache(maxsize=64)
def _picture(name: str, token_grid: tuple[int, int, int] | None) -> bytes | None:
    try:
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


def layer_scans(name: str, grid: Grid, depth: int, seed: int) -> list[LayerScan]:
    """The per-layer scans of registered scan `name` on `grid` (a video scan needs a video grid)."""
    entry = load_registries().scans.get(name)
    if entry.modality == "video" and not grid.is_video:
        raise HarnessError(f"scan {name!r} is a video scan: give --frames T with T > 1")
    return entry.build(seed=seed).layer_scans(grid, depth)


def _distinct(scans: list[LayerScan]) -> list[tuple[LayerScan, int, list[int]]]:
    """(layer scan, direction, layers using it) for every distinct order, in order of first use."""
    seen: dict[tuple[int, ...], tuple[LayerScan, int, list[int]]] = {}
    for i, scan in enumerate(scans):
        for k, order in enumerate(scan.orders):
            key = (scan.segments, *order.tolist())
            seen.setdefault(key, (scan, k, []))[2].append(i)
    return list(seen.values())


def _draw(ax, scan: LayerScan, direction: int, grid: Grid) -> None:
    """One panel: the path drawn as arrows coloured by step, frames side by side, segment starts marked."""
    import matplotlib
    import numpy as np
    from matplotlib.patches import FancyArrowPatch

    order = scan.orders[direction].numpy()
    hw = grid.h * grid.w
    f, r, c = order // hw, order % hw // grid.w, order % grid.w
    x, y = f * (grid.w + 1) + c, r.astype(float)
    cells = np.arange(grid.num_tokens)
    ax.scatter(cells // hw * (grid.w + 1) + cells % grid.w, cells % hw // grid.w, s=4, c="0.8", zorder=1)
    seg = len(order) // scan.segments
    step = np.arange(len(order) - 1)
    inside = (step + 1) % seg != 0
    across = inside & (np.diff(f) != 0)        # steps between frames are drawn as arcs over the frame gap
    flat = inside & ~across
    ax.quiver(x[:-1][flat], y[:-1][flat], np.diff(x)[flat], np.diff(y)[flat], step[flat], cmap="viridis",
              clim=(0, len(order)), angles="xy", scale_units="xy", scale=1, width=0.006, headwidth=4,
              zorder=2)
    cmap = matplotlib.colormaps["viridis"]
    alpha = 1.0 if across.sum() <= 4 * grid.t else 0.3
    for s in step[across]:
        ax.add_patch(FancyArrowPatch((x[s], y[s]), (x[s + 1], y[s + 1]), connectionstyle="arc3,rad=-0.25",
                                     arrowstyle="-|>", mutation_scale=6, lw=0.8, alpha=alpha,
                                     color=cmap(s / len(order)), zorder=2))
    starts = np.arange(0, len(order), seg)
    ax.scatter(x[starts], y[starts], s=10, c="tab:red", zorder=3)
    ax.scatter(x[:1], y[:1], s=60, marker="*", c="tab:red", zorder=4, label="start")
    ax.set_xlim(-0.7, grid.t * (grid.w + 1) - 1.3)
    ax.set_ylim(grid.h - 0.3, -0.7 - (0.25 * (grid.w + 1) / 2 if grid.is_video else 0))
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def _layers_text(layers: list[int]) -> str:
    text = ", ".join(map(str, layers[:6]))
    return text + (", ..." if len(layers) > 6 else "")


def scan_figure(name: str, grid: Grid, depth: int, seed: int = 0):
    """A matplotlib Figure with one panel per distinct order of scan `name` (video frames side by side)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scans = layer_scans(name, grid, depth, seed)
    panels = _distinct(scans)
    aspect = grid.t * (grid.w + 1) / grid.h         # a video's frames side by side make a wide panel: fewer columns
    cols = min(len(panels), 4 if aspect < 2 else 2 if aspect < 4 else 1)
    rows = -(-len(panels) // cols)
    # inches a token cell: a panel at most 6 in tall, the figure at most MAX_WIDTH_IN wide
    cell = min(0.45, 6.0 / grid.h, MAX_WIDTH_IN / (cols * grid.t * (grid.w + 1)))
    width, height = max(2.5, grid.t * (grid.w + 1) * cell), max(1.0, grid.h * cell) + 0.5
    fig = Figure(figsize=(cols * width, rows * height), layout="constrained")     # the suptitle clear of the panels
    FigureCanvasAgg(fig)
    for i, (scan, k, layers) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        _draw(ax, scan, k, grid)
        dir_text = f" · dir {k}" if scan.num_directions > 1 else ""
        ax.set_title(f"layers {_layers_text(layers)}{dir_text} · {scan.kind}", fontsize=8)
    frames_text = f"x{grid.t} frames" if grid.is_video else ""
    orders = f"{len(panels)} distinct order{'s' * (len(panels) != 1)}"
    fig.suptitle(f"{name} on {grid.h}x{grid.w}{frames_text}: {orders}, "
                 f"continuity {continuity(scans, grid):.3f}", fontsize=10)
    return fig
