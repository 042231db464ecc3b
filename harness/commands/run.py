"""`harness run STUDY.yaml`: validate, enqueue, run the trials (here or one worker per GPU), report."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.cli_options import DEPRECATED_OUT, runs_dir
from harness.labels import axis_text
from plugins.errors import HarnessError


def _dry_run(loaded, specs) -> None:
    console = Console()
    study = loaded.study
    title = f"{study.name}: {len(specs)} trial(s)" + (f" (preset {loaded.preset})" if loaded.preset else "")
    keys = list(dict.fromkeys(k for s in specs for k in s.params))
    launched = any(s.config.train.uses_torchrun for s in specs)
    rows = []
    for i, s in enumerate(specs):
        c = s.config
        budget = c.train.budget
        length = f"{c.train.steps} steps" if budget is None or budget.kind == "steps" else \
            f"{axis_text(budget.model_dump())} (<= {c.train.steps} steps)"
        row = {"#": str(i), "key": s.key, **{k: axis_text(s.params[k]) if k in s.params else "" for k in keys},
               "seed": str(s.seed), "training": length, "dataset": c.dataset.name,
               "backbone": f"{c.backbone.name}-{c.backbone.size}/{c.backbone.patch_size}"}
        if launched:   # devices x nodes per trial, under torchrun (harness/runner/torchrun.py)
            t = c.train
            row["ranks"] = f"{t.devices}x{t.nodes} torchrun" if t.uses_torchrun else "1"
        rows.append(row)
    # a column with one value in every trial is said once under the table, so the axes keep the width
    same = {k: rows[0][k] for k in ("training", "dataset", "backbone", "ranks")
            if len(rows) > 1 and k in rows[0] and len({r[k] for r in rows}) == 1}
    cols = [c for c in rows[0] if c not in same] if rows else []
    natural = sum(max(len(c), *(len(r[c]) for r in rows)) + 3 for c in cols) + 1
    if not rows:
        console.print(title, highlight=False, markup=False)
    elif natural > console.width:    # a table cut to fit would end every axis key in '…': one line per trial
        console.print(title, highlight=False, markup=False)
        for r in rows:
            console.print(f"{r['#']:>4} {r['key']}  " + "  ".join(f"{c}={r[c]}" for c in cols[2:] if r[c]),
                          highlight=False, markup=False, soft_wrap=True)
    else:
        table = Table(title=escape(title), title_justify="left")
        for col in cols:
            table.add_column(escape(col), justify="right" if col in ("#", "seed", "training") else "left",
                             style={"key": "cyan", **dict.fromkeys(keys, "bold")}.get(col))
        for row in rows:
            table.add_row(*(escape(row[c]) for c in cols))
        console.print(table)
    if same:
        console.print("every trial: " + ", ".join(f"{k} {v}" for k, v in same.items()), highlight=False,
                      markup=False)
    if study.search is not None:
        console.print(f"search: {study.search.n_trials} trial(s) sampled by {study.search.sampler} over "
                      + ", ".join(study.search.space), highlight=False, markup=False)


def run(study_file: Path = typer.Argument(..., metavar="STUDY.yaml", help="The study file."),
        preset: str = typer.Option(None, "--preset", "-p", help="Apply this preset (e.g. smoke)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved trials and exit."),
        runs: Path = typer.Option(Path("runs"), "--runs", help="Studies are written to RUNS/<study name>/ "
                                  "(the report to reports/<study name>/ beside RUNS; inside RUNS when RUNS is the "
                                  "working directory or above it)."),
        out: Path = typer.Option(None, "--out", hidden=True, help=DEPRECATED_OUT),
        storage: str = typer.Option(None, "--storage", help="Optuna storage: a journal file (default "
                                    "RUNS/<study>/optuna.journal) or a URL such as postgresql+psycopg://host/db."),
        tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: SQLite "
                                         "under the study folder)."),
        gpus: str = typer.Option(None, "--gpus", help="One worker process per GPU, e.g. 0,1,2,3, 0-7 or all "
                                 "(per group of train.devices GPUs when trials use several)."),
        workers: int = typer.Option(0, "--workers", min=0, help="CPU worker processes (0: this one)."),
        trials_per_gpu: int = typer.Option(1, "--trials-per-gpu", min=1, help="Worker processes per GPU "
                                           "(small trials share a device); without --gpus: on this process's "
                                           "device (first GPU, or the CPU)."),
        retry_failed: bool = typer.Option(False, "--retry-failed", help="Queue failed and pruned trials again."),
        time_limit: float = typer.Option(None, "--time-limit", min=0, help="Seconds from now: start no trial "
                                         "that would not end by then (judged by the longest finished trial of "
                                         "the study); rerun to continue with the rest."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="One line per trial, no bars."),
        no_report: bool = typer.Option(False, "--no-report", help="Skip the report at the end.")) -> None:
    """Run a study: every trial once, resumable; rerunning the same command continues where it stopped."""
    deadline = time.time() + time_limit if time_limit is not None else None     # counted from the start
    from harness import launch
    from harness.study import load_study, validate_study
    from harness.validation import check_buildable
    from plugins.registry import load_registries

    registries = load_registries()
    loaded = load_study(study_file, preset=preset)
    study = loaded.study
    specs = validate_study(loaded, registries)
    check_buildable(loaded, specs, registries)      # the same checks as `harness validate`, dry run or not
    if dry_run:
        _dry_run(loaded, specs)
        return
    if gpus and workers:
        raise HarnessError("give either --gpus (one worker per GPU) or --workers (CPU worker processes)")
    if workers and trials_per_gpu > 1:
        raise HarnessError("--trials-per-gpu: give it with --gpus (or alone), not with --workers")
    gpu_ids = launch.parse_gpus(gpus) if gpus else []
    # a trial on train.devices GPUs: each worker gets a group of that many (the largest any trial asks for)
    group = max([s.config.train.devices for s in specs if s.config.train.uses_torchrun] or [1])
    if gpu_ids and group > 1:
        groups, left = launch.gpu_groups(gpu_ids, group)
        Console(stderr=True).print(f"{len(groups)} GPU group(s) of {group} ({', '.join('+'.join(g) for g in groups)})"
                                   + (f"; GPU(s) {','.join(left)} left idle" if left else ""), highlight=False)
    folder = (runs_dir(runs, out) / study.name).resolve()
    launch.check_writable(folder, storage)

    from harness import runner
    from harness.progress import LineProgress

    yaml_text = study_file.read_text()
    from harness.tracking import file_lock
    # two coordinators started at once on one folder: one prepares (schema, parent run, queue), then the other
    with file_lock(folder / ".coordinator.lock"):
        session = runner.open_session(loaded, folder=folder, storage=storage, tracking_uri=tracking_uri,
                                      create=True)
        line = LineProgress(total=lambda: runner.counts(session), left=lambda: runner.time_left(session))
        runner.prepare(session, yaml_text=yaml_text, preset=preset, retry_failed=retry_failed, say=line.say,
                       devices={"cpu"} if workers else None)   # CPU workers use no GPU, whatever the machine has
    (folder / "study.yaml").write_text(runner.study_file_text(yaml_text, preset))

    try:
        rcs = launch.run_rounds(session, registries, gpu_ids=gpu_ids, workers=workers, per_device=trials_per_gpu,
                                storage=storage, quiet=quiet, line=line, group=group, deadline=deadline)
    except KeyboardInterrupt:
        line.say("interrupted: rerun the same command to continue (finished trials are kept; an interrupted one "
                 "resumes from its last checkpoint)")
        raise
    code = launch.finish(session, quiet=quiet, no_report=no_report, say=line.say, rcs=rcs)
    if code:
        raise typer.Exit(code=code)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
