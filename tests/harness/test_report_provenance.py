"""Numbers a reviewer can trust (issue 15): a report from the tracking store alone equals the one from the runs
folder; one seed gives no significance colour and no 'best'; a resumed trial is marked so, never 'completed /
interrupted'; the header says what ran."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from tests.harness.runner_support import run_harness, seed_mlflow_db, write_study


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A toy study run by `harness run`: widths 8 and 16, one seed, baseline width 16 (not the first)."""
    root = tmp_path_factory.mktemp("toy")
    path = write_study(root / "s.yaml", "trust", axes={"backbone.width": [8, 16]}, seeds=(0,))
    doc = yaml.safe_load(path.read_text())
    doc["baseline"] = {"backbone.width": 16}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    seed_mlflow_db(root / "runs" / "trust", root)
    out = run_harness("run", str(path), "--runs", str(root / "runs"), "--no-report", "--quiet")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return root


def _summary(folder):
    doc = json.loads((folder / "summary.json").read_text())
    return {k: doc[k] for k in ("tables", "pareto", "failed")}


@pytest.mark.slow  # the module's toy study run takes ~35 s on a busy 2-core CPU
def test_a_report_from_the_tracking_store_alone_equals_the_one_from_the_runs_folder(toy_run):
    from harness.report import build_report

    study = toy_run / "runs" / "trust"
    from_folder = build_report(study, toy_run / "reports" / "folder")
    from_store = build_report("trust", toy_run / "reports" / "store", runs_dir=toy_run / "elsewhere",
                              tracking_uri=f"sqlite:///{study / 'mlflow.db'}")
    a, b = _summary(from_folder), _summary(from_store)
    assert a["tables"][0]["baseline"] == b["tables"][0]["baseline"] == "16"
    assert a == b


@pytest.mark.slow
def test_a_one_seed_report_has_no_significance_colour_and_no_best(toy_run):
    from harness.report import build_report

    out = build_report(toy_run / "runs" / "trust", toy_run / "reports" / "one-seed")
    cells = [c for t in json.loads((out / "summary.json").read_text())["tables"] for r in t["rows"]
             for c in r["metrics"].values()]
    assert cells and not any(c["best"] for c in cells) and all(c["within_noise"] is None for c in cells)
    html = (out / "index.html").read_text()
    assert not re.search(r'class="[^"]*\b(better|worse|best|noise)\b', html)
    readme = (out / "README.md").read_text()
    assert "**bold**: best" not in readme and "Welch's t-test" in readme


def test_an_interrupted_then_resumed_trial_is_marked_resumed_never_completed_interrupted(tmp_path):
    """The runner's lifecycle on the tracker: orphan ended 'interrupted', the same run resumed and completed."""
    import pandas as pd

    from harness.report import build_report
    from harness.study import expand_trials, load_study
    from harness.tracking import Tracker

    folder = tmp_path / "runs" / "life"
    seed_mlflow_db(folder, tmp_path)
    path = write_study(folder / "study.yaml", "life", axes={"backbone.width": [8]}, seeds=(0,))
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}", "life", artifact_root=folder / "mlartifacts")
    parent = tracker.start_study(study="life", preset=None)
    tracker.keep_study(parent, path.read_text())
    spec = expand_trials(load_study(path))[0]
    params = {"axis.backbone.width": "8", "seed": "0"}
    run = tracker.start_trial(parent_id=parent, key=spec.key, label=spec.label, params=params)
    assert tracker.end_orphans(parent, set(), "interrupted (runner stopped)") == 1
    again = tracker.start_trial(parent_id=parent, key=spec.key, label=spec.label, params=params, run_id=run)
    tracker.log_metrics(again, {"toy-gap": 0.5}, 20)
    tracker.end_trial(again, status="completed", resumed_from_step=10)
    out = build_report(folder, tmp_path / "report")
    frame = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["status"] == "completed" and row["failure"] == "" and row["resumed_from_step"] == 10
    readme = (out / "README.md").read_text()
    assert "1 (1 resumed)" in readme and "interrupted" not in readme


@pytest.mark.slow  # one real smoke trial (digits, tiny ZigMa, fd-effnet): ~30-60 s on a 2-core CPU
def test_the_smoke_reports_header_states_what_ran(tmp_path):
    """The README's smoke command, cut to one scan: the header names digits, 16×16, the tiny model, 1 seed and the
    40 steps that ran, whatever the study's free-text description says about the full study."""
    from harness.report import build_report
    from tests.harness.runner_support import REPO, env

    doc = yaml.safe_load((REPO / "studies" / "scan_ablation.yaml").read_text())
    doc["axes"] = {"scan.name": ["sweep-1"]}
    path = tmp_path / "scan_ablation.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), "--preset", "smoke", "--runs",
                          str(tmp_path / "runs"), "--no-report", "--quiet"], env={**env(), "ZIGMA_HARNESS_PLUGINS": ""},
                         cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    report = build_report(tmp_path / "runs" / "scan_ablation-smoke", tmp_path / "report")
    header = (report / "README.md").read_text().split("## Provenance")[0]
    ran = header.split("Ran: ", 1)[1].split("\n", 1)[0]
    assert ran.startswith("digits (1,500 train / 297 reference images) at 16×16")
    assert "size tiny" in ran and "1 seed (0)" in ran and "40 training steps of batch 16" in ran
    assert "NFE 10" in ran and "Fashion-MNIST" not in ran


def test_the_notes_say_how_accurate_the_cond_accuracy_classifier_is_on_real_images_with_the_count():
    from harness.report.provenance import classifier_note
    fields = {"classifier_real_accuracy": ["0.9735"], "classifier_real_n": ["2000"],
              "classifier_real_accuracy.colour": ["1.0"], "classifier_real_accuracy.shape": ["0.98"],
              "classifier_real_accuracy.position": ["0.993"], "classifier_heldout_accuracy": ["0.97"],
              "classifier_heldout_n": ["400"]}
    assert classifier_note("tc", fields) == (
        "tc: the classifier that scores cond-accuracy reads all attributes right on 97.4 % of 2000 held-out real "
        "captioned images (colour 100.0 %, shape 98.0 %, position 99.3 %), and on 97.0 % of the 400 training "
        "images it was not fitted on; a sample's score is only as exact as that.")
    older = classifier_note("tc", {"classifier_heldout_accuracy": ["0.97"]})
    assert "97.0 %" in older and "was not recorded" in older
    assert classifier_note("tc", {}) is None


def test_trials_that_shared_a_device_say_so_in_the_notes_and_alone_they_do_not(tmp_path, toy_run):
    """--trials-per-gpu 2 (on the CPU: two workers on it) makes every trial record 2, and the report says whose cost
    columns are a shared device's; the module's plain run says nothing of the kind."""
    path = write_study(tmp_path / "s.yaml", "shared", axes={"backbone.width": [8, 16]}, seeds=(0,))
    seed_mlflow_db(tmp_path / "runs" / "shared", tmp_path)
    out = run_harness("run", str(path), "--runs", str(tmp_path / "runs"), "--trials-per-gpu", "2", "--quiet",
                      "--no-report")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    for prov in (tmp_path / "runs" / "shared" / "trials").glob("*/provenance.json"):
        assert json.loads(prov.read_text())["device_info"]["trials_per_device"] == 2
    for folder, shared in ((tmp_path / "runs" / "shared", True), (toy_run / "runs" / "trust", False)):
        report = tmp_path / f"report-{shared}"
        out = run_harness("report", str(folder), "--out", str(report))
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        text = (report / "README.md").read_text()
        assert ("2 of the completed trials ran with 2 trials side by side on one device" in text) is shared


def test_the_header_gives_each_sampler_its_own_nfe():
    """Several samplers in one study: each is named with the NFE its own trials recorded (an adaptive solver's as a
    range), not one list of samplers beside an unrelated list of NFE values."""
    import pandas as pd

    from harness.report.provenance import _sampler_nfe

    t = pd.DataFrame({"params.sampler.name": ["euler", "euler", "heun", "dopri5", "dopri5", "dopri5"],
                      "metrics.nfe": [50.0, 50.0, 50.0, 152.0, 188.0, 182.0]})
    assert _sampler_nfe(t) == "sampler euler / heun at NFE 50, dopri5 at NFE 152–188"
    assert _sampler_nfe(t.iloc[:2]) == "sampler euler at NFE 50"


def test_peak_memory_is_left_out_only_for_graphed_cuda_trials_that_predate_the_per_process_count():
    from harness.report.caveats import held_over_peak

    old_gpu = {"device_info": {"gpu": "NVIDIA H200"}}
    new_gpu = {"device_info": {"gpu": "NVIDIA H200", "trial_in_process": 3}}
    cpu = {"device_info": {"device": "cpu"}}
    graphed, before_graphs = {"params.train.cuda_graph": "auto"}, {}
    assert held_over_peak(old_gpu, graphed)
    assert held_over_peak(old_gpu, {"params.train.cuda_graph": "True"})
    assert not held_over_peak(old_gpu, {"params.train.cuda_graph": "False"})   # never captured: no side streams
    assert not held_over_peak(old_gpu, before_graphs)                          # commits before CUDA graphs
    assert not held_over_peak(new_gpu, graphed)                                # released between trials
    assert not held_over_peak(cpu, graphed) and not held_over_peak(None, graphed)


def test_each_trial_records_how_many_trials_its_process_ran_before_it():
    from harness.provenance import provenance

    kw = {"device": torch.device("cpu"), "precision": "fp32", "mixer_backend_requested": "reference", "seeds": {},
          "plugins": {}}
    first, second = provenance(**kw), provenance(**kw)
    assert second["device_info"]["trial_in_process"] == first["device_info"]["trial_in_process"] + 1


@pytest.fixture()
def edited_run(tmp_path, registries):
    """One trial of 20 steps, then the study file's base edited to 10 steps and run again (a new trial key)."""
    from harness.cli import main
    path = write_study(tmp_path / "e.yaml", "edited", axes={"backbone.width": [8]}, seeds=(0,))
    seed_mlflow_db(tmp_path / "runs" / "edited", tmp_path)
    main(["run", str(path), "--runs", str(tmp_path / "runs"), "--quiet", "--no-report"])
    write_study(path, "edited", axes={"backbone.width": [8]}, seeds=(0,), train={"steps": 10})
    main(["run", str(path), "--runs", str(tmp_path / "runs"), "--quiet"])
    return tmp_path


def test_a_report_leaves_out_trials_of_an_earlier_version_of_the_study_file_and_says_so(edited_run):
    import csv
    report = edited_run / "reports" / "edited"
    rows = list(csv.DictReader((report / "results.csv").open()))
    assert [float(r["metrics.steps_run"]) for r in rows] == [10.0]  # the 20-step trial is not a second seed
    assert "edited: 1 trial(s) recorded under an earlier version of the study file" in \
        (report / "README.md").read_text()


def test_the_parent_run_summary_leaves_out_trials_of_an_earlier_version_of_the_study_file(edited_run):
    from tests.harness.runner_support import mlflow_runs
    parents, _ = mlflow_runs(edited_run / "runs" / "edited", "edited")
    metrics = parents[0].data.metrics
    assert metrics["backbone.width:8/steps_run"] == 10.0 and metrics["backbone.width:8/steps_run.std"] == 0.0


def test_a_run_of_an_edited_study_file_says_its_earlier_trials_are_left_out(capsys, edited_run):
    out = " ".join(capsys.readouterr().out.split())
    assert "1 recorded under the earlier file ran another configuration" in out
    assert "resuming edited: 0 of 1 done, 1 to run" in out


def test_a_study_whose_trials_ran_on_two_cards_says_how_many_on_each(tmp_path):
    from harness.report import build_report
    from tests.harness.report_study import write_results_study

    study = """\
name: two_cards
base:
  dataset: {name: digits, resolution: 8}
  backbone: {size: tiny, patch_size: 2}
  eval: {num_samples: 16, metrics: [fd-effnet]}
axes:
  scan.name: [sweep-1, zigzag-8]
seeds: [0, 1, 2]
baseline: {scan.name: sweep-1}
"""
    # seeds 0 and 1 on one card, seed 2 continued on another: 4 + 2 trials
    folder = write_results_study(tmp_path, study, lambda s: {"fd-effnet": 10.0 + s.seed, "train_images_per_s": 100.0},
                                 device_of=lambda s: "NVIDIA H200" if s.seed < 2 else "NVIDIA H100 80GB HBM3")
    summary = json.loads((build_report(folder, tmp_path / "report") / "summary.json").read_text())
    assert summary["provenance"][0]["trials_per_device"] == {"NVIDIA H100 80GB HBM3": 2, "NVIDIA H200": 4}
    (caution,) = [n for n in summary["notes"] if "devices (" in n]
    assert caution.startswith("Caution: two_cards's completed trials ran on 2 devices (NVIDIA H100 80GB HBM3: 2, "
                              "NVIDIA H200: 4)")
    one = write_results_study(tmp_path / "one", study.replace("two_cards", "one_card"),
                              lambda s: {"fd-effnet": 10.0 + s.seed})
    summary = json.loads((build_report(one, tmp_path / "report1") / "summary.json").read_text())
    assert not [n for n in summary["notes"] if "devices (" in n]
