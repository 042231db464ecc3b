"""`harness status STUDY_OR_DIR`: trials done / running / failed (with reason) / pending, from the storage."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.cli_options import DEPRECATED_OUT, RUNS_HELP, runs_dir, study_folder


def status(study: str = typer.Argument(..., metavar="STUDY_OR_DIR", help="A study file, a study folder "
                                       "(runs/<name>) or a study name."),
           preset: str = typer.Option(None, "--preset", "-p", help="With a study file: the preset it ran with."),
           storage: str = typer.Option(None, "--storage", help="Optuna storage URL (default: the folder's "
                                       "optuna.journal)."),
           runs: Path = typer.Option(Path("runs"), "--runs", help=RUNS_HELP),
           out: Path = typer.Option(None, "--out", hidden=True, help=DEPRECATED_OUT)) -> None:
    """Show the trials of a study from its Optuna storage."""
    from harness import runner
    from harness.store import study_name
    from plugins.errors import HarnessError

    folder = study_folder(study, runs_dir(runs, out), preset)
    if storage is None and not folder.is_dir():
        ran = sorted(p.name[len(folder.name) + 1:] for p in folder.parent.glob(f"{folder.name}-*")
                     if (p / "optuna.journal").exists()) if Path(study).is_file() and not preset else []
        hint = f" (it ran with --preset {' or '.join(ran)}: give it)" if ran else ""
        raise HarnessError(f"no study folder {folder}: the study has not run there{hint}; give --runs DIR, "
                           "or --storage URL for a database")
    if storage is None and not (folder / "optuna.journal").exists():
        raise HarnessError(f"{folder}: no optuna.journal here (give --storage for a database)")
    # a study folder or an exported store may have any name: the journal's one study says which study it is
    name = folder.resolve().name if storage else study_name(folder, folder.resolve().name)
    schema, _ = runner.load_from_storage(storage or str(folder), name, folder.parent)
    session = runner.open_session(schema, folder=folder, storage=storage or str(folder),
                                  tracking_uri=None, track=False)
    runner.print_status(session)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
