"""The trial queue on Optuna storage: exactly-once enqueue, claiming, dead workers and re-queueing.

Identity of a trial lives in its user attrs (`trial_key`, `label`, `params`, `seed`). A grid trial also carries
its combination as Optuna params, each with a CategoricalDistribution of the study's values for that axis (JSON
text for values that are not scalars), so optuna-dashboard and `optuna.visualization` plot grids like searches;
matching never reads them, so a study file can gain axis values later. A trial that must run again (its worker died, it was interrupted,
or `--retry-failed`) is ended FAIL and a WAITING copy is added whose `attempts` lists the superseded trial
numbers; only the copy counts. Claiming goes through `set_trial_state_values(RUNNING)`, which succeeds for one
worker only (journal log order, or SELECT ... FOR UPDATE on PostgreSQL).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import psutil
from optuna.distributions import CategoricalDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from harness.journal import check_journal
from harness.study import TrialSpec
from plugins.errors import HarnessError, MissingDependencyError

__all__ = ["open_storage", "storage_label", "enqueue", "claim", "fail_and_requeue", "requeue",
           "recover_stale", "retry_failed", "latest_by_key", "superseded", "worker_stamp", "heartbeat",
           "IDENTITY", "grid_params"]

IDENTITY = ("trial_key", "label", "params", "seed", "mlflow_run_id")
JOURNAL = "optuna.journal"
HEARTBEAT_S, GRACE_S = 20, 90    # RDB storages: a RUNNING trial silent for GRACE_S is failed and re-queued


def open_storage(url: str | None, study_dir: Path) -> BaseStorage:
    """None -> <study_dir>/optuna.journal; a path (file or folder) -> a journal file; a URL -> RDBStorage with
    heartbeats (postgresql+psycopg://, mysql+pymysql://, sqlite:///)."""
    if url is None or "://" not in url:
        path = Path(url) if url else study_dir / JOURNAL
        if path.is_dir():
            path = path / JOURNAL
        path.parent.mkdir(parents=True, exist_ok=True)
        check_journal(path)         # a cut-off last record set aside before the next append glues onto it
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            if not url.startswith("postgresql+psycopg2"):
                raise MissingDependencyError(
                    "PostgreSQL storage needs psycopg 3: pip install 'zigma-harness[postgres]' "
                    "(URLs look like postgresql+psycopg://user@host:5432/db)") from None
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S,
                                          grace_period=GRACE_S,
                                          heartbeat_stale_trial_callback=_stale_callback)
    except Exception as exc:  # noqa: BLE001 - sqlalchemy raises many kinds; the user needs one line
        raise HarnessError(f"cannot open Optuna storage {storage_label(url)}: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def storage_label(url: str | None) -> str:
    """A URL without its password, for messages and logs."""
    if not url or "://" not in url or "@" not in url:
        return str(url)
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}" if ":" in cred else url


# -- identity ----------------------------------------------------------------------------------------------
def _attempts(t: FrozenTrial) -> list[dict[str, Any]]:
    return list(t.user_attrs.get("attempts", []))


def superseded(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of trials that a later copy replaced (their run was re-queued)."""
    return {a["number"] for t in trials for a in _attempts(t)}


def latest_by_key(trials: list[FrozenTrial]) -> dict[str, FrozenTrial]:
    """trial_key -> the trial that currently stands for it (not superseded, not a duplicate)."""
    gone = superseded(trials)
    out: dict[str, FrozenTrial] = {}
    for t in trials:
        key = t.user_attrs.get("trial_key")
        if key is None or t.number in gone or "duplicate_of" in t.user_attrs:
            continue
        prev = out.get(key)
        if prev is None or _rank(t) > _rank(prev):
            out[key] = t
    return out


def _rank(t: FrozenTrial) -> tuple[int, int]:
    order = {TrialState.COMPLETE: 4, TrialState.RUNNING: 3, TrialState.WAITING: 2, TrialState.PRUNED: 1,
             TrialState.FAIL: 0}
    return order[t.state], t.number


def identity(spec: TrialSpec) -> dict[str, Any]:
    return {"trial_key": spec.key, "label": spec.label, "params": spec.params, "seed": spec.seed}


# -- enqueue -----------------------------------------------------------------------------------------------
def _choice(v: Any) -> Any:
    """An axis value as an Optuna categorical choice (None, bool, int, float, str; anything else as JSON)."""
    return v if v is None or isinstance(v, bool | int | float | str) else json.dumps(v, sort_keys=True)


def grid_params(specs: list[TrialSpec]) -> dict[str, tuple[dict[str, Any], dict[str, CategoricalDistribution]]]:
    """trial_key -> (Optuna params, their distributions): each axis is categorical over all its values."""
    choices: dict[str, list[Any]] = {}
    for spec in specs:
        for k, v in spec.params.items():
            values = choices.setdefault(k, [])
            if not any(type(c) is type(_choice(v)) and c == _choice(v) for c in values):
                values.append(_choice(v))
    dists = {k: CategoricalDistribution(v) for k, v in choices.items()}
    return {s.key: ({k: _choice(v) for k, v in s.params.items()}, {k: dists[k] for k in s.params})
            for s in specs}


def enqueue(study: optuna.Study, specs: list[TrialSpec]) -> int:
    """Add a WAITING trial (identity in user attrs, combination as params) for every spec whose key the study
    has never seen; returns how many were added."""
    seen = {t.user_attrs.get("trial_key") for t in study.get_trials(deepcopy=False)}
    grid = grid_params(specs)
    added = 0
    for spec in specs:
        if spec.key not in seen:
            params, dists = grid[spec.key]
            study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=params,
                                                      distributions=dists, user_attrs=identity(spec)))
            seen.add(spec.key)
            added += 1
    return added


def requeue(study: optuna.Study, t: FrozenTrial, reason: str) -> None:
    """Add a WAITING copy of t (same identity, MLflow run and fixed params) that supersedes it."""
    attrs = {k: t.user_attrs[k] for k in IDENTITY if k in t.user_attrs}
    attrs["attempts"] = _attempts(t) + [{"number": t.number, "reason": reason}]
    fixed = t.system_attrs.get("fixed_params") or dict(t.params)
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=dict(t.params),
                                              distributions=dict(t.distributions), user_attrs=attrs,
                                              system_attrs={"fixed_params": fixed}))


def fail_and_requeue(study: optuna.Study, t: FrozenTrial, reason: str) -> bool:
    """End a RUNNING trial as FAIL (failure=reason) and queue a copy; False when another process ended it."""
    storage = study._storage  # the storage is what Optuna's own callbacks use
    try:
        storage.set_trial_user_attr(t._trial_id, "failure", reason)
        if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    requeue(study, t, reason)
    return True


def retry_failed(study: optuna.Study) -> int:
    """Queue a copy of every key whose current trial failed (or was pruned); returns how many."""
    n = 0
    for t in latest_by_key(study.get_trials(deepcopy=False)).values():
        if t.state in (TrialState.FAIL, TrialState.PRUNED):
            requeue(study, t, f"--retry-failed after: {t.user_attrs.get('failure', t.state.name.lower())}")
            n += 1
    return n


def _stale_callback(study: optuna.Study, t: FrozenTrial) -> None:
    """RDBStorage's heartbeat_stale_trial_callback: a trial whose heartbeat stopped is queued again."""
    requeue(study, t, "worker stopped sending heartbeats")


# -- workers -----------------------------------------------------------------------------------------------
def worker_stamp() -> dict[str, Any]:
    """Who runs a trial: host, pid and the process start time (so a reused pid is not mistaken for it)."""
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": psutil.Process(os.getpid()).create_time()}


def _alive(stamp: dict[str, Any]) -> bool:
    try:
        return abs(psutil.Process(int(stamp["pid"])).create_time() - float(stamp["started"])) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
        return False


def worker_died(t: FrozenTrial) -> bool:
    """A RUNNING trial whose worker stamp names this host and a process that no longer exists."""
    stamp = t.user_attrs.get("worker")
    return (t.state == TrialState.RUNNING and isinstance(stamp, dict) and stamp.get("host") == socket.gethostname()
            and not _alive(stamp))


def recover_stale(study: optuna.Study, *, unclaimed_after: float = 120.0) -> list[int]:
    """Re-queue RUNNING trials of dead workers on this host (a journal file has no heartbeat).

    A trial whose worker stamp names this host and a process that no longer exists is failed and queued again;
    so is a RUNNING trial that never got a stamp (its worker died while claiming) after `unclaimed_after` s.
    On RDB storages, heartbeats also cover workers on other hosts.
    """
    host, out = socket.gethostname(), []
    if hasattr(study._storage, "record_heartbeat"):
        optuna.storages.fail_stale_trials(study)
    now = datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        stamp = t.user_attrs.get("worker")
        if stamp is None:
            started = t.datetime_start
            if started is None or now - started < timedelta(seconds=unclaimed_after):
                continue
            reason = "worker died while claiming the trial"
        elif stamp.get("host") != host or _alive(stamp):
            continue
        else:
            reason = f"worker {stamp['host']}:{stamp['pid']} died"
        if fail_and_requeue(study, t, reason):
            out.append(t.number)
    return out


def _stopped_mid_run(t: FrozenTrial) -> bool:
    """A copy queued because its trial was stopped while it ran (Ctrl-C, a dead worker): its checkpoint waits."""
    last = (t.user_attrs.get("attempts") or [{}])[-1].get("reason", "")
    return last == "interrupted" or last.startswith("worker")


def claim(study: optuna.Study) -> FrozenTrial | None:
    """Take a WAITING trial for this process (RUNNING, stamped); None when the queue is empty. Copies of trials
    stopped mid-run go first, so a rerun finishes what it interrupted before it starts anything new; then the
    oldest."""
    storage = study._storage
    waiting = storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,))
    for t in sorted(waiting, key=lambda t: (not _stopped_mid_run(t), t.number)):
        try:
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                continue
        except UpdateFinishedTrialError:
            continue
        storage.set_trial_user_attr(t._trial_id, "worker", worker_stamp())
        return storage.get_trial(t._trial_id)
    return None


@contextmanager
def heartbeat(study: optuna.Study, trial_id: int) -> Iterator[None]:
    """Record heartbeats for trial_id while the block runs (RDB storages only; a no-op on journal files)."""
    storage = study._storage
    if not hasattr(storage, "record_heartbeat") or storage.get_heartbeat_interval() is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        warned = False
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception as exc:  # noqa: BLE001 - a missed beat must not kill the trial, but is said once
                if not warned:
                    warned = True
                    print(f"warning: trial {trial_id}: heartbeat to the storage failed ({type(exc).__name__}: "
                          f"{exc}); the trial goes on, but if beats keep failing other workers will count it as "
                          "stale and run it again", file=sys.stderr, flush=True)
            if stop.wait(storage.get_heartbeat_interval()):
                return

    thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{trial_id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
