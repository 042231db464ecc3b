"""Options shared by several commands: the runs folder (`--runs`, formerly `--out`) and finding a study folder."""

from __future__ import annotations

from pathlib import Path

import typer

from plugins.errors import HarnessError

RUNS_HELP = "Where study folders live: RUNS/<study name>/."
DEPRECATED_OUT = "Deprecated alias of --runs."


def runs_dir(runs: Path, out: Path | None) -> Path:
    """--runs, or the deprecated --out when given (with a note on stderr)."""
    if out is None:
        return runs
    typer.secho("note: --out is deprecated for the runs folder; use --runs", err=True)
    return out


def study_folder(arg: str, runs: Path, preset: str | None = None) -> Path:
    """A study file (with its preset), a study folder or a study name under `runs` -> the study folder."""
    from harness.study import load_study

    p = Path(arg)
    if p.is_file():
        return runs / load_study(p, preset=preset).study.name
    if preset is not None:
        raise HarnessError(f"--preset: {arg} is not a study file (a preset applies to a study file)")
    return p if p.is_dir() else runs / arg
