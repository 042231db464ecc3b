"""Several worker processes share one study (four CPU workers; three per device with --trials-per-gpu): every
one of 12 combinations runs exactly once."""

from __future__ import annotations

from collections import Counter

import pytest
from optuna.trial import TrialState

from tests.harness.runner_support import (
    drop_postgres,
    journal,
    mlflow_runs,
    optuna_trials,
    postgres_url,
    run_harness,
    seed_mlflow_db,
    write_study,
)

pytestmark = pytest.mark.slow


def _check_exactly_once(trials, folder, name):
    keys = [t.user_attrs["trial_key"] for t in trials]
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: 12}, [t.state for t in trials]
    assert len(set(keys)) == 12, f"duplicated keys: {Counter(keys).most_common(3)}"
    workers = {t.user_attrs["worker"]["pid"] for t in trials}
    assert len(workers) >= 2, "the trials were not shared between worker processes"
    parents, children = mlflow_runs(folder, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 12
    assert {c.info.status for c in children} == {"FINISHED"}
    assert sorted(c.data.tags["harness.trial_key"] for c in children) == sorted(keys)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert {t.user_attrs["mlflow_run_id"] for t in trials} == {c.info.run_id for c in children}


@pytest.mark.parametrize("name,flag,started", [("grid4", ["--workers", "4"], "started 4 worker(s): w0"),
                                               ("grid3", ["--trials-per-gpu", "3"], "started 3 worker(s): cpu.0")])
def test_several_workers_on_the_journal_file_run_each_of_twelve_combinations_once(tmp_path, name, flag, started):
    """Four CPU workers (--workers 4), or three on this process's device (--trials-per-gpu 3)."""
    study = write_study(tmp_path / "grid.yaml", name)
    seed_mlflow_db(tmp_path / "runs" / name, tmp_path)
    out = run_harness("run", str(study), "--runs", str(tmp_path / "runs"), *flag, "--quiet", "--no-report")
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-2000:]
    assert started in out.stdout + out.stderr
    folder = tmp_path / "runs" / name
    _check_exactly_once(optuna_trials(name, journal(folder)), folder, name)


@pytest.mark.postgres
def test_four_workers_on_postgresql_run_each_of_twelve_combinations_once(tmp_path):
    url = postgres_url()
    if url is None:
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432")
    try:
        study = write_study(tmp_path / "grid.yaml", "grid4pg")
        seed_mlflow_db(tmp_path / "runs" / "grid4pg", tmp_path)
        out = run_harness("run", str(study), "--runs", str(tmp_path / "runs"), "--workers", "4", "--quiet",
                          "--no-report", "--storage", url)
        assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-2000:]
        assert not (tmp_path / "runs" / "grid4pg" / "optuna.journal").exists()
        import optuna
        trials = optuna_trials("grid4pg", optuna.storages.RDBStorage(url))
        _check_exactly_once(trials, tmp_path / "runs" / "grid4pg", "grid4pg")
    finally:
        drop_postgres(url)
