"""Progress of `harness run` (harness/progress.py): the time-left text, the one-line-per-trial output and the
rich bars' clocks."""

from __future__ import annotations

import math
import time
import types

from rich.progress import Progress

from harness.progress import LineProgress, RichProgress, _StudyEta, left_text
from harness.trial import loss_text

COUNTS = {"done": 3, "failed": 0, "pruned": 0, "running": 1, "pending": 4, "total": 8}


def test_time_left_is_the_trials_left_times_the_median_trial_time():
    assert left_text((5, 120.0, 3)) == "about 10 min left"           # 5 x 120 s = 600 s


def test_time_left_under_a_minute_says_so():
    assert left_text((1, 40.0, 2)) == "under a minute left"


def test_time_left_is_empty_before_any_trial_is_done():
    assert left_text(None) == ""


def test_the_loss_is_left_out_before_the_first_log_point_reads_one():
    assert loss_text(math.nan) == "" and loss_text(0.25) == "loss 0.2500"


def test_a_finished_trial_line_says_how_many_are_done_and_the_time_left(capsys):
    line = LineProgress(total=lambda: COUNTS, left=lambda: (5, 120.0, 3))
    spec = types.SimpleNamespace(key="abc", label="scan.name=zigzag-8 seed=0")
    line.hooks().finished(spec, "completed", "fd=1")
    assert capsys.readouterr().out.rstrip().endswith("[3/8 done, about 10 min left]")


def test_the_study_bar_shows_the_time_left_from_done_trials_not_rich_s_estimate():
    progress = Progress()
    task = progress._tasks[progress.add_task("study", total=8, completed=3, left=(5, 120.0, 3))]
    assert _StudyEta().render(task).plain == "~10 min"


def test_the_trial_bar_clock_starts_again_at_each_trial():
    bars = RichProgress(lambda: COUNTS)
    hooks = bars.hooks()
    hooks.started(None, types.SimpleNamespace(label="first", key="a"))
    first = bars.progress._tasks[bars.trial_task].start_time
    time.sleep(0.05)
    hooks.started(None, types.SimpleNamespace(label="second", key="b"))
    task = bars.progress._tasks[bars.trial_task]
    assert task.start_time >= first + 0.05 and task.description == "second"


def test_a_phase_without_a_count_shows_no_count_left_over_from_the_phase_before():
    bars = RichProgress(lambda: COUNTS)
    hooks = bars.hooks()
    hooks.started(None, types.SimpleNamespace(label="t", key="a"))
    phases = hooks.trial()
    phases.phase("sample", 16)
    phases.advance(16, "nfe 10")
    phases.phase("cost", None)
    task = bars.progress._tasks[bars.trial_task]
    assert task.total is None and task.completed == 0 and task.description == "t"


def _interrupt_at(step_to_stop: int):
    from harness.runner import WorkerHooks
    from harness.trial import TrialHooks

    def advance(step, info):
        if step == step_to_stop:
            raise KeyboardInterrupt
    return WorkerHooks(trial=lambda: TrialHooks(advance=advance))


def test_a_rerun_says_where_the_study_stands_and_that_a_trial_resumed_from_its_checkpoint(tmp_path, registries,
                                                                                             capsys):
    import pytest
    import torch

    from harness import runner
    from harness.cli import main
    from harness.study import load_study
    from tests.harness.runner_support import seed_mlflow_db, write_study
    path = write_study(tmp_path / "r.yaml", "r", axes={"backbone.width": [8]}, seeds=(0, 1))   # 2 trials
    folder = tmp_path / "runs" / "r"
    seed_mlflow_db(folder, tmp_path)
    args = ["run", str(path), "--runs", str(tmp_path / "runs"), "--quiet", "--no-report"]
    main([*args, "--time-limit", "0"])                                   # queued, none started
    session = runner.open_session(load_study(path), folder=folder, storage=None, tracking_uri=None)
    with pytest.raises(KeyboardInterrupt):   # 20 steps, a checkpoint every 10: stopped at 15, resumes from 10
        runner.run_worker(session, registries, device=torch.device("cpu"), hooks=_interrupt_at(15))
    capsys.readouterr()
    main(args)
    out = capsys.readouterr().out
    assert "resuming r: 0 of 2 done, 2 to run" in out
    assert out.count(", resumed from step 10") == 1


def test_an_interrupted_run_says_how_to_continue(tmp_path, registries, capsys, monkeypatch):
    import pytest

    from harness import launch
    from harness.cli import main
    from tests.harness.runner_support import seed_mlflow_db, write_study
    path = write_study(tmp_path / "i.yaml", "i", axes={"backbone.width": [8]}, seeds=(0,))
    seed_mlflow_db(tmp_path / "runs" / "i", tmp_path)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(launch, "run_rounds", ctrl_c)
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(path), "--runs", str(tmp_path / "runs"), "--quiet"])
    assert exit_.value.code == 130
    assert "interrupted: rerun the same command to continue" in capsys.readouterr().out


def test_card_note_names_the_cards_finished_trials_ran_on_when_this_machine_has_others(tmp_path):
    import json

    from harness.runner.session import card_note

    def trial(key, info, finished=True):
        d = tmp_path / "trials" / key
        d.mkdir(parents=True)
        (d / "provenance.json").write_text(json.dumps({"device_info": info}))
        if finished:
            (d / "results.json").write_text("{}")

    assert card_note(tmp_path, {"cpu"}) is None                                     # nothing finished yet
    trial("a", {"device": "cuda", "gpu": "NVIDIA H200"})
    trial("b", {"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3"}, finished=False)  # unfinished: not counted
    assert card_note(tmp_path, {"NVIDIA H200"}) is None
    note = card_note(tmp_path, {"NVIDIA H100 80GB HBM3"})
    assert note.startswith("note: finished trials ran on NVIDIA H200; this machine has NVIDIA H100 80GB HBM3:")
    trial("c", {"device": "cpu"})
    assert card_note(tmp_path, {"cpu"}).startswith("note: finished trials ran on NVIDIA H200, cpu; this machine has cpu")


def test_a_rerun_on_another_card_says_so_before_its_trials_start(tmp_path, registries, capsys):
    import json

    from harness.cli import main
    from tests.harness.runner_support import seed_mlflow_db, write_study
    path = write_study(tmp_path / "c.yaml", "c", axes={"backbone.width": [8]}, seeds=(0, 1))   # 2 trials
    folder = tmp_path / "runs" / "c"
    seed_mlflow_db(folder, tmp_path)
    args = ["run", str(path), "--runs", str(tmp_path / "runs"), "--quiet", "--no-report"]
    main(args)
    for prov in folder.glob("trials/*/provenance.json"):      # as if they had finished on a GPU machine
        doc = json.loads(prov.read_text())
        doc["device_info"] = {**doc["device_info"], "device": "cuda", "gpu": "NVIDIA H200"}
        prov.write_text(json.dumps(doc))
    capsys.readouterr()
    main(args)
    assert "note: finished trials ran on NVIDIA H200; this machine has cpu:" in capsys.readouterr().out


def test_cpu_workers_on_a_gpu_machine_are_not_told_about_the_machines_cards(tmp_path, registries, capsys,
                                                                           monkeypatch):
    import torch

    from harness.cli import main
    from tests.harness.runner_support import seed_mlflow_db, write_study
    path = write_study(tmp_path / "w.yaml", "w", axes={"backbone.width": [8]}, seeds=(0,))   # 1 trial, on this CPU
    folder = tmp_path / "runs" / "w"
    seed_mlflow_db(folder, tmp_path)
    args = ["run", str(path), "--runs", str(tmp_path / "runs"), "--quiet", "--no-report"]
    main(args)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)                  # as if an H100 were here
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H100 80GB HBM3")
    capsys.readouterr()
    main([*args, "--workers", "1"])                  # the finished trial ran on the CPU, and so would these workers
    assert "finished trials ran on" not in capsys.readouterr().out
    main(args)                                       # this process would use the GPU: the note stands
    assert "note: finished trials ran on cpu; this machine has NVIDIA H100 80GB HBM3:" in capsys.readouterr().out
