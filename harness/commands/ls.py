"""`harness ls [KIND]`: every registered component with the plugin that registered it."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from plugins.errors import UnknownNameError, suggest
from plugins.registry import load_registries
from plugins.specs import KINDS


def _extra(entry) -> str:
    bits = []
    for attr in ("modality", "kind", "label"):
        value = getattr(entry, attr, None)
        if value and value != "any":
            bits.append(f"{attr}={value}")
    if getattr(entry, "uses_scan", True) is False:
        bits.append("no scan")
    return ", ".join(bits)


def ls(kind: str = typer.Argument(None, help="One of: " + ", ".join(KINDS) + " (default: all)."),
       plain: bool = typer.Option(False, "--plain", help="Names only, one per line (for scripts).")) -> None:
    """List registered scans, mixers, backbones, interpolants, samplers, datasets, metrics and text encoders."""
    registries = load_registries()
    if kind is not None and kind not in KINDS:
        singular = {v[2].replace(" ", "-") + "s": k for k, v in KINDS.items()}
        kind = singular.get(kind, kind)
        if kind not in KINDS:
            raise UnknownNameError(suggest(kind, KINDS, what="component kind"))
    kinds = [kind] if kind else list(KINDS)
    console = Console()
    for k in kinds:
        reg = registries[k]
        if plain:
            for item in reg:
                console.print(item.entry.name, highlight=False, markup=False)
            continue
        table = Table(title=f"{k} ({len(reg)})", title_justify="left")
        table.add_column("name", style="bold cyan", no_wrap=True)
        table.add_column("plugin", style="magenta")
        table.add_column("details")
        table.add_column("description")
        for item in reg:
            table.add_row(*(escape(str(x)) for x in (item.entry.name, item.plugin, _extra(item.entry),
                                                     item.entry.description)))
        console.print(table)


def register(app: typer.Typer) -> None:
    app.command("ls")(ls)
