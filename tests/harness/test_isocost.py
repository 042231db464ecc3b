"""harness/report/isocost.py against hand-computed values."""

from __future__ import annotations

import math

import pytest

from harness.report.isocost import Cell, at_budget, common_range, crossing_sentence, interpolate, winners


def test_interpolation_is_linear_in_log_compute_by_a_hand_computed_case():
    # points at 10 and 1000 with qualities 40 and 20: log10 goes 1 -> 3, so 100 (log10 = 2) sits half-way -> 30
    assert interpolate([(10, 40.0), (1000, 20.0)], 100) == pytest.approx(30.0)
    # 10**1.5 ~ 31.62 is a quarter of the way -> 40 - 0.25 * 20 = 35
    assert interpolate([(1000, 20.0), (10, 40.0)], 10 ** 1.5) == pytest.approx(35.0)


def test_no_extrapolation_outside_a_seeds_range():
    assert interpolate([(10, 40.0), (1000, 20.0)], 9.99) is None
    assert interpolate([(10, 40.0), (1000, 20.0)], 1001) is None


def test_a_budget_at_a_curves_first_or_last_point_is_that_points_value():
    # budgets() puts the largest budget every seed reached last: exactly some seed's last point
    assert interpolate([(10, 40.0), (1000, 20.0)], 1000) == pytest.approx(20.0)
    assert interpolate([(10, 40.0), (1000, 20.0)], 10) == pytest.approx(40.0)


def test_a_budget_that_only_one_model_reaches_has_no_winner():
    lone = {"zigma": Cell(10.0, 0.1, 3), "dit": Cell(None, float("nan"), 1)}
    assert winners([lone], higher_is_better=False) == [None]


def test_a_budget_is_the_mean_and_sample_std_over_seeds_of_the_interpolated_values():
    # seed a at 100: 30 (half-way in log between 40 and 20); seed b at 100: 36 exactly (a point there)
    cell = at_budget([[(10, 40.0), (1000, 20.0)], [(100, 36.0), (400, 30.0)]], 100)
    assert cell.mean == pytest.approx(33.0) and cell.spread == pytest.approx(math.sqrt(18.0)) and cell.n == 2


def test_a_variant_is_na_when_one_seed_does_not_reach_the_budget():
    cell = at_budget([[(10, 40.0), (1000, 20.0)], [(10, 41.0), (50, 35.0)]], 100)
    assert cell.mean is None and cell.n == 1


def test_the_common_range_is_what_every_seed_of_every_variant_covers():
    assert common_range({"a": [[(10, 1.0), (1000, 0.5)]], "b": [[(20, 1.0), (300, 0.5)], [(5, 1.0), (500, 0.5)]]}) \
        == (20, 300)


def _welch(a: Cell, b: Cell) -> float:
    from scipy import stats
    return float(stats.ttest_ind_from_stats(a.mean, a.spread, a.n, b.mean, b.spread, b.n, equal_var=False).pvalue)


def test_a_winner_is_ahead_of_every_other_model_by_welchs_test():
    lead, close, far = Cell(10.0, 1.0, 3), Cell(11.5, 2.0, 3), Cell(12.5, 1.0, 3)
    assert _welch(lead, far) < 0.05 < _welch(lead, close)                    # the oracle, from scipy directly
    assert winners([{"a": lead, "b": far}], higher_is_better=False) == ["a"]
    assert winners([{"a": lead, "b": close}], higher_is_better=False) == [None]
    assert winners([{"a": lead, "b": far, "c": close}], higher_is_better=False) == [None]   # must beat every model
    assert winners([{"a": Cell(10.0, float("nan"), 1), "b": Cell(20.0, float("nan"), 1)}],
                   higher_is_better=False) == [None]                          # one seed: nothing to test
    assert winners([{"a": lead, "b": Cell(20.0, float("nan"), 1)}], higher_is_better=False) == [None]
    assert winners([{"a": far, "b": lead}], higher_is_better=True) == ["a"]   # higher is better: 12.5 leads


def test_the_comparisons_at_every_budget_are_holm_adjusted_together():
    lead, far = Cell(10.0, 1.0, 3), Cell(12.5, 1.0, 3)
    p = _welch(lead, far)
    assert p < 0.05 < 2 * p              # one comparison alone wins; the same two budgets together do not
    assert winners([{"a": lead, "b": far}, {"a": lead, "b": far}], higher_is_better=False) == [None, None]
    strong = Cell(30.0, 1.0, 3)
    assert 2 * _welch(lead, strong) < 0.05
    assert winners([{"a": lead, "b": strong}, {"a": lead, "b": strong}], higher_is_better=False) == ["a", "a"]


def test_the_sentence_says_the_curves_cross_when_the_leader_changes():
    s = crossing_sentence([("1 GPU-s", "dit"), ("10 GPU-s", None), ("100 GPU-s", "zigma")], "GPU time")
    assert "dit at 1 GPU-s; zigma at 100 GPU-s" in s and "cross: the leader changes" in s
    assert "do not cross" in crossing_sentence([("1", "dit"), ("2", "dit")], "FLOPs")
