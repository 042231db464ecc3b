"""MLflow: one parent run per study, one child run per trial (the layout in docs/ARCHITECTURE.md).

The default store is SQLite under the study folder (an absolute URI, telemetry off) with artifacts beside it in
`mlartifacts/`. MLflow 3.17 turns any relative artifact location into an absolute path, so those experiments use the
proxied scheme `mlflow-artifacts:/<study>` instead: the harness copies artifact files to
`<study folder>/mlartifacts/<path>` itself and `harness ui` serves them with `--artifacts-destination`, so a moved
or copied study folder keeps its artifacts. Any tracking URI (an `mlflow server`, PostgreSQL) is accepted. Runs are addressed by id through MlflowClient,
so a resumed trial continues its own child run and no run is left RUNNING after an interruption.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import statistics
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["Tracker", "check_sqlite_store", "default_tracking_uri", "file_lock", "flatten", "PROXY", "standard_tags",
           "variant_metrics"]

PROXY = "mlflow-artifacts:/"     # artifact URIs relative to a server's --artifacts-destination (the study folder)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
_BATCH_PARAMS, _BATCH_METRICS = 100, 1000


def default_tracking_uri(study_dir: Path) -> str:
    """sqlite:////abs/path/mlflow.db (absolute: a relative URI would follow the working directory)."""
    return f"sqlite:///{(Path(study_dir).resolve() / 'mlflow.db')}"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (fcntl.flock) on `path`, held by this process until the block ends."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def check_sqlite_store(uri: str) -> None:
    """A SQLite tracking store that SQLite itself finds damaged (cut short, overwritten) is one HarnessError naming
    the file, before MLflow fails on it with a traceback; a store another process has locked is not damaged."""
    import sqlite3

    from plugins.errors import HarnessError

    db = _sqlite_path(uri)
    if db is None or not db.is_file() or db.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as con:
            verdict = con.execute("PRAGMA quick_check(1)").fetchone()[0]
    except sqlite3.OperationalError:     # locked by a writer, or unreadable here: MLflow says what it finds
        return
    except sqlite3.DatabaseError as exc:
        verdict = str(exc)
    if verdict != "ok":
        raise HarnessError(f"{db}: the MLflow database is damaged ({verdict}); move it aside or restore a copy: "
                           "the Optuna journal and trials/*/results.json keep every trial's results, and "
                           "`harness run` starts a new database, `harness report` reads results.json without one")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> {'train.lr': '0.0001', ...} (values as strings, the way MLflow stores params)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def standard_tags(run_name: str) -> dict[str, str]:
    """MLflow's own tags: mlflow.runName, mlflow.user and (where known) mlflow.source.git.commit."""
    import getpass

    from harness.provenance import git_info

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = os.environ.get("USER", "")
    tags = {"mlflow.runName": run_name, "mlflow.user": user}
    if sha := git_info()["sha"]:
        tags["mlflow.source.git.commit"] = sha
    return tags


class Tracker:
    """MLflow client bound to one experiment (= the study name)."""

    def __init__(self, uri: str, experiment: str, *, artifact_root: Path | None = None) -> None:
        from mlflow.tracking import MlflowClient  # mlflow sets its loggers up on import; quieten them after

        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)

        self.uri, self.artifact_root = uri, artifact_root
        check_sqlite_store(uri)
        self.client = MlflowClient(tracking_uri=uri)
        db = _sqlite_path(uri)
        # MLflow creates a SQLite store's schema on first use; two processes doing it at once collide
        # ('table experiment_tags already exists'), so the first use is serialised by a lock beside the file
        with file_lock(db.with_name(db.name + ".lock")) if db is not None else contextlib.nullcontext():
            self._experiment(experiment, artifact_root)

    def _experiment(self, experiment: str, artifact_root: Path | None) -> None:
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = PROXY + re.sub(r"[^A-Za-z0-9_.-]", "_", experiment) if artifact_root is not None else None
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            except Exception:  # another process created it first
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                self.experiment_id = exp.experiment_id
        else:
            self.experiment_id = exp.experiment_id

    # -- runs -----------------------------------------------------------------------------------------------
    def _exists(self, run_id: str | None) -> bool:
        if not run_id:
            return False
        try:
            return self.client.get_run(run_id).info.experiment_id == self.experiment_id
        except Exception:  # noqa: BLE001 - mlflow raises MlflowException (RESOURCE_DOES_NOT_EXIST)
            return False

    def start_study(self, *, study: str, preset: str | None, run_id: str | None = None,
                    params: dict[str, Any] | None = None) -> str:
        """The study's parent run: resumed (set RUNNING) when `run_id` exists, else created."""
        if self._exists(run_id):
            self.client.update_run(run_id, status="RUNNING")
            return run_id  # type: ignore[return-value]
        run = self.client.create_run(self.experiment_id, run_name=study, tags={
            **standard_tags(study), "harness.kind": "study", "harness.study": study, "harness.preset": preset or ""})
        self._log_params(run.info.run_id, flatten(params or {}))
        return run.info.run_id

    def keep_study(self, run_id: str, text: str) -> None:
        """The resolved study file as run (preset recorded) -> the parent run's artifact study.yaml, so a report
        from the tracking store alone finds the axes, seeds and baseline."""
        local = self._local_artifacts(run_id)
        if local is None:
            self.client.log_text(run_id, text, "study.yaml")
            return
        local.mkdir(parents=True, exist_ok=True)
        (local / "study.yaml").write_text(text)

    def end_study(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def start_trial(self, *, parent_id: str, key: str, label: str, params: dict[str, str],
                    run_id: str | None = None) -> str:
        """A trial's child run; an interrupted attempt's run (`run_id`) is resumed instead of duplicated."""
        if self._exists(run_id):
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "harness.status", "running")
            return run_id  # type: ignore[return-value]
        run = self.client.create_run(self.experiment_id, run_name=label, tags={
            **standard_tags(label), "mlflow.parentRunId": parent_id, "harness.kind": "trial", "harness.trial_key": key,
            "harness.label": label, "harness.status": "running"})
        self._log_params(run.info.run_id, params)
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, int | float) and not isinstance(v, bool)]
        for i in range(0, len(items), _BATCH_METRICS):
            self.client.log_batch(run_id, metrics=items[i:i + _BATCH_METRICS])

    def log_artifacts(self, run_id: str, paths: Iterable[Path], artifact_path: str | None = None) -> None:
        """Files (and folders) as artifacts of run_id, under artifact_path."""
        local = self._local_artifacts(run_id)
        for p in map(Path, paths):
            if not p.exists():
                continue
            if local is None:
                log = self.client.log_artifacts if p.is_dir() else self.client.log_artifact
                log(run_id, str(p), artifact_path)
                continue
            dst = local / (artifact_path or "")
            dst.mkdir(parents=True, exist_ok=True)
            if p.is_dir():
                shutil.copytree(p, dst / p.name, dirs_exist_ok=True)
            else:
                shutil.copy2(p, dst / p.name)

    def _local_artifacts(self, run_id: str) -> Path | None:
        """<artifact_root>/<path> for a proxied artifact URI on a local store (the client cannot write those)."""
        uri = self.client.get_run(run_id).info.artifact_uri
        if self.artifact_root is None or not uri.startswith(PROXY) or self.uri.startswith(("http:", "https:")):
            return None
        return self.artifact_root / uri[len(PROXY):].lstrip("/")

    def log_study_summary(self, parent_id: str, report_dir: Path | None,
                          keys: set[str] | None = None) -> dict[str, float]:
        """The parent run gets each variant's mean and std over seeds of every final metric of its completed
        child runs (`<variant>/<metric>`, `<variant>/<metric>.std`) and the report folder as artifact `report/`.
        `keys`: only the child runs of these trial keys (the study file as it is now, not an earlier version)."""
        children = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", max_results=10000)
        summary = variant_metrics([(r.data.params, r.data.metrics) for r in children
                                   if r.data.tags.get("harness.status") == "completed"
                                   and (keys is None or r.data.tags.get("harness.trial_key") in keys)])
        self.log_metrics(parent_id, summary, 0)
        if report_dir is not None and Path(report_dir).is_dir():
            self.log_artifacts(parent_id, sorted(Path(report_dir).iterdir()), "report")
        return summary

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value[:5000])

    def log_history(self, run_id: str, name: str, points: list[tuple[int, float]]) -> None:
        """One metric's history [(step, value), ...] in batches of 1000 (not one call per step)."""
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        items = [Metric(name, float(v), now, int(step)) for step, v in points]
        for i in range(0, len(items), _BATCH_METRICS):
            self.client.log_batch(run_id, metrics=items[i:i + _BATCH_METRICS])

    def end_trial(self, run_id: str, *, status: str, failure: str | None = None,
                  resumed_from_step: int = 0) -> None:
        """status: completed | failed | pruned | interrupted (MLflow FINISHED, FAILED, FINISHED, KILLED).
        An earlier attempt's failure text is removed (a completed trial never reads 'interrupted')."""
        mlflow_status = {"completed": "FINISHED", "pruned": "FINISHED", "failed": "FAILED",
                         "interrupted": "KILLED"}[status]
        tags = {"harness.status": status}
        if failure:
            tags["harness.failure"] = failure[:5000]
        elif "harness.failure" in self.client.get_run(run_id).data.tags:
            self.client.delete_tag(run_id, "harness.failure")
        if resumed_from_step:
            tags["harness.resumed_from_step"] = str(resumed_from_step)
        for k, v in tags.items():
            self.client.set_tag(run_id, k, v)
        self.client.set_terminated(run_id, mlflow_status)

    def running_children(self, parent_id: str) -> list[Any]:
        """Child runs of `parent_id` still marked RUNNING."""
        return self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and "
                                                "attributes.status = 'RUNNING'", max_results=10000)

    def end_orphans(self, parent_id: str, live: set[str], reason: str) -> int:
        """End as KILLED every RUNNING child run of `parent_id` not in `live`; returns how many."""
        n = 0
        for run in self.running_children(parent_id):
            if run.info.run_id not in live:
                self.end_trial(run.info.run_id, status="interrupted", failure=reason)
                n += 1
        return n

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param
        items = [Param(k, v if len(v) <= 6000 else v[:5997] + "...") for k, v in sorted(params.items())]
        for i in range(0, len(items), _BATCH_PARAMS):
            self.client.log_batch(run_id, params=items[i:i + _BATCH_PARAMS])



def variant_metrics(runs: list[tuple[dict[str, str], dict[str, float]]]) -> dict[str, float]:
    """[(params, final metrics) of each completed trial] -> {'<axis values>/<metric>': mean, '... .std': std}.
    A variant is the set of `axis.*` params (all seeds of one combination); std is the sample std (0 for one)."""
    groups: dict[str, dict[str, list[float]]] = {}
    for params, metrics in runs:
        axes = {k[len("axis."):]: v for k, v in sorted(params.items()) if k.startswith("axis.")}
        name = " ".join(f"{k}:{v}" for k, v in axes.items()) or "base"
        for m, v in metrics.items():
            if math.isfinite(v):
                groups.setdefault(_metric_name(name), {}).setdefault(m, []).append(v)
    out: dict[str, float] = {}
    for name, metrics in groups.items():
        for m, vals in metrics.items():
            out[f"{name}/{m}"] = statistics.fmean(vals)
            out[f"{name}/{m}.std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return out


def _metric_name(s: str) -> str:
    """Only the characters MLflow allows in metric names (alphanumerics, _ - . space : /)."""
    return re.sub(r"[^A-Za-z0-9_\-. :]", "_", s)
