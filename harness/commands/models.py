"""`harness models table`: parameters and forward GFLOPs of every registered backbone x size preset."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from plugins.errors import HarnessError, suggest
from plugins.registry import load_registries
from plugins.specs import option_values
from zigma.backbones import SIZES, flops

__all__ = ["OFFICIAL", "Official", "model_costs", "register"]

models_app = typer.Typer(help="Model sizes and costs: parameters and forward GFLOPs per backbone and preset.",
                         no_args_is_help=True)

@dataclass(frozen=True)
class Official:
    params_m: float        # millions
    gflops: float | None   # forward, MACs
    tokens: int
    config: str


#: published / official-config numbers for comparison. ZigMa: parameters counted from the released configs'
#: layer shapes, GFLOPs an fvcore-style count with the 9*L*D*N scan term (ZigMa paper
#: and its released configs; factory presets at 32x32x4, patch 2, no PE). DiT: the DiT paper, Table 4 (32x32x4 latent, patch 2,
#: 1000 classes, learned sigma).
OFFICIAL: dict[tuple[str, str], Official] = {
    ("zigma", "S"): Official(31, None, 256, "ZigMa factory S, p2, no PE"),
    ("zigma", "B"): Official(134.6, 97, 1024, "zigzag8_b1_pe2"),
    ("zigma", "L"): Official(473, None, 256, "ZigMa factory L, p2, no PE"),
    ("vim", "B"): Official(140.2, 108, 1024, "sweep2_b1_pe2"),
    ("dit", "S"): Official(33, 6.06, 256, "DiT-S/2"),
    ("dit", "B"): Official(130, 23.01, 256, "DiT-B/2"),
    ("dit", "L"): Official(458, 80.71, 256, "DiT-L/2"),
    ("dit", "XL"): Official(675, 118.64, 256, "DiT-XL/2"),
}


def model_costs(backbone: str, size: str, tokens: int, *, channels: int = 4, scan: str = "zigzag-8",
                pos_embed: str = "learned") -> tuple[int, int, str]:
    """(parameters, forward MACs, 'width×depth') of an unconditional model on a sqrt(tokens)^2 x channels
    latent, patch 1, built on the meta device (no memory, no weights)."""
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise HarnessError(f"--tokens: {tokens} is not a square number of tokens (e.g. 256, 1024, 4096)")
    registries = load_registries()
    entry = registries.backbones.get(backbone)
    scheme = registries.scans.get(scan).build(seed=0) if entry.uses_scan else None
    options = option_values(entry, {})
    model = entry.build(size=size, input_shape=(channels, side, side), patch_size=1, scan=scheme, num_classes=None,
                        context_dim=None, pos_embed=pos_embed, mixer_backend="reference",
                        device=torch.device("meta"), dtype=None, **options)
    params = sum(p.numel() for p in model.parameters())
    shape = f"{getattr(model, 'width', '?')}×{len(getattr(model, 'blocks', ()))}"
    return params, flops(model, torch.empty(1, channels, side, side, device="meta"), identical_blocks=True), shape


def _parse_tokens(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise HarnessError(f"--tokens: expected comma-separated integers, got {text!r}") from None


def _official(backbone: str, size: str) -> tuple[str, str, str]:
    o = OFFICIAL.get((backbone, size))
    if o is None:
        return "", "", ""
    gflops = f"{o.gflops:g} @{o.tokens}" if o.gflops is not None else ""
    return f"{o.params_m:g} @{o.tokens}", gflops, o.config


@models_app.command("table")
def table(tokens: str = typer.Option("256,1024,4096,16384", "--tokens", help="Token counts (square numbers)."),
          backbone: list[str] = typer.Option(None, "--backbone", "-b", help="Backbones (default: all registered)."),
          size: list[str] = typer.Option(None, "--size", "-s", help="Size presets (default: all but tiny)."),
          channels: int = typer.Option(4, "--channels", min=1, help="Latent channels (SD-VAE: 4)."),
          scan: str = typer.Option("zigzag-8", "--scan", help="Scan for backbones that use one."),
          pos_embed: str = typer.Option("learned", "--pos-embed", help="none | sincos | learned.")) -> None:
    """Parameters and forward GFLOPs (1 MAC = 1 FLOP, batch 1, unconditional, patch 1) per backbone x preset."""
    counts = _parse_tokens(tokens)
    registries = load_registries()
    names = backbone or registries.backbones.names()
    for n in names:
        registries.backbones.get(n)
    sizes = size or [s for s in SIZES if s != "tiny"]
    for s in sizes:
        if s not in SIZES:
            raise HarnessError(suggest(s, SIZES, what="size preset"))
    ref = 1024 if 1024 in counts else counts[0]
    out = Table(title=f"backbones: params and forward GFLOPs, {channels}-channel latent, patch 1, batch 1",
                title_justify="left", caption=f"params at {ref} tokens (a learned PE adds tokens x width); "
                "Mamba scans counted as 9·L·E·N per direction (fvcore helper), MACs as FLOPs (DiT convention)",
                caption_justify="left")
    out.add_column("backbone", style="bold cyan")
    out.add_column("size")
    out.add_column("width×depth")
    out.add_column(f"params @{ref} (M)", justify="right")
    for c in counts:
        out.add_column(f"GFLOPs @{c}", justify="right")
    out.add_column("official params (M)", justify="right", style="dim")
    out.add_column("official GFLOPs", justify="right", style="dim")
    out.add_column("official config", style="dim")
    console = Console() if sys.stdout.isatty() else Console(width=160)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task("counting on the meta device", total=len(names) * len(sizes) * len(counts))
        for n in names:
            for s in sizes:
                costs = {}
                for c in counts:
                    bar.update(task, description=f"counting {escape(n)}-{escape(s)} @{c} tokens (meta device)")
                    costs[c] = model_costs(n, s, c, channels=channels, scan=scan, pos_embed=pos_embed)
                    bar.advance(task)
                out.add_row(escape(n), escape(s), costs[ref][2], f"{costs[ref][0] / 1e6:.1f}",
                            *(f"{costs[c][1] / 1e9:,.1f}" for c in counts), *_official(n, s))
    console.print(out)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
