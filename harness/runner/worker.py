"""The worker loop: claim a trial of the study, run it (harness/trial.py), record it in Optuna and MLflow.

Ablation grids (every TrialSpec of `expand_trials`) are enqueued once by the coordinator (`harness run`), so
any number of workers, on this machine or others (`harness worker`), run each combination exactly once. Search
spaces (`study.search`) are sampled by TPE, random or GP samplers up to `n_trials`. See harness/queue.py for
claiming and re-queueing, harness/trial.py for what one trial does.
"""

from __future__ import annotations

import gc
import json
import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from harness import queue
from harness.cuda_graph import release_cuda_memory
from harness.errors import TrialFailed, failure_reason
from harness.metric_buffer import MetricBuffer
from harness.runner.session import Session
from harness.runner.torchrun import run_ranks
from harness.study import LoadedStudy, TrialConfig, TrialSpec, trial_from_params
from harness.tracking import flatten
from harness.trial import TrialHooks, run_trial
from plugins.errors import HarnessError

__all__ = ["MAX_AUTO_ATTEMPTS", "WorkerHooks", "WorkerStopped", "expected_trial_seconds", "run_one", "run_worker",
           "time_left_for_a_trial", "tracking_hooks"]

MAX_AUTO_ATTEMPTS = 3      # a trial whose worker keeps dying is not re-queued forever


# -- search trials -----------------------------------------------------------------------------------------
def _annotation(key: str) -> Any:
    model: Any = TrialConfig
    for part in key.split("."):
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return float
        model = fields[part].annotation
    return model


def _primitive(v: Any) -> Any:
    return v if v is None or isinstance(v, bool | int | float | str) else json.dumps(v)


def _suggest(trial: optuna.Trial, loaded: LoadedStudy) -> dict[str, Any]:
    """Sample the search space (and the axes of a single block, as categorical choices)."""
    params: dict[str, Any] = {}
    study = loaded.study
    if len(study.axes) > 1:
        raise HarnessError(f"{loaded.source}: search: a search study takes one axes block")
    for key, values in (study.axes[0] if study.axes else {}).items():
        enc = [_primitive(v) for v in values]
        params[key] = values[enc.index(trial.suggest_categorical(key, enc))]
    for key, p in study.search.space.items():
        if p.choices is not None:
            enc = [_primitive(v) for v in p.choices]
            params[key] = p.choices[enc.index(trial.suggest_categorical(key, enc))]
        elif _annotation(key) is int:
            params[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            params[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return params


def _spec_for(session: Session, trial: optuna.Trial, frozen: FrozenTrial) -> TrialSpec:
    if not session.is_search:
        key = frozen.user_attrs.get("trial_key")
        if key not in session.specs:
            raise TrialFailed(f"trial {key} is not in the study file any more")
        return session.specs[key]
    params = _suggest(trial, session.loaded)
    spec = trial_from_params(session.loaded, params, session.study.seeds[0])
    for k, v in queue.identity(spec).items():
        trial.set_user_attr(k, v)
    return spec


# -- the worker loop ---------------------------------------------------------------------------------------
@dataclass
class WorkerHooks:
    """How a worker shows progress: trial start/end lines and in-trial phases."""

    started: Callable[[FrozenTrial, TrialSpec], None] = lambda t, s: None
    finished: Callable[[TrialSpec, str, str], None] = lambda s, status, detail: None
    trial: Callable[[], TrialHooks] = TrialHooks


def _next_trial(session: Session) -> FrozenTrial | None:
    osd = session.optuna
    queue.recover_stale(osd)
    frozen = queue.claim(osd)
    if frozen is not None or not session.is_search:
        return frozen
    trials = osd.get_trials(deepcopy=False)
    gone = queue.superseded(trials)
    if sum(1 for t in trials if t.number not in gone) >= session.study.search.n_trials:
        return None
    trial = osd.ask()
    osd._storage.set_trial_user_attr(trial._trial_id, "worker", queue.worker_stamp())
    return osd._storage.get_trial(trial._trial_id)


class WorkerStopped(HarnessError):
    """The worker's device is unusable (a sticky CUDA error); a fresh process must take over."""


def _deaths(frozen: FrozenTrial) -> int:
    """How many earlier attempts of this trial ended because their worker died."""
    return sum(1 for a in frozen.user_attrs.get("attempts", []) if a["reason"].startswith("worker"))


def expected_trial_seconds(session: Session) -> float:
    """The longest start-to-end time of the study's completed trials (0 when none has completed): what a trial
    started now is expected to take at most."""
    spans = [(t.datetime_complete - t.datetime_start).total_seconds()
             for t in session.optuna.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
             if t.datetime_start is not None and t.datetime_complete is not None]
    return max(spans, default=0.0)


def time_left_for_a_trial(session: Session, deadline: float | None) -> bool:
    """Whether a trial started now is expected to end before `deadline` (time.time(); None: no limit)."""
    return deadline is None or time.time() + expected_trial_seconds(session) < deadline


def run_worker(session: Session, registries: Any, *, device: torch.device, hooks: WorkerHooks | None = None,
               max_trials: int | None = None, deadline: float | None = None) -> int:
    """Claim and run trials until none is left (or max_trials ran, or a trial started now would not end before
    `deadline`, a time.time()); returns how many this worker ran.
    Raises WorkerStopped after a CUDA error that leaves the device unusable (the trial is recorded failed)."""
    hooks = hooks or WorkerHooks()
    ran = 0
    while max_trials is None or ran < max_trials:
        if not time_left_for_a_trial(session, deadline):
            break
        frozen = _next_trial(session)
        if frozen is None:
            break
        if _deaths(frozen) >= MAX_AUTO_ATTEMPTS:
            _tell_failed(session, frozen, f"gave up: its worker died {MAX_AUTO_ATTEMPTS} times")
            continue
        status, detail = run_one(session, registries, frozen, device=device, hooks=hooks)
        ran += 1
        gc.collect()
        if device.type == "cuda":
            if status == "failed" and any(s in detail for s in _STICKY_CUDA):
                raise WorkerStopped(f"stopping this worker after a CUDA error: {detail}")
            release_cuda_memory()      # the next trial's peak memory starts from the same state as this one's
    return ran


#: CUDA errors after which a process's context is unusable (out-of-memory is not one of them)
_STICKY_CUDA = ("CUDA error", "device-side assert", "illegal memory access", "CUBLAS_STATUS", "cuDNN error")


def _tell_failed(session: Session, frozen: FrozenTrial, reason: str) -> None:
    osd = session.optuna
    try:
        osd._storage.set_trial_user_attr(frozen._trial_id, "failure", reason)
        osd.tell(frozen.number, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        pass


def _duplicate_of(session: Session, frozen: FrozenTrial, key: str) -> int | None:
    for t in session.optuna.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        if t.number != frozen.number and t.user_attrs.get("trial_key") == key \
                and "duplicate_of" not in t.user_attrs:
            return t.number
    return None


def _cache_dir(session: Session) -> Path:
    """Where metrics cache reference statistics: $ZIGMA_HARNESS_CACHE, else <out>/.cache (shared)."""
    return Path(os.environ.get("ZIGMA_HARNESS_CACHE") or session.folder.parent / ".cache")


def tracking_hooks(session: Session, trial: optuna.Trial, run_id: str, spec: TrialSpec,
                   th: TrialHooks) -> MetricBuffer:
    """Point a trial's hooks at its MLflow run (log, history) and its Optuna trial (report; may prune); returns the
    metric buffer to flush when the trial ends. The worker uses it, or rank 0 of a distributed trial."""
    tracker = session.tracker
    th.log = buffer = MetricBuffer(tracker.client, run_id, spec.config.train.log_buffer)
    th.history = lambda name, points: tracker.log_history(run_id, name, points)
    metric = session.study.objective.metric

    def report(values: dict[str, float], step: int) -> None:
        if metric in values and math.isfinite(values[metric]):
            trial.report(values[metric], step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}: {metric}={values[metric]:.4g}")

    th.report = report
    return buffer


def run_one(session: Session, registries: Any, frozen: FrozenTrial, *, device: torch.device,
            hooks: WorkerHooks) -> tuple[str, str]:
    """Run one claimed trial to COMPLETE, FAIL or PRUNED in Optuna and MLflow; returns (status, detail)."""
    osd, tracker = session.optuna, session.tracker
    trial = optuna.Trial(osd, frozen._trial_id)
    try:
        spec = _spec_for(session, trial, frozen)
    except (TrialFailed, HarnessError) as exc:
        _tell_failed(session, frozen, str(exc))
        return "failed", str(exc)
    if not session.is_search and (dup := _duplicate_of(session, frozen, spec.key)) is not None:
        trial.set_user_attr("duplicate_of", dup)                 # two coordinators enqueued the same key
        _tell_failed(session, frozen, f"duplicate of trial {dup}")
        return "duplicate", f"duplicate of trial {dup}"
    hooks.started(frozen, spec)
    params = flatten(spec.config.model_dump(mode="json"))
    params.update({f"axis.{k}": str(v) for k, v in spec.params.items()})
    params["seed"] = str(spec.seed)
    run_id = tracker.start_trial(parent_id=session.parent_run_id, key=spec.key, label=spec.label,
                                 params=params, run_id=frozen.user_attrs.get("mlflow_run_id"))
    trial.set_user_attr("mlflow_run_id", run_id)
    trial_dir = session.folder / "trials" / spec.key
    th = hooks.trial()
    buffer = tracking_hooks(session, trial, run_id, spec, th)
    metric = session.study.objective.metric
    artifacts = [trial_dir / f for f in ("config.json", "provenance.json")]
    try:
        with queue.heartbeat(osd, frozen._trial_id):
            try:
                if spec.config.train.uses_torchrun:    # its rank 0 talks to Optuna and MLflow itself
                    result = run_ranks(session, spec, trial_dir=trial_dir, cache_dir=_cache_dir(session),
                                       run_id=run_id, trial=frozen, device=device)
                else:
                    result = run_trial(spec, registries, trial_dir=trial_dir, device=device,
                                       cache_dir=_cache_dir(session),
                                       hooks=th, source=session.loaded.source)
            finally:
                buffer.flush()
    except optuna.TrialPruned as exc:
        tracker.log_artifacts(run_id, artifacts)
        tracker.end_trial(run_id, status="pruned", failure=str(exc))
        trial.set_user_attr("failure", str(exc))
        osd.tell(trial, state=TrialState.PRUNED)
        hooks.finished(spec, "pruned", str(exc))
        return "pruned", str(exc)
    except KeyboardInterrupt:
        queue.fail_and_requeue(osd, osd._storage.get_trial(frozen._trial_id), "interrupted")
        tracker.end_trial(run_id, status="interrupted", failure="interrupted")
        hooks.finished(spec, "interrupted", "re-queued")
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a trial is recorded and the study goes on
        reason = failure_reason(exc)
        trial_dir.mkdir(parents=True, exist_ok=True)
        detail = exc.detail if isinstance(exc, TrialFailed) and exc.detail else traceback.format_exc()
        (trial_dir / "error.txt").write_text(f"{reason}\n\n{detail}")
        tracker.log_artifacts(run_id, [*artifacts, trial_dir / "error.txt"])
        tracker.end_trial(run_id, status="failed", failure=reason)
        _tell_failed(session, frozen, reason)
        hooks.finished(spec, "failed", reason)
        return "failed", reason
    metrics = result["metrics"]
    tracker.log_metrics(run_id, metrics, int(metrics.get("steps_run", spec.config.train.steps)))
    tracker.log_artifacts(run_id, [*artifacts, *(trial_dir / f for f in (
        "samples.png", "samples.json", "real.png", "metrics_meta.json", "cost.json", "results.json"))])
    value = metrics.get(metric, float("nan"))
    if not math.isfinite(value):
        reason = f"objective metric {metric!r} is {value} (results: {sorted(metrics)})"
        tracker.end_trial(run_id, status="failed", failure=reason)
        _tell_failed(session, frozen, reason)
        hooks.finished(spec, "failed", reason)
        return "failed", reason
    for k, v in metrics.items():
        trial.set_user_attr(k, v)
    trial.set_user_attr("resumed_from_step", result["resumed_from_step"])
    if result.get("budget_kind"):                           # which training budget bound the trial
        trial.set_user_attr("budget_kind", result["budget_kind"])
        tracker.set_tag(run_id, "harness.budget_kind", result["budget_kind"])
    if result.get("checkpoint_refused"):
        trial.set_user_attr("checkpoint_refused", result["checkpoint_refused"])
        tracker.set_tag(run_id, "harness.checkpoint_refused", result["checkpoint_refused"])
    for c in session.study.objective.constraints:
        v = metrics.get(c.metric, float("nan"))
        trial.set_constraint(c.metric, v - c.max if math.isfinite(v) else float("inf"))
    tracker.end_trial(run_id, status="completed", resumed_from_step=int(result["resumed_from_step"]))
    try:
        osd.tell(trial, value)
    except UpdateFinishedTrialError:
        hooks.finished(spec, "completed", "(already ended by another worker)")
        return "completed", ""
    resumed = int(result["resumed_from_step"])
    hooks.finished(spec, "completed", f"{metric}={value:.4g}" + (f", resumed from step {resumed}" if resumed else ""))
    return "completed", f"{metric}={value:.4g}"
