"""`harness export STUDY DEST`: a study's stores without checkpoints or scratch, small enough to commit."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.cli_options import RUNS_HELP


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def export(study: str = typer.Argument(..., metavar="STUDY", help="A study folder (runs/<name>) or a study name "
                                       "under --runs."),
           dest: Path = typer.Argument(..., metavar="DEST", help="The exported store, e.g. stores/<name> "
                                       "(new, or an earlier export: replaced)."),
           runs: Path = typer.Option(Path("runs"), "--runs", help=RUNS_HELP)) -> None:
    """Copy a study folder without checkpoints, lock files, the report artifact and per-step timing rows;
    `harness report DEST` regenerates its report, and a copy of it under --runs continues with `harness run`."""
    from harness.store import export_store

    src = Path(study) if Path(study).is_dir() else runs / study
    out = export_store(src, dest)
    typer.echo(f"exported {src} -> {out.dest}: {out.files} files, {_size(out.bytes)}")
    for what, n in sorted(out.dropped.items()):
        typer.echo(f"  left out: {what} ({n:,} rows)" if what.startswith("per-step") else
                   f"  left out: {what} ({_size(n)})")
    if out.restarts:
        typer.echo(f"  {len(out.restarts)} unfinished trial(s) will restart from step 0 when continued: "
                   + ", ".join(out.restarts))


def register(app: typer.Typer) -> None:
    app.command("export")(export)
