"""Deltas in a report are taken within an arm: each row against the baseline row that shares its other settings
(the same budget, mixer, patch size ...), checked against differences of means worked out by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from report_study import write_results_study

from harness.report import build_report
from harness.report.tables import Cell, MetricInfo, Row, _compare

ARMS_YAML = """\
name: toy_arms
base:
  dataset: {name: digits}
  backbone: {size: tiny, patch_size: 2}
  eval: {num_samples: 64, metrics: [fd-effnet]}
axes:
  - {backbone.name: [zigma], scan.name: [zigzag-8]}
  - {backbone.name: [dit]}
  - {backbone.name: [zigma], scan.name: [zigzag-8], train.steps: [80], train.budget: [{kind: gpu_seconds, value: 2}]}
  - {backbone.name: [dit], train.steps: [80], train.budget: [{kind: gpu_seconds, value: 2}]}
seeds: [0, 1]
baseline: {backbone.name: dit}
"""
#: FD before seed noise (+-0.5): (backbone, budgeted arm?)
ARMS_FD = {("zigma", False): 30.0, ("dit", False): 40.0, ("zigma", True): 20.0, ("dit", True): 22.0}

GRID_YAML = """\
name: toy_grid
base:
  dataset: {name: digits}
  backbone: {name: zigma, size: tiny}
  eval: {num_samples: 64, metrics: [fd-effnet]}
axes:
  backbone.mixer: [mamba1, mamba2]
  scan.name: [sweep-1, zigzag-8]
seeds: [0, 1]
baseline: {scan.name: sweep-1}
"""
GRID_FD = {("mamba1", "sweep-1"): 50.0, ("mamba1", "zigzag-8"): 40.0,
           ("mamba2", "sweep-1"): 30.0, ("mamba2", "zigzag-8"): 27.0}


def _write_study(root: Path, text: str, fd_of) -> Path:
    """A finished study from results.json files alone; fd_of(params) gives each variant's FD before seed noise."""
    return write_results_study(root, text, lambda spec: {"fd-effnet": fd_of(spec.params) + (-1) ** spec.seed * 0.5})


def _table(report: Path) -> dict:
    return json.loads((report / "summary.json").read_text())["tables"][0]


def test_each_budget_arm_is_compared_with_its_own_baseline_row(tmp_path):
    folder = _write_study(tmp_path, ARMS_YAML,
                          lambda p: ARMS_FD[(p["backbone.name"], "train.budget" in p)])
    report = build_report(folder, tmp_path / "report")
    rows = {(r["values"]["backbone.name"], r["values"]["train.budget"] is not None): r for r in _table(report)["rows"]}
    assert rows[("dit", False)]["baseline"] and rows[("dit", True)]["baseline"]
    assert not rows[("zigma", False)]["baseline"] and not rows[("zigma", True)]["baseline"]
    assert rows[("zigma", False)]["metrics"]["fd-effnet"]["delta"] == pytest.approx(30.0 - 40.0)
    assert rows[("zigma", True)]["metrics"]["fd-effnet"]["delta"] == pytest.approx(20.0 - 22.0)  # not 20 - 40
    assert rows[("zigma", True)]["compared_with"] == rows[("dit", True)]["label"]
    readme = (report / "README.md").read_text()
    assert "each row is compared with the baseline row that shares the most of its other settings" in readme
    assert "| 2 gpu_seconds (baseline) |" in readme.replace("  ", "")


def test_a_two_axis_grid_compares_each_mixer_with_its_own_sweep(tmp_path):
    folder = _write_study(tmp_path, GRID_YAML, lambda p: GRID_FD[(p["backbone.mixer"], p["scan.name"])])
    rows = {(r["values"]["backbone.mixer"], r["values"]["scan.name"]): r
            for r in _table(build_report(folder, tmp_path / "report"))["rows"]}
    assert [k for k, r in rows.items() if r["baseline"]] == [("mamba1", "sweep-1"), ("mamba2", "sweep-1")]
    assert rows[("mamba1", "zigzag-8")]["metrics"]["fd-effnet"]["delta"] == pytest.approx(40.0 - 50.0)
    assert rows[("mamba2", "zigzag-8")]["metrics"]["fd-effnet"]["delta"] == pytest.approx(27.0 - 30.0)
    assert rows[("mamba2", "zigzag-8")]["metrics"]["fd-effnet"]["rel_delta"] == pytest.approx(-3.0 / 30.0)


def _row(label: str, nfe: float, fd: float) -> Row:
    cells = {"nfe": Cell(mean=nfe, std=0.0, n=3), "fd": Cell(mean=fd, std=1.0, n=3)}
    return Row(values={"sampler": label}, label=label, n_seeds=3, n_failed=0, cells=cells)


def test_a_best_value_several_rows_share_is_not_marked_but_a_unique_one_is():
    metrics = [MetricInfo("nfe", "NFE", "", False, "cost"), MetricInfo("fd", "FD", "", False, "quality")]
    rows = [_row("euler", 50, 30.0), _row("heun", 50, 29.0), _row("dopri5", 174, 31.0)]
    _compare(rows, metrics, {id(r): rows[0] for r in rows})
    assert [r.cells["nfe"].best for r in rows] == [False, False, False]   # 50 is shared by euler and heun
    assert [r.cells["fd"].best for r in rows] == [False, True, False]      # 29 is heun's alone
