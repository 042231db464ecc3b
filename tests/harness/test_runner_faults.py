"""Faults: failing trials are recorded with their reason; a killed study resumes, nothing lost or repeated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.harness.runner_support import (
    PLUGIN,
    env,
    harness_cmd,
    journal,
    mlflow_runs,
    optuna_trials,
    run_harness,
    seed_mlflow_db,
    write_study,
)

FAULTS = [{"backbone.width": [8, 16]}, {"backbone.fail": ["raise", "nan"]}, {"train.max_memory_gb": [0.001]}]


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """A study of 2 good trials, one that raises, one whose loss turns NaN and one above its memory limit,
    run in this process."""
    root = tmp_path_factory.mktemp("faults")
    study = write_study(root / "faults.yaml", "faults", axes=FAULTS, seeds=(0,))
    seed_mlflow_db(root / "runs" / "faults", root)
    with pytest.raises(SystemExit) as exit_:
        _main(["run", str(study), "--runs", str(root / "runs"), "--quiet", "--no-report"])
    assert exit_.value.code == 1, "a study with failed trials exits non-zero"
    return root


def _main(argv):
    from harness.cli import main
    from plugins.registry import load_registries
    old = os.environ.get("ZIGMA_HARNESS_PLUGINS")
    os.environ["ZIGMA_HARNESS_PLUGINS"] = PLUGIN
    try:
        load_registries.cache_clear()
        main(argv)
    finally:
        if old is None:
            os.environ.pop("ZIGMA_HARNESS_PLUGINS")
        else:
            os.environ["ZIGMA_HARNESS_PLUGINS"] = old


def _by_label(trials):
    return {t.user_attrs["label"]: t for t in trials}


def test_failing_trials_end_failed_with_their_reason_in_optuna_while_the_others_complete(faulty):
    trials = _by_label(optuna_trials("faults", journal(faulty / "runs" / "faults")))
    assert trials["backbone.width=8 seed=0"].state == TrialState.COMPLETE
    assert trials["backbone.width=16 seed=0"].state == TrialState.COMPLETE
    raised, nan = trials["backbone.fail=raise seed=0"], trials["backbone.fail=nan seed=0"]
    memory = trials["train.max_memory_gb=0.001 seed=0"]
    assert {raised.state, nan.state, memory.state} == {TrialState.FAIL}
    assert raised.user_attrs["failure"] == "RuntimeError: toy failure on purpose"
    assert nan.user_attrs["failure"] == "non-finite training loss at step 3"
    assert "exceeded train.max_memory_gb=0.001 at step" in memory.user_attrs["failure"]


def test_failing_trials_end_failed_with_their_reason_in_mlflow(faulty):
    parents, children = mlflow_runs(faulty / "runs" / "faults", "faults")
    runs = {c.data.tags["harness.label"]: c for c in children}
    assert len(runs) == 5 and parents[0].info.status == "FINISHED"
    for label, reason in (("backbone.fail=raise seed=0", "RuntimeError: toy failure on purpose"),
                          ("backbone.fail=nan seed=0", "non-finite training loss at step 3")):
        assert runs[label].info.status == "FAILED"
        assert runs[label].data.tags["harness.status"] == "failed"
        assert runs[label].data.tags["harness.failure"] == reason
    assert runs["train.max_memory_gb=0.001 seed=0"].info.status == "FAILED"
    for label in ("backbone.width=8 seed=0", "backbone.width=16 seed=0"):
        assert runs[label].info.status == "FINISHED"
        assert runs[label].data.tags["harness.status"] == "completed"
        assert runs[label].data.metrics["toy-gap"] >= 0.0


def test_a_failed_trial_keeps_its_traceback_beside_its_config(faulty):
    folder = faulty / "runs" / "faults" / "trials"
    errors = sorted(p.parent.name for p in folder.glob("*/error.txt"))
    assert len(errors) == 3
    texts = [(folder / e / "error.txt").read_text() for e in errors]
    assert any("Traceback" in t and "toy failure on purpose" in t for t in texts)
    assert all((folder / e / "config.json").exists() for e in errors)


def test_status_shows_each_failure_reason(faulty, capsys):
    _main(["status", str(faulty / "runs" / "faults")])
    out = capsys.readouterr().out
    assert "2 done, 0 running, 3 failed, 0 pruned, 0 pending (of 5)" in out
    assert "toy failure on purpose" in out and "non-finite training loss" in out


def test_rerunning_repeats_nothing_and_retry_failed_queues_only_the_failed(faulty, monkeypatch):
    args = ["run", str(faulty / "faults.yaml"), "--runs", str(faulty / "runs"), "--quiet", "--no-report"]
    for argv in (args, [*args, "--retry-failed"]):
        with pytest.raises(SystemExit):   # exit 1: failed trials remain
            _main(argv)
        if argv is args:
            assert len(optuna_trials("faults", journal(faulty / "runs" / "faults"))) == 5
    trials = optuna_trials("faults", journal(faulty / "runs" / "faults"))
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: 2, TrialState.FAIL: 6}
    retried = [t for t in trials if t.user_attrs.get("attempts")]
    assert len(retried) == 3 and all(len(t.user_attrs["attempts"]) == 1 for t in retried)
    _, children = mlflow_runs(faulty / "runs" / "faults", "faults")
    assert len(children) == 5, "a retried trial continues its own MLflow run"
    monkeypatch.setenv("COLUMNS", "200")                         # a table row a line
    status = run_harness("status", str(faulty / "runs" / "faults"), timeout=300)
    assert status.stdout.count("failed (try 2)") == 3, status.stdout   # the retried ones say which try they are on


@pytest.mark.slow
def test_sigkill_mid_study_then_rerun_runs_every_combination_once_resuming_from_checkpoints(tmp_path):
    study = write_study(tmp_path / "kill.yaml", "kill", train={"steps": 30, "checkpoint_every": 10},
                        backbone={"sleep": 0.03})
    folder = tmp_path / "runs" / "kill"
    seed_mlflow_db(folder, tmp_path)
    args = ["run", str(study), "--runs", str(tmp_path / "runs"), "--workers", "2", "--quiet", "--no-report"]
    proc = subprocess.Popen(harness_cmd(*args), env=env(), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            done = list(folder.glob("trials/*/results.json"))
            mid = [p for p in folder.glob("trials/*/checkpoint.pt")
                   if not (p.parent / "results.json").exists()]
            if len(done) >= 2 and mid:
                break
            assert proc.poll() is None, "the study finished before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no trial reached a checkpoint in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = optuna_trials("kill", journal(folder))
    assert any(t.state == TrialState.RUNNING for t in before), "the kill should leave running trials"

    out = run_harness(*args)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-2000:]
    trials = optuna_trials("kill", journal(folder))
    complete = [t.user_attrs["trial_key"] for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 12 and len(set(complete)) == 12
    superseded = {a["number"] for t in trials for a in t.user_attrs.get("attempts", [])}
    assert {t.number for t in trials if t.state != TrialState.COMPLETE} == superseded
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in trials)
    parents, children = mlflow_runs(folder, "kill")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 12 and {c.info.status for c in children} == {"FINISHED"}
    resumed = [json.loads(p.read_text())["resumed_from_step"] for p in folder.glob("trials/*/results.json")]
    assert max(resumed) >= 10, f"the interrupted trial should resume from its checkpoint, got {resumed}"


def _interrupted(tmp_path, name: str, sig: signal.Signals) -> tuple[list[str], Path]:
    """Run a two-trial study without workers, send `sig` once the first trial has a checkpoint, and check that the
    run ends 130 with that trial failed 'interrupted', a copy of it queued and its MLflow runs KILLED."""
    study = write_study(tmp_path / f"{name}.yaml", name, axes={"backbone.width": [8, 16]}, seeds=(0,),
                        train={"steps": 30, "checkpoint_every": 10}, backbone={"sleep": 0.05})
    folder = tmp_path / "runs" / name
    seed_mlflow_db(folder, tmp_path)
    args = ["run", str(study), "--runs", str(tmp_path / "runs"), "--quiet", "--no-report"]
    proc = subprocess.Popen(harness_cmd(*args), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 300
    while not list(folder.glob("trials/*/checkpoint.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the deadline"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    trials = optuna_trials(name, journal(folder))
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["failure"] == "interrupted"
    assert trials[-1].state == TrialState.WAITING and trials[-1].user_attrs["attempts"][0]["number"] == 0
    parents, children = mlflow_runs(folder, name)
    assert parents[0].info.status == "KILLED" and [c.info.status for c in children] == ["KILLED"]
    return args, folder


@pytest.mark.slow
def test_sigterm_to_a_run_without_workers_requeues_the_running_trial_as_ctrl_c_does(tmp_path):
    _interrupted(tmp_path, "term", signal.SIGTERM)


@pytest.mark.slow
def test_sigint_requeues_the_running_trial_and_leaves_no_mlflow_run_running(tmp_path):
    args, folder = _interrupted(tmp_path, "int", signal.SIGINT)

    out = run_harness(*args)
    assert out.returncode == 0, out.stderr[-3000:]
    trials = optuna_trials("int", journal(folder))
    assert sorted(t.user_attrs["trial_key"] for t in trials if t.state == TrialState.COMPLETE) == sorted(
        {t.user_attrs["trial_key"] for t in trials})
    parents, children = mlflow_runs(folder, "int")
    assert parents[0].info.status == "FINISHED"
    assert [c.info.status for c in children] == ["FINISHED"] * 2
    resumed = [json.loads(p.read_text())["resumed_from_step"] for p in folder.glob("trials/*/results.json")]
    assert max(resumed) >= 10
