"""Exported stores (harness/store.py): what is left out, the report regenerated from a store, continuing a study
from a store, and `harness run --time-limit`. Also: every committed store under stores/ gives its committed report."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import types
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.harness.runner_support import REPO, journal, mlflow_runs, seed_mlflow_db, write_study

AXES = {"backbone.width": [8, 16]}            # x 2 seeds = 4 toy trials, about a second each


def _run(*args: str) -> None:
    from harness.cli import main
    main(["run", *args, "--quiet"])


def _study(tmp_path: Path, name: str) -> tuple[Path, Path]:
    path = write_study(tmp_path / f"{name}.yaml", name, axes=AXES)
    folder = tmp_path / "runs" / name
    seed_mlflow_db(folder, tmp_path)
    return path, folder


def _trials(folder: Path, name: str) -> list:
    return optuna.load_study(study_name=name, storage=journal(folder)).get_trials(deepcopy=False)


def test_an_export_leaves_out_checkpoints_locks_the_report_artifact_and_per_step_timing_rows(tmp_path, registries):
    from harness.store import export_store
    path, folder = _study(tmp_path, "exp")
    _run(str(path), "--runs", str(tmp_path / "runs"))
    assert list(folder.rglob("checkpoint.pt")) and list(folder.rglob("artifacts/report/README.md"))
    with sqlite3.connect(folder / "mlflow.db") as con:
        steps_before = con.execute("SELECT count(*) FROM metrics WHERE key = 'train_step_s'").fetchone()[0]
        finals = con.execute("SELECT run_uuid, key, value FROM latest_metrics ORDER BY 1, 2").fetchall()
    out = export_store(folder, tmp_path / "stores" / "exp")
    dest = tmp_path / "stores" / "exp"
    names = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert not [n for n in names if "checkpoint" in n or n.endswith(".lock") or "/artifacts/report/" in n]
    assert {"study.yaml", "optuna.journal", "mlflow.db", "export.json"} <= names
    assert len([n for n in names if n.startswith("trials/") and n.endswith("/results.json")]) == 4
    # every trial run's own artifacts stay (only the parent run's report/ folder is regenerated, so left out)
    kept = [n for n in names if n.startswith("mlartifacts/") and "/artifacts/" in n]
    for artifact in ("samples.png", "results.json", "config.json", "provenance.json"):
        assert len([n for n in kept if n.endswith("/artifacts/" + artifact)]) == 4, artifact
    with sqlite3.connect(dest / "mlflow.db") as con:
        rows = con.execute("SELECT run_uuid, count(*) FROM metrics WHERE key = 'train_step_s' GROUP BY 1").fetchall()
        assert con.execute("SELECT run_uuid, key, value FROM latest_metrics ORDER BY 1, 2").fetchall() == finals
    assert len(rows) == 4 and all(n == 1 for _, n in rows), "each trial keeps the last train_step_s only"
    assert out.dropped["per-step train_step_s rows in mlflow.db"] == steps_before - 4
    assert out.restarts == [] and out.bytes < sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_the_report_regenerated_from_an_exported_store_has_the_same_tables_as_the_runs_report(tmp_path, registries):
    from harness.report import build_report, report_differences, table_texts
    from harness.store import export_store
    path, folder = _study(tmp_path, "same")
    _run(str(path), "--runs", str(tmp_path / "runs"))
    original = tmp_path / "reports" / "same"                 # written by `harness run` from the runs folder
    store = tmp_path / "stores" / "same"
    export_store(folder, store)
    shutil.rmtree(folder)                                    # nothing of the runs folder is read any more
    regenerated = build_report(store, tmp_path / "regenerated")
    a, b = table_texts(original), table_texts(regenerated)
    assert a == b and all(a.values())
    assert "| 8 " in a["README.md"] and "toy-gap" in a["summary.json"]        # the tables are there
    target, diffs = report_differences(store, original)
    assert target == original and diffs == []
    (original / "results.csv").write_text((original / "results.csv").read_text().replace("completed", "failed", 1))
    assert [d.split(":")[0] for d in report_differences(store, original)[1]] == ["results.csv"]


def test_an_exported_store_continues_finished_trials_done_and_unfinished_ones_from_step_0(tmp_path, registries):
    from harness import queue, runner
    from harness.store import RESTART, export_store
    from harness.study import load_study
    from harness.tracking import Tracker, default_tracking_uri
    path, folder = _study(tmp_path, "cont")
    _run(str(path), "--runs", str(tmp_path / "runs"), "--time-limit", "0")   # queued, none started
    assert {t.state for t in _trials(folder, "cont")} == {TrialState.WAITING}
    session = runner.open_session(load_study(path), folder=folder, storage=None, tracking_uri=None)
    assert runner.run_worker(session, registries, device=__import__("torch").device("cpu"), max_trials=2) == 2
    done = {t.user_attrs["trial_key"]: (t.number, t.value, t.user_attrs["mlflow_run_id"])
            for t in _trials(folder, "cont") if t.state == TrialState.COMPLETE}
    # a trial running on a machine that is gone: RUNNING, with an MLflow run and a checkpoint
    running = queue.claim(session.optuna)
    tracker = Tracker(default_tracking_uri(folder), "cont", artifact_root=folder / "mlartifacts")
    old_run = tracker.start_trial(parent_id=session.parent_run_id, key=running.user_attrs["trial_key"], label="x",
                                  params={})
    session.optuna._storage.set_trial_user_attr(running._trial_id, "mlflow_run_id", old_run)
    (folder / "trials" / running.user_attrs["trial_key"]).mkdir(parents=True)
    (folder / "trials" / running.user_attrs["trial_key"] / "checkpoint.pt").write_bytes(b"x" * 1000)

    store = tmp_path / "stores" / "cont"
    out = export_store(folder, store)
    assert out.restarts == [running.user_attrs["trial_key"]]        # the fourth trial never started: pending
    latest = queue.latest_by_key(_trials(store, "cont"))
    waiting = [k for k, t in latest.items() if t.state == TrialState.WAITING]
    assert len(waiting) == 2 and running.user_attrs["trial_key"] in waiting
    assert not any(latest[k].user_attrs.get("mlflow_run_id") for k in waiting)
    _, children = mlflow_runs(store, "cont")
    killed = next(r for r in children if r.info.run_id == old_run)
    assert killed.info.status == "KILLED" and killed.data.tags["harness.failure"] == RESTART

    runs2 = tmp_path / "elsewhere"                      # another machine: the store copied under --runs
    shutil.copytree(store, runs2 / "cont")
    _run(str(path), "--runs", str(runs2))
    after = {t.user_attrs["trial_key"]: t for t in queue.latest_by_key(_trials(runs2 / "cont", "cont")).values()}
    assert all(t.state == TrialState.COMPLETE for t in after.values()) and len(after) == 4
    for key, (number, value, run_id) in done.items():   # finished trials were not run again
        assert (after[key].number, after[key].value, after[key].user_attrs["mlflow_run_id"]) == (number, value, run_id)
    restarted = after[running.user_attrs["trial_key"]]
    assert restarted.user_attrs["mlflow_run_id"] != old_run and restarted.user_attrs["resumed_from_step"] == 0


def test_an_export_refuses_a_folder_that_is_not_a_study_and_a_destination_that_is_not_an_export(tmp_path):
    from harness.store import export_store
    from plugins.errors import HarnessError
    (tmp_path / "x").mkdir()
    with pytest.raises(HarnessError, match=r"not a study folder written by `harness run` \(no study.yaml"):
        export_store(tmp_path / "x", tmp_path / "y")
    for f in ("study.yaml", "optuna.journal", "mlflow.db"):
        (tmp_path / "x" / f).write_text("")
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "notes.txt").write_text("mine")
    with pytest.raises(HarnessError, match="is not an earlier export"):
        export_store(tmp_path / "x", tmp_path / "y")
    assert (tmp_path / "y" / "notes.txt").read_text() == "mine"


def test_time_limit_zero_queues_the_study_and_starts_no_trial(tmp_path, registries, capsys):
    path, folder = _study(tmp_path, "zero")
    _run(str(path), "--runs", str(tmp_path / "runs"), "--time-limit", "0")
    trials = _trials(folder, "zero")
    assert len(trials) == 4 and {t.state for t in trials} == {TrialState.WAITING}
    assert "0 done" in capsys.readouterr().out


def test_a_trial_is_started_only_when_the_longest_finished_trial_would_end_before_the_deadline():
    from harness.runner import expected_trial_seconds, time_left_for_a_trial
    study = optuna.create_study()
    session = types.SimpleNamespace(optuna=study)
    assert expected_trial_seconds(session) == 0.0
    t0 = dt.datetime(2026, 1, 1, 12, 0, 0)
    for seconds in (30, 95, 60):
        study.add_trial(optuna.trial.FrozenTrial(
            number=0, state=TrialState.COMPLETE, value=1.0, values=None, datetime_start=t0,
            datetime_complete=t0 + dt.timedelta(seconds=seconds), params={}, distributions={}, user_attrs={},
            system_attrs={}, intermediate_values={}, trial_id=0))
    assert expected_trial_seconds(session) == 95.0
    import time
    assert time_left_for_a_trial(session, None)
    assert time_left_for_a_trial(session, time.time() + 100)
    assert not time_left_for_a_trial(session, time.time() + 90)


#: committed exports (smoke presets' stores are git-ignored, like their reports)
STORES = sorted(p for p in (REPO / "stores").glob("*") if (p / "export.json").is_file()
                and not p.name.endswith("-smoke")) if (REPO / "stores").is_dir() else []


@pytest.mark.skipif(not STORES, reason="no exported store is committed under stores/ yet")
@pytest.mark.parametrize("store", STORES, ids=[p.name for p in STORES])
def test_every_committed_store_gives_its_committed_reports_tables(store):
    from harness.report import report_differences
    target, diffs = report_differences(store, REPO / "reports" / store.name)
    assert target.is_dir(), f"{store} has no committed report {target}"
    assert not diffs, f"reports/{store.name} is not what `harness report stores/{store.name}` gives:\n" + \
        "\n".join(diffs)


def test_status_reads_a_study_folder_copied_under_another_name(tmp_path, registries, capsys):
    from harness.cli import main
    path, folder = _study(tmp_path, "named")
    _run(str(path), "--runs", str(tmp_path / "runs"), "--time-limit", "0")   # 2 widths x 2 seeds queued
    shutil.copytree(folder, tmp_path / "my-copy")
    capsys.readouterr()
    main(["status", str(tmp_path / "my-copy")])
    assert "named: 0 done, 0 running, 0 failed, 0 pruned, 4 pending (of 4)" in capsys.readouterr().out
