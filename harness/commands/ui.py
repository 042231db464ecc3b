"""`harness ui STUDY`: the MLflow UI and optuna-dashboard on 127.0.0.1 against one study's stores (`ui` extra)."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer

from harness.cli_options import DEPRECATED_OUT, RUNS_HELP, runs_dir, study_folder
from plugins.errors import HarnessError, MissingDependencyError

__all__ = ["ui_commands", "register"]


def _folder(study: str, runs: Path, preset: str | None) -> Path:
    """The study folder; a runs folder holding exactly one study is accepted too."""
    folder = study_folder(study, runs, preset)
    if folder.is_dir() and not (folder / "mlflow.db").exists() and not (folder / "optuna.journal").exists():
        inside = sorted(p.name for p in folder.iterdir() if (p / "optuna.journal").exists())
        if len(inside) == 1:
            return folder / inside[0]
        if inside:
            raise HarnessError(f"{folder} holds {len(inside)} studies; give one: " + ", ".join(inside))
    if not (folder / "mlflow.db").exists() and not (folder / "optuna.journal").exists():
        raise HarnessError(f"{folder}: no study here (no mlflow.db or optuna.journal); run it first or give "
                           "--runs DIR")
    return folder


def ui_commands(folder: Path, *, host: str, mlflow_port: int, optuna_port: int) -> dict[str, list[str]]:
    """name -> command line of each server that has a store in `folder` (the MLflow server serves the study's
    artifacts from <folder>/mlartifacts, so proxied `mlflow-artifacts:/` URIs resolve wherever the folder is)."""
    folder = folder.resolve()
    cmds: dict[str, list[str]] = {}
    if (folder / "mlflow.db").exists():
        cmds["mlflow"] = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                          f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "mlartifacts"),
                          "--host", host, "--port", str(mlflow_port), "--workers", "1"]
    if (folder / "optuna.journal").exists():
        cmds["optuna"] = [sys.executable, "-c", "import sys; from optuna_dashboard._cli import main; sys.exit(main())",
                          str(folder / "optuna.journal"), "--host", host,
                          "--port", str(optuna_port), "--storage-class", "JournalFileStorage"]
    return cmds


def _check_installed(names: list[str]) -> None:
    need = {"mlflow": "flask", "optuna": "optuna_dashboard"}   # mlflow-skinny has no server (no flask)
    missing = [n for n in names if importlib.util.find_spec(need[n]) is None]
    if missing:
        raise MissingDependencyError("harness ui needs the full MLflow and optuna-dashboard: "
                                     "pip install 'zigma-harness[ui]'")


def ui(study: str = typer.Argument(..., metavar="RUNS_DIR_OR_STUDY", help="A study folder (runs/<name>), a study "
                                   "name, a study file (with --preset) or a runs folder holding one study."),
       preset: str = typer.Option(None, "--preset", "-p", help="With a study file: the preset it ran with."),
       runs: Path = typer.Option(Path("runs"), "--runs", help=RUNS_HELP),
       out: Path = typer.Option(None, "--out", hidden=True, help=DEPRECATED_OUT),
       mlflow_port: int = typer.Option(5000, "--mlflow-port", help="Port of the MLflow UI."),
       optuna_port: int = typer.Option(8080, "--optuna-port", help="Port of optuna-dashboard."),
       host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (default: this machine only).")) -> None:
    """Browse a study: the MLflow UI (runs, params, metrics, artifacts) and optuna-dashboard (trials, plots)."""
    folder = _folder(study, runs_dir(runs, out), preset)
    cmds = ui_commands(folder, host=host, mlflow_port=mlflow_port, optuna_port=optuna_port)
    _check_installed(list(cmds))
    signal.signal(signal.SIGTERM, _interrupt)          # a terminated `harness ui` stops its servers too
    procs = {name: subprocess.Popen(cmd) for name, cmd in cmds.items()}
    urls = {"mlflow": f"MLflow UI:        http://{host}:{mlflow_port}",
            "optuna": f"optuna-dashboard: http://{host}:{optuna_port}"}
    typer.echo(f"{folder}:\n" + "\n".join(f"  {urls[n]}" for n in procs) + "\nCtrl-C stops both.")
    try:
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
        dead = [n for n, p in procs.items() if p.poll() is not None]
        raise HarnessError(f"{', '.join(dead)} server exited (code {procs[dead[0]].returncode}); is the port taken? "
                           "see its output above")
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def register(app: typer.Typer) -> None:
    app.command("ui")(ui)
