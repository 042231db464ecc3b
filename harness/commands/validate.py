"""`harness validate STUDY.yaml...`: resolve every plugin and option, load each dataset, build every model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from plugins.errors import HarnessError
from plugins.registry import load_registries


def validate(studies: list[Path] = typer.Argument(..., help="Study files to check.", metavar="STUDY.yaml..."),
             preset: str = typer.Option(None, "--preset", "-p", help="Validate with this preset applied."),
             all_presets: bool = typer.Option(False, "--all-presets", help="Validate the file and every preset."),
             build: bool = typer.Option(True, "--build/--no-build",
                                        help="Load datasets and build every model (on the meta device).")) -> None:
    """Check study files before any GPU work: schema, plugin names, options, data and models."""
    from harness.study import load_study, validate_study
    from harness.validation import check_buildable

    console = Console()
    registries = load_registries()
    failures = 0
    for path in studies:
        presets: list[str | None] = [preset]
        if all_presets:
            presets = [None, *load_study(path).presets]
        for p in presets:
            tag = f"{path}" + (f" --preset {p}" if p else "")
            try:
                study = load_study(path, preset=p)
                trials = validate_study(study, registries)
                built = check_buildable(study, trials, registries) if build else 0
            except HarnessError as exc:
                failures += 1
                console.print(f"[red]✗[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
                continue
            extra = f", {built} distinct model(s) built" if build else ""
            launched = [t.config.train.world_size for t in trials if t.config.train.uses_torchrun]
            if launched:   # one trial on several processes (harness/runner/torchrun.py)
                sizes = ", ".join(str(w) for w in sorted(set(launched)))
                extra += f", {len(launched)} on torchrun ({sizes} process(es) each)"
            console.print(f"[green]✓[/green] {escape(tag)}: {len(trials)} trial(s){extra}", highlight=False, soft_wrap=True)
    if failures:
        raise typer.Exit(code=2)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
