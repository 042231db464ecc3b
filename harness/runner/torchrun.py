"""A worker's side of a distributed trial (`train.devices` x `train.nodes` > 1, or `train.launcher: torchrun`):
launch its ranks under torchrun, wait, and turn what they left into the trial's result or failure.

The worker writes `trials/<key>/torchrun/ticket.json` (the resolved trial, where its files go, and how rank 0
reaches the study's Optuna storage and MLflow run) and starts `python -m harness.launch_ranks <torchrun options>
-m harness.rank ticket.json` in a session of its own: torch.distributed.run's own launcher (elastic agent, c10d
rendezvous, no restarts) that also records how each failed rank ended. Each rank writes `rank<r>.json` when it
raises; rank 0 writes `outcome.json` (completed with the results, or pruned). A failed trial is recorded with the
root cause: a rank killed by a signal other than the agent's SIGTERM teardown (SIGKILL, the OOM killer) first, else
the earliest rank error; the agent stops every other rank, and the worker kills what is left of the session.

GPUs: the ranks see the first `devices` GPUs of the worker (harness run --gpus groups them, harness/launch.py);
each rank then narrows CUDA_VISIBLE_DEVICES to its own (harness/distributed.py). On the CPU the ranks use gloo.
Several hosts (`train.nodes` > 1): the worker that claims the trial is node 0; it records the rendezvous in the
trial's user attr `torchrun`, and `harness worker --node-rank K` on each other host joins it (`follow`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from harness.errors import TrialFailed
from harness.runner.session import Session
from harness.study import TrainConfig, TrialSpec

__all__ = ["follow", "root_cause", "run_ranks", "torchrun_args"]

FOLDER = "torchrun"                       # trials/<key>/torchrun/: ticket, rank errors, outcome, launcher failures
STOP_GRACE_S = 30                         # the agent's time to stop its ranks before the session is killed


def torchrun_args(train: TrainConfig, *, rdzv_id: str, node_rank: int = 0) -> list[str]:
    """torchrun's options for a trial: one node without an endpoint is standalone (a free local port); static
    rendezvous places node K's ranks at K x devices + local rank (rank 0 on node 0), c10d by its own order."""
    args = ["--nproc-per-node", str(train.devices), "--nnodes", str(train.nodes), "--max-restarts", "0"]
    if train.nodes == 1 and train.rdzv_endpoint is None:
        return [*args, "--standalone"]
    args += ["--rdzv-backend", train.rdzv_backend, "--rdzv-endpoint", str(train.rdzv_endpoint), "--rdzv-id", rdzv_id]
    return [*args, "--node-rank", str(node_rank)] if train.rdzv_backend == "static" else args


def _ticket(session: Session, spec: TrialSpec, *, trial_dir: Path, cache_dir: Path, run_id: str,
            trial: FrozenTrial) -> dict[str, Any]:
    return {"key": spec.key, "params": spec.params, "seed": spec.seed, "origin": spec.origin,
            "config": spec.config.model_dump(mode="json"), "source": session.loaded.source,
            "trial_dir": str(trial_dir), "cache_dir": str(cache_dir),
            "talk": {"storage": session.storage or str(session.folder), "study": session.study.name,
                     "runs": str(session.folder.parent), "tracking_uri": session.tracker.uri, "run_id": run_id,
                     "trial_id": trial._trial_id}}


def _rank_env(train: TrainConfig, device: torch.device, folder: Path) -> dict[str, str]:
    """The ranks' environment: the worker's first `devices` GPUs (or the CPU), where the launcher records failures."""
    env = {**os.environ, "ZIGMA_HARNESS_TORCHRUN_FAILURES": str(folder / "failures.json"),
           "ZIGMA_HARNESS_TORCHRUN_PARENT": str(os.getpid())}
    if device.type != "cuda":   # the worker's CPU threads shared among its ranks
        threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
        return {**env, "ZIGMA_HARNESS_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": "",
                "OMP_NUM_THREADS": str(max(1, threads // train.devices))}
    listed = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    visible = listed or [str(i) for i in range(torch.cuda.device_count())]
    if len(visible) < train.devices:
        raise TrialFailed(f"train.devices={train.devices} but this worker has {len(visible)} GPU(s) "
                          f"(CUDA_VISIBLE_DEVICES={','.join(visible)}); `harness run --gpus` gives each worker "
                          "a group of train.devices GPUs")
    env.pop("ZIGMA_HARNESS_DEVICE", None)
    return {**env, "CUDA_VISIBLE_DEVICES": ",".join(visible[:train.devices])}


def launch(ticket: dict[str, Any], folder: Path, train: TrainConfig, device: torch.device, *, rdzv_id: str,
           node_rank: int = 0) -> int:
    """Start the trial's ranks on this host and wait for them; returns the launcher's exit code. Ctrl-C or
    SIGTERM of the worker (KeyboardInterrupt) stops them first, then is raised again."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("rank*.json"), folder / "outcome.json", folder / "failures.json"]:
        old.unlink(missing_ok=True)                     # what an earlier attempt left
    shutil.rmtree(folder / "logs", ignore_errors=True)
    path = folder / "ticket.json"
    path.write_text(json.dumps(ticket, indent=2, default=str))
    env = _rank_env(train, device, folder)
    logs = folder / "logs"                              # each rank's stdout and stderr (torchrun --redirects 3)
    cmd = [sys.executable, "-m", "harness.launch_ranks", *torchrun_args(train, rdzv_id=rdzv_id, node_rank=node_rank),
           "--log-dir", str(logs), "--redirects", "3", "-m", "harness.rank", str(path)]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        return proc.wait()
    except BaseException:
        _stop(proc)
        raise
    finally:
        _kill_session(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)                # the elastic agent stops its ranks
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass


def _kill_session(proc: subprocess.Popen) -> None:
    """Nothing of the launcher's session outlives it (ranks are in its process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait()


def run_ranks(session: Session, spec: TrialSpec, *, trial_dir: Path, cache_dir: Path, run_id: str,
              trial: FrozenTrial, device: torch.device) -> dict[str, Any]:
    """Run one claimed trial under torchrun; returns rank 0's result (as harness.trial.run_trial does). Raises
    TrialFailed with the root cause, or optuna.TrialPruned when rank 0 was pruned."""
    train = spec.config.train
    folder = trial_dir / FOLDER
    ticket = _ticket(session, spec, trial_dir=trial_dir, cache_dir=cache_dir, run_id=run_id, trial=trial)
    rdzv_id = f"{session.study.name}-{trial.number}"
    if train.nodes > 1:                                # the other hosts' `harness worker --node-rank K` join it
        session.optuna._storage.set_trial_user_attr(trial._trial_id, "torchrun", {
            "rdzv_id": rdzv_id, "ticket": ticket})
    rc = launch(ticket, folder, train, device, rdzv_id=rdzv_id)
    return outcome(folder, rc, world=train.world_size)


def outcome(folder: Path, rc: int, *, world: int) -> dict[str, Any]:
    """What the ranks left: rank 0's result, or TrialFailed (root cause) / optuna.TrialPruned."""
    done = folder / "outcome.json"
    if rc == 0 and done.exists():
        out = json.loads(done.read_text())
        if out["status"] == "pruned":
            raise optuna.TrialPruned(out["reason"])
        return out["result"]
    if rc == 0:
        raise TrialFailed("torchrun ended without rank 0's result (outcome.json is missing)")
    reason, detail = root_cause(folder, rc, world=world)
    raise TrialFailed(reason, detail=detail)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def root_cause(folder: Path, rc: int, *, world: int) -> tuple[str, str]:
    """(reason, detail) of a failed distributed trial, from the ranks' error files and the launcher's failure
    record; detail: the failing rank's traceback, or where its output is (torchrun --log-dir).

    Order: a rank killed by a signal other than SIGTERM without an error of its own (SIGKILL, the OOM killer: the
    others then fail on their collectives); else the earliest rank error; else a rank stopped by SIGTERM or
    exiting non-zero without a word; else the launcher's own error."""
    errors = {}
    for p in folder.glob("rank*.json"):
        e = json.loads(p.read_text())
        errors[int(e["rank"])] = e
    record = json.loads((folder / "failures.json").read_text()) if (folder / "failures.json").exists() else {}
    failures = {int(r): f for r, f in record.get("failures", {}).items()}
    for r, f in sorted(failures.items()):
        code = f.get("exitcode", 0)
        if code < 0 and code != -signal.SIGTERM and r not in errors:
            return (f"rank {r} of {world} was killed by {_signal_name(code)} (pid {f.get('pid')}): no Python error",
                    f"its output: {folder / 'logs'}")
    if errors:
        r, e = min(errors.items(), key=lambda item: (item[1]["time"], item[0]))
        return f"{e['reason']} (rank {r} of {world})", f"rank {r}'s traceback:\n{e['traceback']}"
    for r, f in sorted(failures.items()):
        code = f.get("exitcode", 0)
        how = f"was stopped by {_signal_name(code)}" if code < 0 else f"exited with code {code}"
        return f"rank {r} of {world} {how} without an error", f"its output: {folder / 'logs'}"
    if record.get("error"):
        return f"torchrun: {record['error']}", f"the ranks' output: {folder / 'logs'}"
    return f"torchrun exited with code {rc} and no rank reported an error", f"the ranks' output: {folder / 'logs'}"


# -- several hosts ---------------------------------------------------------------------------------------------
def follow(session: Session, *, node_rank: int, device: torch.device, say=print, poll_s: float = 2.0) -> int:
    """`harness worker --node-rank K`: join, as node K, each distributed trial of the study that a node-0 worker
    has started (user attr `torchrun`), until no trial is waiting or running; returns how many it joined."""
    joined: set[str] = set()
    while True:
        trials = session.optuna.get_trials(deepcopy=False)
        live = [t for t in trials if t.state == TrialState.RUNNING and "torchrun" in t.user_attrs]
        todo = [t for t in live if t.user_attrs["torchrun"]["rdzv_id"] not in joined]
        if not todo:
            if not any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials):
                return len(joined)
            time.sleep(poll_s)
            continue
        t = todo[0]
        info = t.user_attrs["torchrun"]
        joined.add(info["rdzv_id"])
        ticket = dict(info["ticket"])                   # rank 0 is on node 0 (static) or wherever c10d puts it
        trial_dir = session.folder / "trials" / ticket["key"]
        train = TrainConfig.model_validate(ticket["config"]["train"])
        if node_rank >= train.nodes:
            say(f"trial {t.number}: train.nodes={train.nodes}, this worker is node {node_rank}; skipped")
            continue
        ticket.update(trial_dir=str(trial_dir), cache_dir=str(session.folder.parent / ".cache"))
        say(f"trial {t.number}: joining as node {node_rank} of {train.nodes} ({info['rdzv_id']})")
        rc = launch(ticket, trial_dir / FOLDER / f"node{node_rank}", train, device, rdzv_id=info["rdzv_id"],
                    node_rank=node_rank)
        say(f"trial {t.number}: node {node_rank} ended ({'ok' if rc == 0 else f'exit code {rc}'})")

