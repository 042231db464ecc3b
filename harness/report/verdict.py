"""The report's answer, stated first: is the study complete, which variant leads on the objective, by how much,
whether that lead survives the seed noise (the table's Holm-adjusted Welch tests and the pairwise ones), whether
the study's other quality metrics pick the same variant by their means, and what the leader costs against the
baseline. Every figure it quotes is one of the tables' (summary.json: `verdict`)."""

from __future__ import annotations

import math
from typing import Any

from .stats import ALPHA
from .tables import LOSS_METRICS, Cell, MetricInfo, Row, Table, fmt, lower_title

__all__ = ["verdict"]


def _counts(provs: list[dict[str, Any]]) -> tuple[int, int, str]:
    """(completed trials, all trials, 'k interrupted, m never ran' for the rest) over the studies."""
    status: dict[str, int] = {}
    for p in provs:
        for k, v in p["trials"].items():
            status[k] = status.get(k, 0) + v
    rest = ", ".join(f"{v} {'never ran' if k == 'missing' else k}" for k, v in sorted(status.items())
                     if k != "completed")
    return status.get("completed", 0), sum(status.values()), rest


def _value(c: Cell, d: int) -> str:
    """'461 ± 9 (n = 3)', '209 (n = 1)'."""
    return fmt(c.mean, d) + (f" ± {fmt(c.std, d)}" if math.isfinite(c.std) else "") + f" (n = {c.n})"


def _test(c: Cell) -> str:
    """How the Δ of a cell against its baseline stands against the seed noise."""
    if c.noise is None:
        return "untested (fewer than two seeds on a side)"
    where = "within" if c.noise else "beyond"
    return f"{where} the seed noise (Welch's t-test, Holm-adjusted p = {c.p_holm:.2g})"


def _status(table: Table, provs: list[dict[str, Any]]) -> tuple[bool, list[str]]:
    done, total, rest = _counts(provs)
    seeds = sorted({r.n_seeds for r in table.rows})
    per = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    lines = []
    partial = done < total
    if partial:
        empty = [r.label for r in table.rows if r.n_seeds == 0]
        lines.append(f"Partial study: {done} of {total} trials finished ({rest}); {per} finished seed"
                     f"{'s' if seeds[-1] != 1 else ''} per variant"
                     + (f"; no finished trial for {', '.join(empty)}" if empty else "") + ".")
    else:
        lines.append(f"Complete: all {total} trials finished, {per} seed{'s' if seeds[-1] != 1 else ''} per "
                     f"variant ({len(table.rows)} variant{'s' if len(table.rows) != 1 else ''}).")
    if max(seeds) < 2 and len(table.rows) > 1:
        lines.append("With one seed per variant no difference below is tested: the figures are single runs, and "
                     "this report names no winner.")
    bases = [r for r in table.rows if r.baseline]
    if len(table.rows) > 1 and bases and all(r.n_seeds == 0 for r in bases):
        lines.append(f"The baseline {' / '.join(r.label for r in bases)} has no finished trial, so no variant is "
                     "compared with it.")
    return partial, lines


def _leader(table: Table, m: MetricInfo) -> tuple[Row, Row] | None:
    """(the row with the best mean of m, its baseline row); None when fewer than two rows have a value."""
    rows = [r for r in table.rows if math.isfinite(r.cells[m.name].mean)]
    if len(rows) < 2:
        return None
    lead = (max if m.higher_is_better else min)(rows, key=lambda r: r.cells[m.name].mean)
    base = next((r for r in table.rows if r.label == lead.compared_with), lead)
    return lead, base


def _lead_line(table: Table, m: MetricInfo, lead: Row, base: Row) -> str:
    d = table.decimals[m.name]
    c, b = lead.cells[m.name], base.cells[m.name]
    best = "Highest" if m.higher_is_better else "Lowest"
    text = f"{best} {'mean ' if c.n >= 2 else ''}{m.title} ({m.arrow}){'' if c.n >= 2 else ' of a single run'}: " \
           f"{lead.label} at {_value(c, d)}"
    if lead is base:
        return text + ", the baseline itself."
    if not math.isfinite(b.mean):
        return text + f"; its baseline {base.label} has no value to compare with."
    rel = f" ({fmt(100 * c.rel, 1, sign=True)}%)" if math.isfinite(c.rel) else ""
    return text + f", against the baseline {base.label} at {_value(b, d)}: {fmt(c.delta, d, sign=True)}{rel}, " \
                  f"{_test(c)}."


def _pairs_line(pairwise: dict[str, Any], lead: Row) -> str | None:
    """Whom the leader beats beyond the noise over all pairs (it has the best mean, so any such pair is its win)."""
    mine = [p for p in pairwise["pairs"] if lead.label in (p["a"], p["b"])]
    if not mine:
        return None
    def other(p: dict[str, Any]) -> str:
        return p["b"] if p["a"] == lead.label else p["a"]

    beats = [other(p) for p in mine if p["p_holm"] < ALPHA]
    tied = [other(p) for p in mine if p["p_holm"] >= ALPHA]
    n = len(pairwise["pairs"])
    if not beats:
        return (f"Over all {n} pairs of variants (Holm-adjusted), {lead.label} cannot be told apart from any of the "
                f"other {len(tied)}.")
    text = f"Over all {n} pairs of variants (Holm-adjusted), {lead.label} beats {len(beats)} beyond the seed noise " \
           f"({'; '.join(beats)})"
    return text + (f"; the other {len(tied)} cannot be told apart from it ({'; '.join(tied)})." if tied else ".")


def _baseline_line(table: Table, m: MetricInfo) -> str | None:
    """Which variants differ from their baseline beyond the noise, after the table's Holm correction."""
    tested = [r for r in table.rows if not r.baseline and r.cells[m.name].noise is not None]
    if not tested:
        return None
    better = [r.label for r in tested if r.cells[m.name].noise is False and r.cells[m.name].better]
    worse = [r.label for r in tested if r.cells[m.name].noise is False and r.cells[m.name].better is False]
    same = len(tested) - len(better) - len(worse)
    tests = f"{len(tested)} test" + ("s" if len(tested) != 1 else "")
    return (f"Against the baseline ({tests}, Holm-adjusted): better beyond the seed noise: "
            f"{'; '.join(better) or 'none'}; worse: {'; '.join(worse) or 'none'}; within the noise: {same}.")


def _other_quality_line(table: Table, m: MetricInfo, lead: Row, pairs: dict[str, Any] | None) -> str | None:
    """Whether another quality metric's best mean is the objective leader's too, and whose it is if not, with the
    pairwise test of the two where there is one (one seed a variant: its value, not a mean, and no test)."""
    found = _leader(table, m)
    if found is None or not math.isfinite(lead.cells[m.name].mean):
        return None
    top, d = found[0], table.decimals[m.name]
    best = "highest" if m.higher_is_better else "lowest"
    single = all(r.cells[m.name].n <= 1 for r in table.rows if math.isfinite(r.cells[m.name].mean))
    mean, means = ("value", "values") if single else ("mean", "means")
    if top is lead or top.cells[m.name].mean == lead.cells[m.name].mean:
        return f"On {m.title} ({m.arrow}) {lead.label} has the {best} {mean} too: {_value(lead.cells[m.name], d)}."
    pair = next((p for p in (pairs or {}).get("pairs", []) if {p["a"], p["b"]} == {top.label, lead.label}), None)
    # else the table's test of one against the other as its baseline (two variants have no pairwise section)
    cell = top.cells[m.name] if top.compared_with == lead.label else \
        lead.cells[m.name] if lead.compared_with == top.label else None
    if pair is not None:
        test = (pair["p_holm"], f"over its {len(pairs['pairs'])} pairs")
    elif cell is not None and cell.noise is not None:
        test = (cell.p_holm, "in the table's test against the baseline")
    else:
        test = None
    if single:
        why = "one seed a variant: no difference is tested"
    elif test is None:
        why = "the tables say which differences are beyond the seed noise"
    else:
        why = (f"{top.label} vs {lead.label} on {m.title}: {'beyond' if test[0] < ALPHA else 'within'} the seed "
               f"noise, Holm-adjusted p = {test[0]:.2g} {test[1]}")
    return (f"On {m.title} ({m.arrow}) the {best} {mean} is {top.label}'s, {_value(top.cells[m.name], d)}, not "
            f"{lead.label}'s ({_value(lead.cells[m.name], d)}): the quality metrics do not pick the same variant by "
            f"their {means} ({why}).")


def _cost_line(table: Table, lead: Row, base: Row, shared: bool) -> str | None:
    """The leader's cost figures against its baseline, the columns that differ between variants."""
    if lead is base:
        return None
    parts, equal = [], []
    for m in table.metrics:
        c = lead.cells[m.name]
        values = {r.cells[m.name].mean for r in table.rows if math.isfinite(r.cells[m.name].mean)}
        if m.kind != "cost" or len(values) < 2 or not math.isfinite(c.rel):
            continue
        title = lower_title(m.title)
        if c.delta == 0:
            equal.append(title)
        else:
            parts.append(("~ " if c.noise else "") + f"{title} {fmt(100 * c.rel, 1, sign=True)}%")
    if equal:
        parts.insert(0, f"the same {' and '.join(equal)}")
    if not parts:
        return None
    untested = lead.n_seeds < 2 or base.n_seeds < 2
    return (f"Its cost against the baseline: {', '.join(parts)}"
            + (" (single runs, untested)" if untested else " (~: within the seed noise)"
               if any(x.startswith("~") for x in parts) else "")
            + ("; measured with several trials sharing one device (see Notes)" if shared else "") + ".")


def verdict(tables: list[Table], objective: str, provs: list[dict[str, Any]],
            pairwise: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """{'partial': bool, 'lines': [sentence, ...]}: the answer a reader looks for first. pairwise: metric name ->
    its pairwise comparisons (render._pairwise), where there are some."""
    if not tables or not tables[0].rows:
        return {"partial": True, "lines": ["No trial finished: there is nothing to report yet."]}
    table = tables[0]
    partial, lines = _status(table, provs)
    m = next((m for m in table.metrics if m.name == objective), None) or \
        next((m for m in table.metrics if m.kind == "quality"), None)
    found = _leader(table, m) if m else None
    if m is None or found is None:
        lines.append("Fewer than two variants have a result: nothing is compared.")
        return {"partial": partial, "lines": lines}
    lead, base = found
    lines.append(_lead_line(table, m, lead, base))
    pairwise = pairwise or {}
    if pairwise.get(m.name) and lead.cells[m.name].n >= 2:
        lines += [x for x in (_pairs_line(pairwise[m.name], lead),) if x]
    lines += [x for x in (_baseline_line(table, m),) if x]
    others = [o for o in table.metrics if o.kind == "quality" and o is not m and o.name not in LOSS_METRICS]
    lines += [x for x in (_other_quality_line(table, o, lead, pairwise.get(o.name)) for o in others) if x]
    lines += [x for x in (_cost_line(table, lead, base, any(p.get("sharing") for p in provs)),) if x]
    return {"partial": partial, "lines": lines}
