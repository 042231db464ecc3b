"""`harness worker --storage URL --study NAME`: join a running study (from this or another machine)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from harness.cli_options import DEPRECATED_OUT, runs_dir
from plugins.errors import HarnessError


def worker(storage: str = typer.Option(..., "--storage", help="Optuna storage (URL or journal path)."),
           study: str = typer.Option(..., "--study", help="The study name."),
           runs: Path = typer.Option(None, "--runs", help="Write trial folders to RUNS/<study> (default: the "
                                     "coordinator's folder, kept in the storage)."),
           out: Path = typer.Option(None, "--out", hidden=True, help=DEPRECATED_OUT),
           tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: the "
                                            "coordinator's)."),
           quiet: bool = typer.Option(False, "--quiet", "-q", help="One line per trial."),
           prefix: str = typer.Option("", "--prefix", hidden=True),
           worker_index: int = typer.Option(0, "--worker-index", hidden=True),
           max_trials: int = typer.Option(None, "--max-trials", min=1, help="Stop after N trials."),
           node_rank: int = typer.Option(0, "--node-rank", min=0, help="K > 0: claim nothing; join, as node K, "
                                         "the trials on train.nodes hosts that node-0 workers start."),
           time_limit: float = typer.Option(None, "--time-limit", min=0, help="Seconds from now: start no trial "
                                            "that would not end by then (judged by the longest finished trial).")
           ) -> None:
    """Claim and run trials of a study until its queue is empty (--node-rank K: join multi-host trials as node K)."""
    deadline = time.time() + time_limit if time_limit is not None else None     # counted from the start
    from harness import launch, runner
    from harness.progress import LineProgress, RichProgress
    from harness.study import validate_study
    from harness.trial import default_device
    from plugins.registry import load_registries

    schema, folder = runner.load_from_storage(storage, study, runs_dir(runs, out))
    registries = load_registries()
    validate_study(schema, registries)
    session = runner.open_session(schema, folder=folder, storage=storage, tracking_uri=tracking_uri,
                                  worker_index=worker_index)
    if not session.parent_run_id:
        raise HarnessError(f"study {study!r} has no MLflow parent run yet; start it with `harness run` first")

    launch.stop_on_signals()
    device = default_device()
    line = LineProgress(prefix=prefix, total=lambda: runner.counts(session))
    if node_rank > 0:
        from harness.runner.torchrun import follow
        n = follow(session, node_rank=node_rank, device=device, say=line.say)
        line.say(f"worker done: joined {n} trial(s) as node {node_rank} on {device}")
        return
    if quiet:
        n = runner.run_worker(session, registries, device=device, hooks=line.hooks(), max_trials=max_trials,
                              deadline=deadline)
    else:
        with RichProgress(lambda: runner.counts(session)) as bars:
            n = runner.run_worker(session, registries, device=device, hooks=bars.hooks(),
                                  max_trials=max_trials, deadline=deadline)
    line.say(f"worker done: {n} trial(s) on {device}")


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
