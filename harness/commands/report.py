"""`harness report STUDY [STUDY...]`: a publishable comparison report from finished studies."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.cli_options import RUNS_HELP, study_folder
from plugins.errors import HarnessError


def report(studies: list[str] = typer.Argument(..., help="Study names (folders under --runs), study folders, "
                                               "exported stores (stores/<study>) or study files (with --preset); "
                                               "several are compared side by side."),
           preset: str = typer.Option(None, "--preset", "-p", help="With study files: the preset they ran with."),
           out: Path = typer.Option(None, "--out", help="Report folder (default: reports/<study> or "
                                    "reports/<A>_vs_<B>)."),
           runs: Path = typer.Option(Path("runs"), "--runs", help=RUNS_HELP),
           tracking_uri: str = typer.Option(None, "--tracking-uri", help="Read MLflow from this URI instead of "
                                            "<runs>/<study>/mlflow.db."),
           bench: list[Path] = typer.Option(None, "--bench", help="Benchmark results JSON to plot (repeatable); "
                                            "<runs>/<study>/bench.json is used when present."),
           check: bool = typer.Option(False, "--check", help="Write nothing: regenerate one study's report in a "
                                      "temporary folder and compare its tables (README.md without its "
                                      "'Generated' line, results.csv, summary.json) with the report at --out "
                                      "(default reports/<study>); exit 1 when they differ.")) -> None:
    """Write index.html (self-contained), README.md, PNGs, results.csv and summary.json."""
    from harness.report import build_report, report_differences

    # a study file names its folder under --runs (<name>-<preset> with --preset), as in `status` and `ui`
    studies = [str(study_folder(s, runs, preset)) if Path(s).is_file() or preset else s for s in studies]
    if check:
        if len(studies) != 1 or tracking_uri or bench:
            raise HarnessError("--check: give one study folder or store (no --tracking-uri or --bench)")
        if out is not None and not out.is_dir():
            raise HarnessError(f"--check: no report folder {out}")
        target, diffs = report_differences(studies[0], out, runs_dir=runs)
        if not target.is_dir():
            raise HarnessError(f"--check: no report folder {target}")
        for line in diffs:
            typer.echo(f"differs: {line}")
        if diffs:
            raise typer.Exit(code=1)
        typer.echo(f"{target}: tables identical to the report regenerated from {studies[0]}")
        return
    path = build_report(studies, out, tracking_uri=tracking_uri, runs_dir=runs, bench=bench or None)
    typer.echo(f"wrote {path / 'index.html'} and {path / 'README.md'}")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
