"""What `run`, `status` and the report say is true: failures verbatim, failed is failed, dead is not running."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.harness.runner_support import BASE, PLUGIN, run_harness, seed_mlflow_db, write_study

torch.set_num_threads(1)
MESSAGE = "cannot open [/data/cache.bin] [red]x[/red] [b]"


@pytest.fixture(scope="module")
def bracketed(tmp_path_factory):
    """One good trial and one that fails with a message full of square brackets, run with the report."""
    from harness.study import expand_trials, load_study
    root = tmp_path_factory.mktemp("brackets")
    for seed in range(100):   # a seed whose failing trial key starts with a-f: rich would read '[abc…]' as a tag
        study = write_study(root / "br.yaml", "br", axes={"backbone.fail": ["none", "raise"]}, seeds=(seed,),
                            backbone={"fail_message": MESSAGE}, train={"steps": 10, "checkpoint_every": 5})
        if expand_trials(load_study(study))[1].key[0] in "abcdef":
            break
    seed_mlflow_db(root / "runs" / "br", root)
    res = run_harness("run", str(study), "--runs", str(root / "runs"), "--quiet", timeout=600)
    return root, res


def test_run_shows_a_bracketed_failure_verbatim_and_exits_1(bracketed):
    _, res = bracketed
    assert res.returncode == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert f"RuntimeError: {MESSAGE}" in res.stdout
    assert "1 trial(s) failed" in res.stdout


def test_status_shows_a_bracketed_failure_and_the_trial_key_verbatim(bracketed):
    from harness.study import expand_trials, load_study
    root, _ = bracketed
    res = run_harness("status", str(root / "runs" / "br"), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    failing = next(s for s in expand_trials(load_study(root / "br.yaml")) if s.params["backbone.fail"] == "raise")
    assert failing.key[0] in "abcdef"
    assert f"failed: {failing.label} [{failing.key}]: RuntimeError: {MESSAGE}" in res.stdout


def test_the_report_shows_a_bracketed_failure_verbatim(bracketed):
    root, _ = bracketed
    readme = (root / "reports" / "br" / "README.md").read_text()
    assert f"RuntimeError: {MESSAGE}" in readme


def test_a_search_study_whose_trials_fail_reports_them_failed_and_exits_1(tmp_path):
    import yaml
    doc = {"name": "srch", "base": {**BASE, "backbone": {**BASE["backbone"], "fail": "raise", "fail_step": 0},
                                    "train": {**BASE["train"], "steps": 5}},
           "search": {"n_trials": 2, "sampler": "random", "space": {"train.lr": {"low": 0.001, "high": 0.01}}},
           "objective": {"metric": "toy-gap"}}
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump(doc))
    seed_mlflow_db(tmp_path / "runs" / "srch", tmp_path)
    res = run_harness("run", str(study), "--runs", str(tmp_path / "runs"), "--quiet", "--no-report", timeout=600)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "srch: 0 done, 0 running, 2 failed, 0 pruned, 0 pending (of 2)" in res.stdout
    status = run_harness("status", str(tmp_path / "runs" / "srch"), timeout=300)
    assert "2 failed, 0 pruned, 0 pending (of 2)" in status.stdout


def test_a_dead_workers_trial_is_counted_pending_and_shown_as_died_not_running(tmp_path, monkeypatch, capsys):
    from harness import queue, runner
    from harness.runner import print_status
    from harness.study import load_study
    monkeypatch.setenv("ZIGMA_HARNESS_PLUGINS", PLUGIN)
    study = load_study(write_study(tmp_path / "d.yaml", "dead", axes={"backbone.width": [8]}, seeds=(0,)))
    session = runner.open_session(study, folder=tmp_path / "dead", storage=None, tracking_uri=None,
                                  create=True, track=False)
    queue.enqueue(session.optuna, list(session.specs.values()))
    t = queue.claim(session.optuna)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    stamp = {**queue.worker_stamp(), "pid": int(gone.stdout), "started": 0.0}
    session.optuna._storage.set_trial_user_attr(t._trial_id, "worker", stamp)
    c = runner.counts(session)
    assert (c["running"], c["pending"]) == (0, 1)
    print_status(session)
    out = capsys.readouterr().out
    assert "worker died" in out and "0 running" in out


def test_the_report_of_run_out_dot_stays_inside_the_working_directory(tmp_path, monkeypatch):
    from harness.launch import report_dir
    monkeypatch.chdir(tmp_path)
    assert report_dir(tmp_path / "s", "s") == tmp_path / "reports" / "s"
    assert report_dir(tmp_path / "runs" / "s", "s") == tmp_path / "reports" / "s"


def test_an_output_folder_that_cannot_be_written_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "afile").write_text("")
    study = write_study(tmp_path / "w.yaml", "w", axes={"backbone.width": [8]}, seeds=(0,))
    res = run_harness("run", str(study), "--runs", str(tmp_path / "afile"), timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert f"--runs: cannot write the study folder {tmp_path / 'afile' / 'w'}" in res.stderr


def test_a_killed_worker_whose_trial_another_finished_does_not_make_run_exit_2(monkeypatch):
    from harness import launch, runner
    monkeypatch.setattr(runner, "print_status", lambda *a, **k: None)
    said = []
    done = {"done": 4, "failed": 0, "pruned": 0, "running": 0, "pending": 0, "total": 4}
    monkeypatch.setattr(runner, "counts", lambda session: done)
    from types import SimpleNamespace
    session = SimpleNamespace(parent_run_id=None, is_search=False, specs={},
                              tracker=SimpleNamespace(log_study_summary=lambda *a, **k: None))
    launch.finish(session, quiet=True, no_report=True, say=said.append, rcs=[0, -9])   # returns: exit 0
    assert "every trial has ended" in said[0]
    monkeypatch.setattr(runner, "counts", lambda session: {**done, "done": 3, "pending": 1})
    with pytest.raises(Exception, match="rerun the same command to continue"):
        launch.finish(session, quiet=True, no_report=True, say=said.append, rcs=[0, -9])
