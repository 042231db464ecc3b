"""Two `harness run` coordinators started at once on one study folder both finish, each trial run once."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter

import pytest
from optuna.trial import TrialState

from tests.harness.runner_support import (
    REPO,
    env,
    harness_cmd,
    journal,
    mlflow_runs,
    optuna_trials,
    write_study,
)


@pytest.mark.slow
def test_two_coordinators_started_together_finish_with_every_trial_exactly_once(tmp_path):
    study = write_study(tmp_path / "twin.yaml", "twin", axes={"backbone.width": [8, 16]}, seeds=(0, 1),
                        train={"steps": 10, "checkpoint_every": 5})
    out = tmp_path / "runs"       # no pre-made mlflow.db: both processes find the SQLite schema missing
    args = harness_cmd("run", str(study), "--runs", str(out), "--quiet", "--no-report")
    procs = [subprocess.Popen(args, env=env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True) for _ in range(2)]
    try:
        results = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr[-3000:] + stdout[-2000:]
        assert "Traceback" not in stderr
    folder = out / "twin"
    trials = [t for t in optuna_trials("twin", journal(folder)) if "duplicate_of" not in t.user_attrs]
    keys = [t.user_attrs["trial_key"] for t in trials]
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: 4}
    assert len(set(keys)) == 4
    parents, children = mlflow_runs(folder, "twin")
    assert len(parents) == 1
    assert sorted(c.data.tags["harness.trial_key"] for c in children) == sorted(keys)
