"""`harness report STUDY [STUDY...]`: a publishable comparison report from finished studies."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.cli_options import RUNS_HELP


def report(studies: list[str] = typer.Argument(..., help="Study names (folders under --runs) or study folders; "
                                               "several are compared side by side."),
           out: Path = typer.Option(None, "--out", help="Report folder (default: reports/<study> or "
                                    "reports/<A>_vs_<B>)."),
           runs: Path = typer.Option(Path("runs"), "--runs", help=RUNS_HELP),
           tracking_uri: str = typer.Option(None, "--tracking-uri", help="Read MLflow from this URI instead of "
                                            "<runs>/<study>/mlflow.db."),
           bench: list[Path] = typer.Option(None, "--bench", help="Benchmark results JSON to plot (repeatable); "
                                            "<runs>/<study>/bench.json is used when present.")) -> None:
    """Write index.html (self-contained), README.md, PNGs, results.csv and summary.json."""
    from harness.report import build_report

    path = build_report(studies, out, tracking_uri=tracking_uri, runs_dir=runs, bench=bench or None)
    typer.echo(f"wrote {path / 'index.html'} and {path / 'README.md'}")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
