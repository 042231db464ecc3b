"""The report's multiple-comparison control: Holm's method (checked against the procedure worked by hand) on the
table's comparisons with the baseline and on the pairwise comparisons, from per-seed values run through scipy."""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from report_study import write_results_study

from harness.report import build_report
from harness.report.stats import holm

STUDY = """\
name: toy_holm
base:
  dataset: {name: digits}
  backbone: {name: zigma, size: tiny}
  eval: {num_samples: 64, metrics: [fd-effnet]}
axes:
  scan.name: [sweep-1, zigzag-8, hilbert-8, zigzag-2]
seeds: [0, 1, 2]
baseline: {scan.name: sweep-1}
"""
#: per-seed FD: zigzag-8 and hilbert-8 each differ from sweep-1 at p < 0.05 alone, not after Holm over three tests
FD = {"sweep-1": [10.0, 11.0, 12.0], "zigzag-8": [12.6, 13.6, 14.6], "hilbert-8": [12.7, 13.7, 14.7],
      "zigzag-2": [30.0, 31.0, 32.0]}


def test_holm_matches_the_procedure_worked_by_hand():
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06; back in input order
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])       # capped at 1
    assert holm([]) == []


@pytest.fixture(scope="module")
def summary(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("holm")
    folder = write_results_study(root, STUDY, lambda spec: {"fd-effnet": FD[spec.params["scan.name"]][spec.seed]})
    return json.loads((build_report(folder, root / "report") / "summary.json").read_text())


def _welch(a, b) -> float:
    return float(stats.ttest_ind(FD[a], FD[b], equal_var=False).pvalue)


def test_deltas_against_the_baseline_count_only_when_they_survive_holm(summary):
    rows = {r["variant"]: r["metrics"]["fd-effnet"] for r in summary["tables"][0]["rows"]}
    others = ["zigzag-8", "hilbert-8", "zigzag-2"]
    raw = [_welch(v, "sweep-1") for v in others]
    assert raw[0] < 0.05 and raw[1] < 0.05 and raw[2] < 1e-4          # alone, all three would count
    for v, p, q in zip(others, raw, holm(raw)):
        assert rows[v]["p_welch"] == pytest.approx(p, rel=1e-9)
        assert rows[v]["p_holm"] == pytest.approx(q, rel=1e-9)
    assert [rows[v]["within_noise"] for v in others] == [True, True, False]


def test_every_pair_is_tested_with_holm_over_the_six_pairs(summary):
    (fd,) = summary["pairwise"]                 # one quality metric: one set of pairs
    assert fd["name"] == "fd-effnet"
    pairs = fd["pairs"]
    assert len(pairs) == 6
    names = list(FD)
    expected = [(a, b, _welch(a, b)) for i, a in enumerate(names) for b in names[i + 1:]]
    adjusted = holm([p for _, _, p in expected])
    for (a, b, p), q, got in zip(expected, adjusted, pairs):
        assert (got["a"], got["b"]) == (a, b)
        assert got["delta"] == pytest.approx(sum(FD[a]) / 3 - sum(FD[b]) / 3)
        assert got["p"] == pytest.approx(p, rel=1e-9) and got["p_holm"] == pytest.approx(q, rel=1e-9)


def test_welch_p_is_scipys_welch_test_on_the_raw_values_with_unequal_sizes_and_spreads():
    from harness.report.stats import welch_p
    from harness.report.tables import Cell

    a, b = [1.0, 2.0, 4.0, 7.0], [3.0, 3.5, 9.0]
    cell = lambda v: Cell(statistics.fmean(v), statistics.stdev(v), len(v))
    expected = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert expected != pytest.approx(stats.ttest_ind(a, b).pvalue, rel=1e-3)     # Student's would differ here
    assert welch_p(cell(a), cell(b)) == pytest.approx(expected, rel=1e-12)
    assert welch_p(cell(b), cell(a)) == pytest.approx(expected, rel=1e-12)


def test_a_front_with_one_axis_higher_better_and_the_other_lower_better():
    """Throughput (x, higher is better) against FD (y, lower is better), one seed each: B (200, 5) dominates A
    (100, 5), C (150, 3) trades throughput for quality; the front is B and C."""
    from harness.report.stats import pareto_front
    from harness.report.tables import Cell

    pts = [(Cell(x, math.nan, 1), Cell(y, math.nan, 1)) for x, y in [(100.0, 5.0), (200.0, 5.0), (150.0, 3.0)]]
    assert pareto_front(pts, x_higher=True, y_higher=False) == [1, 2]
    assert pareto_front(pts, x_higher=False, y_higher=True) == [0]        # the mirror: A is best on both


def test_a_relative_change_has_the_sign_of_the_difference_when_the_baseline_mean_is_negative(tmp_path):
    """A metric can be negative (a log-likelihood, a third-party score): -5 against a baseline of -10 is +5, a
    relative change of +50 % (delta / |baseline|), not -50 %."""
    values = {"sweep-1": [-11.0, -10.0, -9.0], "zigzag-8": [-6.0, -5.0, -4.0], "hilbert-8": [-10.0, -10.0, -10.0],
              "zigzag-2": [-10.0, -10.0, -10.0]}
    folder = write_results_study(tmp_path, STUDY, lambda spec: {"fd-effnet": values[spec.params["scan.name"]][spec.seed]})
    summary = json.loads((build_report(folder, tmp_path / "report") / "summary.json").read_text())
    row = next(r for r in summary["tables"][0]["rows"] if r["variant"] == "zigzag-8")["metrics"]["fd-effnet"]
    assert row["delta"] == pytest.approx(5.0) and row["rel_delta"] == pytest.approx(0.5)


def test_a_quality_spread_that_would_print_as_zero_gets_one_more_decimal():
    from harness.report.tables import _decimals

    means = [86.7, 99.3, 102.0, 120.0]        # magnitude ~100: three significant digits are 0 decimals
    assert _decimals(means) == 0
    assert _decimals(means, [0.4, 6.1, 1.2, 5.9]) == 1        # 0.4 would print '± 0'
    assert _decimals(means, [0.6, 6.1, 1.2, 5.9]) == 0        # 0.6 prints '± 1'
    assert _decimals(means, [0.0, float("nan"), 3.0]) == 0    # exact zero and one-seed NaN need nothing
    assert _decimals([0.091, 0.097], [0.0004]) == 4           # 3 decimals, and 0.0004 < 0.0005
