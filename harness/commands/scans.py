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
from zigma.scans import Grid, continuity, distinct_orders

__all__ = ["parse_grid", "register"]

scans_app = typer.Typer(help="Look at scan orders: draw one scheme's paths, or tabulate every scheme.",
                        no_args_is_help=True)

_GRID = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_grid(text: str, frames: int = 1) -> Grid:
    """'16x16' (H x W tokens) and a frame count -> Grid."""
    match = _GRID.match(text)
    if not match or min(int(match[1]), int(match[2]), frames) < 1:
        raise HarnessError(f"--grid: expected HxW with positive sizes (e.g. 16x16), got {text!r}")
    return Grid(int(match[1]), int(match[2]), frames)


@scans_app.command("show")
def show(name: str = typer.Argument(..., help="Registered scan name (see `harness ls scans`)."),
         grid: str = typer.Option("8x8", "--grid", help="Token grid HxW."),
         frames: int = typer.Option(1, "--frames", min=1, help="Frames T (video grids: T > 1)."),
         depth: int = typer.Option(8, "--depth", min=1, help="Number of layers."),
         seed: int = typer.Option(0, "--seed", help="Seed for seeded schemes (random-K)."),
         out: Path = typer.Option(None, "--out", help="PNG path (default: scan-NAME-HxW[xT].png).")) -> None:
    """Draw every distinct order of a scheme (one panel each; video frames side by side) to a PNG."""
    from harness.report.scans import scan_figure

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
    from harness.report.scans import layer_scans

    g = parse_grid(grid, frames)
    registry = load_registries().scans
    title = f"scan schemes on {g.h}x{g.w}" + (f"x{g.t} frames" if g.is_video else "") + f", depth {depth}"
    out = Table(title=title, title_justify="left")
    several = len({item.plugin for item in registry}) > 1
    columns = [("scan", "bold cyan"), ("plugin", "magenta")][: 1 + several]
    for col, style in (*columns, ("orders/layer", None), ("distinct", None), ("continuity", None),
                       ("segments", None)):
        out.add_column(col, style=style, justify="left" if style else "right", no_wrap=col != "plugin")
    skipped, broken = [], []
    for item in registry:
        if item.entry.modality == "video" and not g.is_video:
            skipped.append(item.entry.name)
            continue
        try:
            scans = layer_scans(item.entry.name, g, depth, seed)
        except Exception as exc:  # noqa: BLE001 - one plugin's scheme that fails on this grid leaves its row out
            broken.append(f"{item.entry.name} ({item.plugin}): {type(exc).__name__}: {exc}")
            continue
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
    for line in broken:
        console.print(f"left out, its layer_scans raised on this grid: {line}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(scans_app, name="scans")
