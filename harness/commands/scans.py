"""`harness scans show|table`: draw a scheme's layer orders; measure and compare every registered scheme."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from plugins.errors import HarnessError
from plugins.registry import load_registries
from zigma.scans import Grid, LayerScan, continuity, distinct_orders

__all__ = ["scan_figure", "parse_grid", "register"]

scans_app = typer.Typer(help="Look at scan orders: draw one scheme's paths, or tabulate every scheme.",
                        no_args_is_help=True)

_GRID = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_grid(text: str, frames: int = 1) -> Grid:
    """'16x16' (H x W tokens) and a frame count -> Grid."""
    match = _GRID.match(text)
    if not match or min(int(match[1]), int(match[2]), frames) < 1:
        raise HarnessError(f"--grid: expected HxW with positive sizes (e.g. 16x16), got {text!r}")
    return Grid(int(match[1]), int(match[2]), frames)


def _layer_scans(name: str, grid: Grid, depth: int, seed: int) -> list[LayerScan]:
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

    scans = _layer_scans(name, grid, depth, seed)
    panels = _distinct(scans)
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    cell = min(0.45, 6.0 / max(grid.t * (grid.w + 1), grid.h))
    width, height = max(2.5, grid.t * (grid.w + 1) * cell), max(2.0, grid.h * cell) + 0.6
    fig = Figure(figsize=(cols * width, rows * height))
    FigureCanvasAgg(fig)
    for i, (scan, k, layers) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        _draw(ax, scan, k, grid)
        dir_text = f" · dir {k}" if scan.num_directions > 1 else ""
        ax.set_title(f"layers {_layers_text(layers)}{dir_text} · {scan.kind}", fontsize=8)
    frames_text = f"x{grid.t} frames" if grid.is_video else ""
    fig.suptitle(f"{name} on {grid.h}x{grid.w}{frames_text}: {len(panels)} distinct orders, "
                 f"continuity {continuity(scans, grid):.3f}", fontsize=10)
    fig.tight_layout()
    return fig


@scans_app.command("show")
def show(name: str = typer.Argument(..., help="Registered scan name (see `harness ls scans`)."),
         grid: str = typer.Option("8x8", "--grid", help="Token grid HxW."),
         frames: int = typer.Option(1, "--frames", min=1, help="Frames T (video grids: T > 1)."),
         depth: int = typer.Option(8, "--depth", min=1, help="Number of layers."),
         seed: int = typer.Option(0, "--seed", help="Seed for seeded schemes (random-K)."),
         out: Path = typer.Option(None, "--out", help="PNG path (default: scan-NAME-HxW[xT].png).")) -> None:
    """Draw every distinct order of a scheme (one panel each; video frames side by side) to a PNG."""
    g = parse_grid(grid, frames)
    fig = scan_figure(name, g, depth, seed)
    out = out or Path(f"scan-{name}-{g.h}x{g.w}" + (f"x{g.t}" if g.is_video else "") + ".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    n = len(fig.axes)
    Console().print(f"wrote {out} ({n} panel{'s' * (n != 1)})", highlight=False, soft_wrap=True)


@scans_app.command("table")
def table(grid: str = typer.Option("16x16", "--grid", help="Token grid HxW."),
          frames: int = typer.Option(1, "--frames", min=1, help="Frames T (video scans need T > 1)."),
          depth: int = typer.Option(24, "--depth", min=1, help="Number of layers."),
          seed: int = typer.Option(0, "--seed", help="Seed for seeded schemes (random-K).")) -> None:
    """Measure every registered scheme: distinct orders, continuity, orders per layer, segments."""
    g = parse_grid(grid, frames)
    registry = load_registries().scans
    title = f"scan schemes on {g.h}x{g.w}" + (f"x{g.t} frames" if g.is_video else "") + f", depth {depth}"
    out = Table(title=title, title_justify="left")
    several = len({item.plugin for item in registry}) > 1
    columns = [("scan", "bold cyan"), ("plugin", "magenta")][: 1 + several]
    for col, style in (*columns, ("orders/layer", None), ("distinct", None), ("continuity", None),
                       ("segments", None)):
        out.add_column(col, style=style, justify="left" if style else "right", no_wrap=col != "plugin")
    skipped = []
    for item in registry:
        if item.entry.modality == "video" and not g.is_video:
            skipped.append(item.entry.name)
            continue
        scans = _layer_scans(item.entry.name, g, depth, seed)
        per_layer = sorted({s.num_directions for s in scans})
        segments = sorted({s.segments for s in scans})
        names = (escape(item.entry.name), escape(item.plugin))[: 1 + several]
        out.add_row(*names, "/".join(map(str, per_layer)), str(distinct_orders(scans)),
                    f"{continuity(scans, g):.3f}", "/".join(map(str, segments)))
    console = Console()
    if not console.is_terminal:   # piped or logged: print the whole table, not squeezed into 80 columns
        console = Console(width=max(console.width, 120))
    console.print(out)
    console.print("distinct: different orders over all layers and directions; continuity: fraction of "
                  "consecutive steps (inside a segment) that move to a grid 4-neighbour (6-neighbour across "
                  "frames).", highlight=False)
    if skipped:
        console.print(f"video scans left out (give --frames T > 1): {', '.join(skipped)}", highlight=False,
                      markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(scans_app, name="scans")
