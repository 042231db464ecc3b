"""Helpers for runner tests: toy study files, `harness` subprocesses, reading Optuna and MLflow back."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PLUGIN = "tests.harness.toy_plugin"
BASE = {
    "dataset": {"name": "toy-blobs"},
    "backbone": {"name": "toy-mlp", "size": "tiny", "patch_size": 1},
    "interpolant": {"path": "toy-linear"},
    "sampler": {"name": "toy-euler"},
    "conditioning": {"kind": "class"},
    "train": {"steps": 20, "batch_size": 8, "log_every": 5, "checkpoint_every": 10, "lr": 0.003},
    "eval": {"num_samples": 8, "batch_size": 8, "metrics": ["toy-gap"], "grid_samples": 4, "cost": False},
}
#: 3 widths x 2 learning rates x 2 seeds = 12 combinations
GRID = {"backbone.width": [8, 16, 32], "train.lr": [0.001, 0.003]}


def write_study(path: Path, name: str, *, axes=GRID, seeds=(0, 1), **base_overrides) -> Path:
    base = {k: dict(v) for k, v in BASE.items()}
    for k, v in base_overrides.items():
        base[k].update(v)
    doc = {"name": name, "base": base, "axes": axes, "seeds": list(seeds), "objective": {"metric": "toy-gap"}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "ZIGMA_HARNESS_PLUGINS": PLUGIN, "OMP_NUM_THREADS": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true", "CUDA_VISIBLE_DEVICES": ""}


def harness_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *args]


def run_harness(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`harness ARGS` in its own process group, which is killed whole (workers too) on timeout."""
    proc = subprocess.Popen(harness_cmd(*args), env=env(), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"harness {' '.join(args)}: no end in {timeout} s\n{out[-2000:]}\n{err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


_TEMPLATE: Path | None = None


def seed_mlflow_db(folder: Path, tmp_root: Path) -> None:
    """Copy an empty, already-migrated mlflow.db into a study folder (MLflow's first-use migrations take
    seconds; the runner itself creates the database when it is absent)."""
    global _TEMPLATE
    if _TEMPLATE is None or not _TEMPLATE.exists():
        from mlflow.tracking import MlflowClient
        db = tmp_root / f"mlflow-template-{uuid.uuid4().hex[:6]}.db"
        MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
        _TEMPLATE = db
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(_TEMPLATE, folder / "mlflow.db")


def optuna_trials(name: str, storage):
    import optuna
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def journal(folder: Path):
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    return JournalStorage(JournalFileBackend(str(folder / "optuna.journal")))


def mlflow_runs(folder: Path, name: str) -> tuple[list, list]:
    """(parent runs, child runs) of the study's experiment in folder/mlflow.db."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("harness.kind") == "study"]
    children = [r for r in runs if r.data.tags.get("harness.kind") == "trial"]
    return parents, children


def postgres_url() -> str | None:
    """A throwaway database on the local PostgreSQL server (None when unreachable)."""
    try:
        import psycopg
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True,
                             connect_timeout=3) as conn:
            name = f"zh_test_{uuid.uuid4().hex[:10]}"
            conn.execute(f"CREATE DATABASE {name}")
    except Exception:  # noqa: BLE001 - any failure means: no server for this test
        return None
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_postgres(url: str) -> None:
    import psycopg
    name = url.rsplit("/", 1)[1]
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def interrupted_then_resumed(spec, registries, trial_dir: Path, cache_dir: Path, *, stop_at: int, device=None):
    """Run a trial until its progress reports step `stop_at` (a KeyboardInterrupt there, as Ctrl-C), then run it
    again from its checkpoint; returns the resumed run's results."""
    import pytest
    import torch

    from harness.trial import TrialHooks, run_trial
    device = device or torch.device("cpu")

    def stop(step, info):
        if step == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trial(spec, registries, trial_dir=trial_dir, device=device, cache_dir=cache_dir,
                  hooks=TrialHooks(advance=stop))
    return run_trial(spec, registries, trial_dir=trial_dir, device=device, cache_dir=cache_dir)
