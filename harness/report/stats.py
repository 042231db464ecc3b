"""Statistics of the report, done by scipy: Welch's t-test of a variant against the baseline, every pair of
variants with Holm's correction for the number of pairs, and a Pareto front that ignores differences inside the
seed noise."""

from __future__ import annotations

import math
from typing import Any

from scipy import stats

__all__ = ["ALPHA", "TEST", "holm", "means_front", "pareto_front", "welch_holm", "welch_p"]

ALPHA = 0.05
#: how the report names its test
TEST = ("Welch's t-test (scipy.stats.ttest_ind_from_stats, equal_var=False), two-sided, α = 0.05, over the "
        "per-seed values of the two variants")


def welch_p(a: Any, b: Any) -> float | None:
    """Two-sided p-value of Welch's t-test between two cells (mean, std, n); None when either has n < 2."""
    if a.n < 2 or b.n < 2 or not (math.isfinite(a.mean) and math.isfinite(b.mean)):
        return None
    if a.std == 0 and b.std == 0:            # no spread on either side: equal or certainly different
        return 1.0 if a.mean == b.mean else 0.0
    return float(stats.ttest_ind_from_stats(a.mean, a.std, a.n, b.mean, b.std, b.n, equal_var=False).pvalue)


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979, "A simple sequentially rejective multiple test procedure"),
    in the order given: the i-th smallest p times (m - i + 1), kept non-decreasing, capped at 1."""
    out, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(sorted(range(len(ps)), key=lambda j: ps[j])):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


def welch_holm(pairs: list[tuple[Any, Any]]) -> list[tuple[float | None, float | None]]:
    """(Welch's p, its Holm-adjusted p over every testable pair) for each (a, b) pair of cells; (None, None) where
    a side has fewer than two seeds. The one way the report counts a difference of several as beyond the noise.
    A pair with no spread on either side (parameters, NFE: the same on every seed) is a comparison, not a test:
    its p (0 or 1) stands unadjusted and it does not enlarge Holm's family."""
    ps = [welch_p(a, b) for a, b in pairs]
    exact = [p is not None and a.std == 0 and b.std == 0 for p, (a, b) in zip(ps, pairs)]
    adjusted = iter(holm([p for p, e in zip(ps, exact) if p is not None and not e]))
    return [(p, None if p is None else p if e else next(adjusted)) for p, e in zip(ps, exact)]


def pairwise(cells: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Every pair of (label, cell) with two or more seeds each, in the given order: mean(a) - mean(b), Welch's p and
    the Holm-adjusted p over all those pairs."""
    ok = [(label, c) for label, c in cells if c.n >= 2 and math.isfinite(c.mean)]
    pairs = [(a, b) for i, a in enumerate(ok) for b in ok[i + 1:]]
    return [{"a": la, "b": lb, "delta": a.mean - b.mean, "p": p, "p_holm": q}
            for ((la, a), (lb, b)), (p, q) in zip(pairs, welch_holm([(a, b) for (_, a), (_, b) in pairs]))]


def pareto_front(points: list[tuple[Any, Any]], *, x_higher: bool, y_higher: bool) -> list[int]:
    """Indices of the (x cell, y cell) points no other point dominates. q dominates p when q is better beyond
    the noise on one axis and not worse beyond the noise on the other; "beyond the noise": Welch's p, adjusted by
    Holm over every pair of points on both axes, below ALPHA (means alone where a side has n < 2)."""
    keys = [(axis, i, j) for axis in (0, 1) for i in range(len(points)) for j in range(i + 1, len(points))]
    adjusted = {k: q for k, (_, q) in zip(keys, welch_holm([(points[i][a], points[j][a]) for a, i, j in keys]))}

    def better(axis: int, i: int, j: int, higher: bool) -> bool:
        """Point i better than point j on axis, beyond the noise (plain means where it cannot be tested)."""
        a, b = points[i][axis], points[j][axis]
        q = adjusted.get((axis, min(i, j), max(i, j)))
        return (a.mean > b.mean if higher else a.mean < b.mean) and (q is None or q < ALPHA)

    out = []
    for i in range(len(points)):
        dominated = False
        for j in range(len(points)):
            if j == i:
                continue
            bx, by = better(0, j, i, x_higher), better(1, j, i, y_higher)
            if (bx and not better(1, i, j, y_higher)) or (by and not better(0, i, j, x_higher)):
                dominated = True
                break
        if not dominated:
            out.append(i)
    return out


def means_front(points: list[tuple[Any, Any]], *, x_higher: bool, y_higher: bool) -> list[int]:
    """Indices of the (x cell, y cell) points whose means no other point's dominate: at least as good on both axes
    and better on one (the classic front, blind to the seed noise; the line a Pareto plot draws)."""
    def key(i: int) -> tuple[float, float]:
        x, y = points[i][0].mean, points[i][1].mean
        return (x if x_higher else -x, y if y_higher else -y)          # larger is better on both

    keys = [key(i) for i in range(len(points))]
    return [i for i, (x, y) in enumerate(keys)
            if not any(a >= x and b >= y and (a > x or b > y) for a, b in keys)]
