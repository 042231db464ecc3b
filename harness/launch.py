"""Launching a prepared study: GPU ids, worker processes (one per GPU or CPU slot), signals passed on to them,
rounds until the queue is empty, then the status table, the report and the parent run's summary."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.provenance import SHARING  # a worker's trials record it (cost figures of a shared device)
from plugins.errors import HarnessError

__all__ = ["check_writable", "finish", "gpu_groups", "parse_gpus", "report_dir", "run_rounds", "spawn_workers",
           "stop_on_signals",
           "worker_plan"]

ROUNDS = 3   # a worker that died leaves RUNNING trials: re-queued, run in the next round


def _expand_ranges(gpus: str) -> list[str]:
    """'0-3,6' -> ['0', '1', '2', '3', '6'] (anything that is not a range is left for the checks below)."""
    out = []
    for g in (g.strip() for g in gpus.split(",")):
        lo, _, hi = g.partition("-")
        if hi and lo.isdigit() and hi.isdigit() and int(lo) <= int(hi):
            out += [str(i) for i in range(int(lo), int(hi) + 1)]
        elif g:
            out.append(g)
    return out


def parse_gpus(gpus: str) -> list[str]:
    """'0,1,3', '0-7' or 'all' -> CUDA device ids, checked against the visible devices."""
    import torch
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise HarnessError("--gpus: no CUDA device is visible (drop --gpus to run on CPU)")
    ids = [str(i) for i in range(count)] if gpus.strip() == "all" else _expand_ranges(gpus)
    if not ids or len(set(ids)) != len(ids):
        raise HarnessError(f"--gpus: give distinct device ids like 0,1,2, 0-7 or 'all', got {gpus!r}")
    for g in ids:
        if not g.isdigit() or int(g) >= count:
            raise HarnessError(f"--gpus: device {g!r} does not exist ({count} visible: 0..{count - 1})")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:  # ids index the already-visible devices
        order = [v.strip() for v in visible.split(",")]
        ids = [order[int(g)] for g in ids]
    return ids


def spawn_workers(*, names: list[str], envs: list[dict[str, str]], study: str, folder: Path,
                  storage: str | None, tracking_uri: str, quiet: bool, say, deadline: float | None = None) -> list[int]:
    """Start `harness worker` processes (one per env) and wait for all; returns their exit codes.

    SIGINT/SIGTERM are passed on to the workers, which re-queue their running trial and stop."""
    procs = []
    for i, (name, extra) in enumerate(zip(names, envs)):
        cmd = [sys.executable, "-m", "harness.cli", "worker", "--study", study, "--runs", str(folder.parent),
               "--storage", storage or str(folder), "--tracking-uri", tracking_uri, "--quiet",
               "--prefix", f"[{name}] ", "--worker-index", str(i)]
        if deadline is not None:
            cmd += ["--time-limit", f"{max(0.0, deadline - time.time()):.1f}"]
        procs.append(subprocess.Popen(cmd, env={**os.environ, **extra}))
    say(f"started {len(procs)} worker(s): " + ", ".join(f"{n} (pid {p.pid})" for n, p in zip(names, procs)))

    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(0.5)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return [p.returncode for p in procs]


def stop_on_signals() -> None:
    """A worker process: SIGINT or SIGTERM raises KeyboardInterrupt (its running trial is re-queued), once: a second
    signal (terminal + coordinator) must not break the cleanup."""
    def stop(signum, _frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def gpu_groups(gpu_ids: list[str], group: int) -> tuple[list[list[str]], list[str]]:
    """(groups of `group` GPUs, one per worker, in the order given; the GPUs left over)."""
    if len(gpu_ids) < group:
        raise HarnessError(f"--gpus: {len(gpu_ids)} GPU(s) given, but the study's trials need train.devices={group} "
                           "GPUs each")
    n = len(gpu_ids) // group
    return [gpu_ids[i * group:(i + 1) * group] for i in range(n)], gpu_ids[n * group:]


def worker_plan(*, gpu_ids: list[str], workers: int, per_device: int,
                group: int = 1) -> tuple[list[str], list[dict[str, str]]]:
    """(names, environments) of the worker processes to start; none: run in this process.

    --gpus: per_device workers on each group of `group` GPUs (train.devices: a distributed trial's ranks, one per
    GPU of its worker's group; 1: one GPU per worker); --workers N: N CPU workers; neither, with per_device > 1:
    per_device workers on this process's device (the first visible GPU, or the CPU)."""
    threads = lambda n: os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    if gpu_ids:
        groups, _ = gpu_groups(gpu_ids, group)
        names = [f"gpu{'+'.join(g)}" + (f".{k}" if per_device > 1 else "") for g in groups for k in range(per_device)]
        return names, [{"CUDA_VISIBLE_DEVICES": ",".join(g), SHARING: str(per_device)}
                       for g in groups for _ in range(per_device)]
    if workers:
        cpu = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads(workers)}
        return [f"w{i}" for i in range(workers)], [dict(cpu) for _ in range(workers)]
    if per_device > 1:
        import torch
        if torch.cuda.is_available():
            first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
            return [f"gpu{first}.{k}" for k in range(per_device)], [{"CUDA_VISIBLE_DEVICES": first,
                                                                      SHARING: str(per_device)}
                                                                     for _ in range(per_device)]
        cpu = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads(per_device), SHARING: str(per_device)}
        return [f"cpu.{k}" for k in range(per_device)], [dict(cpu) for _ in range(per_device)]
    return [], []


def run_rounds(session, registries, *, gpu_ids: list[str], workers: int, per_device: int, storage: str | None,
               quiet: bool, line, group: int = 1, deadline: float | None = None) -> list[int]:
    """Run the queue to its end (worker processes, or here), up to ROUNDS times; returns the workers' exit codes.
    With a deadline (time.time()), no trial starts that is not expected to end before it (runner.worker).
    No MLflow run stays RUNNING afterwards, also on Ctrl-C."""
    from optuna.trial import TrialState

    from harness import queue, runner

    rcs: list[int] = []
    try:
        for _round in range(ROUNDS):
            names, envs = worker_plan(gpu_ids=gpu_ids, workers=workers, per_device=per_device, group=group)
            if names:
                rcs = spawn_workers(names=names, envs=envs, study=session.study.name, folder=session.folder,
                                    storage=storage, tracking_uri=session.tracker.uri, quiet=quiet, say=line.say,
                                    deadline=deadline)
                if any(rc in (130, -signal.SIGINT) for rc in rcs):
                    raise KeyboardInterrupt
            else:
                _run_here(session, registries, quiet=quiet, line=line, deadline=deadline)
            queue.recover_stale(session.optuna)
            left = session.optuna.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if not left:
                break
            if not runner.time_left_for_a_trial(session, deadline):
                longest = runner.expected_trial_seconds(session)
                why = f"the longest finished trial took {longest:.0f} s" if longest else "the limit has passed"
                line.say(f"time limit: {len(left)} trial(s) not started ({why}); rerun to continue")
                break
            line.say("trials are left in the queue (a worker stopped early); starting another round")
    except BaseException:  # Ctrl-C, or a worker that cannot go on: no run stays RUNNING
        _close_runs(session, "KILLED")
        raise
    _close_runs(session, "FINISHED")
    return rcs


def check_writable(folder: Path, storage: str | None) -> None:
    """The study folder (and its journal) can be written, or one clear line naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
        journal = folder / "optuna.journal"
        if storage is None and journal.exists() and not os.access(journal, os.W_OK):
            raise PermissionError(f"{journal} is read-only")
    except OSError as exc:
        raise HarnessError(f"--runs: cannot write the study folder {folder} ({type(exc).__name__}: "
                           f"{exc.strerror or exc}); `harness status` and `harness report` read a finished "
                           "study without writing") from None


def report_dir(folder: Path, name: str) -> Path:
    """Where `run` writes the report: reports/<name> beside the --runs folder (runs/x -> reports/x), or inside
    --runs when --runs is the working directory or above it (never outside what the user named)."""
    out = folder.parent
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        return out / "reports" / name
    return out.parent / "reports" / name


def _close_runs(session, status: str) -> None:
    """No MLflow run of this study stays RUNNING unless its trial is running on a live worker."""
    running = session.optuna.get_trials(deepcopy=False)
    live = {t.user_attrs.get("mlflow_run_id") for t in running if t.state.name == "RUNNING"}
    session.tracker.end_orphans(session.parent_run_id, live, "interrupted (runner stopped)")
    session.tracker.end_study(session.parent_run_id, status)


def _run_here(session, registries, *, quiet: bool, line, deadline: float | None = None) -> None:
    from harness import runner
    from harness.progress import RichProgress
    from harness.trial import default_device

    device = default_device()
    stop_on_signals()       # SIGTERM (a `timeout`, a scheduler) re-queues the running trial as Ctrl-C does
    if quiet or not sys.stderr.isatty():
        runner.run_worker(session, registries, device=device, hooks=line.hooks(), deadline=deadline)
        return
    with RichProgress(lambda: runner.counts(session), left=lambda: runner.time_left(session)) as bars:
        runner.run_worker(session, registries, device=device, hooks=bars.hooks(), deadline=deadline)


def finish(session, *, quiet: bool, no_report: bool, say, rcs: list[int]) -> int:
    from harness import runner

    runner.print_status(session, brief=quiet)
    path = None
    if not no_report and runner.counts(session)["done"]:
        try:
            from harness.report import build_report
        except ImportError:
            say("report: harness.report is not available; skipped")
        else:
            out = report_dir(session.folder, session.study.name)   # runs/x -> reports/x
            path = build_report(session.folder, out, tracking_uri=session.tracker.uri)
            say(f"report: {path}")
    c = runner.counts(session)
    if c["done"]:   # the parent run: metrics per variant and the report
        session.tracker.log_study_summary(session.parent_run_id, path,
                                          keys=None if session.is_search else set(session.specs))
    bad = [rc for rc in rcs if rc not in (0, None)]
    if bad and (c["pending"] or c["running"]):
        raise HarnessError(f"{len(bad)} worker process(es) exited with an error (codes {bad}); "
                           "rerun the same command to continue")
    if bad:  # e.g. a killed worker whose trial another worker finished: nothing is left to do
        say(f"note: {len(bad)} worker process(es) exited with an error (codes {bad}); every trial has ended")
    if c["failed"]:
        say(f"{c['failed']} trial(s) failed (reasons above); `harness run ... --retry-failed` queues them again")
        return 1
    return 0


