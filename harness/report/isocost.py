"""Quality at equal cost: each seed's quality-vs-compute curve read at a common budget, then mean ± spread.

Interpolation is linear in log10(compute) between the two evaluations that bracket the budget (training curves are
close to straight on a log-compute axis); a budget outside a seed's evaluated range is not extrapolated: that
seed has no value there, and a variant's cell is "n/a" unless every one of its seeds covers the budget.
Spread is the sample std over seeds (ddof=1), NaN for one seed. A variant wins at a budget when its mean beats
every other variant's by more than the larger of the two spreads (with one seed there is no spread: no winner).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Cell", "interpolate", "at_budget", "common_range", "budgets", "winner", "crossing_sentence"]

Curve = Sequence[tuple[float, float]]          # (compute, quality) points of one seed, any order


@dataclass(frozen=True)
class Cell:
    """A variant's quality at one budget: mean and spread over its seeds (None: n/a)."""

    mean: float | None
    spread: float
    n: int


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


def winner(cells: dict[str, Cell], *, higher_is_better: bool) -> str | None:
    """The variant whose mean beats every other by more than the larger spread of the pair; else None."""
    ok = {k: c for k, c in cells.items() if c.mean is not None}
    if len(ok) < 2:
        return None
    sign = 1.0 if higher_is_better else -1.0
    best = max(ok, key=lambda k: sign * ok[k].mean)
    for k, c in ok.items():
        if k == best:
            continue
        if not (math.isfinite(ok[best].spread) and math.isfinite(c.spread)):
            return None                                      # one seed: no spread to beat
        if sign * (ok[best].mean - c.mean) <= max(ok[best].spread, c.spread):
            return None
    return best


def crossing_sentence(winners: list[tuple[str, str | None]], what: str) -> str:
    """One sentence: who wins at which budget (label, winner) and whether the curves cross."""
    decided = [(b, w) for b, w in winners if w is not None]
    if not decided:
        return (f"At equal {what}, no model is ahead by more than the seed spread at any compared budget "
                "(or there is one seed).")
    parts = "; ".join(f"{w} at {b}" for b, w in decided)
    names = [w for _, w in decided]
    crossed = any(a != b for a, b in zip(names, names[1:]))
    tail = ("the curves cross: the leader changes between budgets" if crossed else
            "the curves do not cross where the difference exceeds the seed spread")
    undecided = len(winners) - len(decided)
    more = f" ({undecided} budget(s) within the seed spread)" if undecided else ""
    return f"At equal {what}, ahead by more than the seed spread: {parts}{more}; {tail}."
