"""Quality at equal cost: each seed's quality-vs-compute curve read at a common budget, then mean ± spread.

Interpolation is linear in log10(compute) between the two evaluations that bracket the budget (training curves are
close to straight on a log-compute axis); a budget outside a seed's evaluated range is not extrapolated: that
seed has no value there, and a variant's cell is "n/a" unless every one of its seeds covers the budget.
Spread is the sample std over seeds (ddof=1), NaN for one seed. A model wins at a budget when its mean is the best
and Welch's t-test separates it from every other model there, the p-values of all budgets' comparisons adjusted
together by Holm's method (report/stats.py); with one seed nothing can be tested: no winner.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .stats import ALPHA, welch_holm

__all__ = ["Cell", "at_budget", "budgets", "common_range", "crossing_sentence", "interpolate", "winners"]

Curve = Sequence[tuple[float, float]]          # (compute, quality) points of one seed, any order


@dataclass(frozen=True)
class Cell:
    """A variant's quality at one budget: mean and spread over its seeds (None: n/a)."""

    mean: float | None
    spread: float
    n: int

    @property
    def std(self) -> float:
        """The spread, under the name stats.welch_p reads."""
        return self.spread


def interpolate(curve: Curve, x: float) -> float | None:
    """Quality at compute x, linear in log10(compute) between bracketing points; None outside the curve's range."""
    pts = sorted((cx, cy) for cx, cy in curve if cx > 0 and math.isfinite(cx) and math.isfinite(cy))
    if not pts or x <= 0 or x < pts[0][0] or x > pts[-1][0]:
        return None
    xs, ys = np.log10([p[0] for p in pts]), np.array([p[1] for p in pts])
    return float(np.interp(math.log10(x), xs, ys))


def at_budget(seeds: Sequence[Curve], x: float) -> Cell:
    """Mean ± sample std over seeds of their quality at compute x; mean None unless every seed covers x."""
    vals = [interpolate(c, x) for c in seeds]
    if not vals or any(v is None for v in vals):
        return Cell(None, float("nan"), sum(v is not None for v in vals))
    return Cell(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else float("nan"), len(vals))


def common_range(curves: dict[str, Sequence[Curve]]) -> tuple[float, float] | None:
    """(lo, hi): the compute range every seed of every variant covers; None when they do not overlap."""
    ranges = [(min(x for x, _ in c), max(x for x, _ in c)) for seeds in curves.values() for c in seeds if c]
    if not ranges:
        return None
    lo, hi = max(r[0] for r in ranges), min(r[1] for r in ranges)
    return (lo, hi) if 0 < lo <= hi else None


def budgets(lo: float, hi: float, n: int = 4) -> list[float]:
    """n budgets log-spaced over [lo, hi] (hi last: the largest budget every trial reached)."""
    if n < 2 or lo == hi:
        return [hi]
    return [float(v) for v in np.geomspace(lo, hi, n)]


def winners(per_budget: list[dict[str, Cell]], *, higher_is_better: bool) -> list[str | None]:
    """Per budget, the model with the best mean when Welch's t-test puts it ahead of every other model that reaches
    the budget, the p-values of every budget's comparisons Holm-adjusted together; else None (and None wherever a
    comparison cannot be tested: fewer than two seeds on a side, or fewer than two models reach the budget)."""
    sign = 1.0 if higher_is_better else -1.0
    pairs: list[tuple[int, Cell, Cell]] = []                # (budget index, its best model, another model)
    best: list[str | None] = []
    for i, cells in enumerate(per_budget):
        ok = {k: c for k, c in cells.items() if c.mean is not None}
        lead = max(ok, key=lambda k: sign * ok[k].mean) if len(ok) >= 2 else None
        best.append(lead)
        pairs += [(i, ok[lead], c) for k, c in ok.items() if lead is not None and k != lead]
    tests = welch_holm([(a, b) for _, a, b in pairs])
    lost = {i for (i, _, _), (_, q) in zip(pairs, tests) if q is None or q >= ALPHA}
    return [None if b is None or i in lost else b for i, b in enumerate(best)]


def crossing_sentence(winners: list[tuple[str, str | None]], what: str) -> str:
    """One sentence: who wins at which budget (label, winner) and whether the curves cross."""
    decided = [(b, w) for b, w in winners if w is not None]
    if not decided:
        return (f"At equal {what}, no model is ahead beyond the seed noise at any compared budget "
                "(or there is one seed).")
    parts = "; ".join(f"{w} at {b}" for b, w in decided)
    names = [w for _, w in decided]
    crossed = any(a != b for a, b in itertools.pairwise(names))
    tail = ("the curves cross: the leader changes between budgets" if crossed else
            "the curves do not cross where the difference exceeds the seed noise")
    undecided = len(winners) - len(decided)
    more = f" ({undecided} budget(s) within the seed noise)" if undecided else ""
    return (f"At equal {what}, ahead beyond the seed noise (Welch's t-test, Holm over the comparisons at all "
            f"budgets): {parts}{more}; {tail}.")
