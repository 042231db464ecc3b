"""Comparison tables: mean ± std over seeds per variant, delta vs the baseline, better-direction arrows.

A variant's cell holds the mean and sample standard deviation (ddof=1) over its completed seeds. The delta is
mean(variant) - mean(baseline), where a row's baseline is the row of its arm that matches the study's `baseline`
(the one sharing the most other settings: the same budget, patch size, mixer ...; see _pick_baselines), tested
with Welch's t-test (report/stats.py); it is marked '~' (within seed noise) when its p, adjusted by Holm's method
over the table's comparisons of that metric, is >= 0.05. The test, and the 'best' of a column, need at least two
seeds on both sides / every row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .data import StudyData, short_key, variant_label
from .stats import ALPHA, welch_holm

__all__ = ["Cell", "MetricInfo", "Row", "Table", "build_tables", "failed_trials", "fmt", "lower_title",
           "metric_infos", "objective_keys"]

#: cost metrics the runner logs: (title, unit, higher is better)
COST = {
    "params_m": ("Params", "M", False),
    "gflops": ("GFLOPs", "per image", False),
    "train_images_per_s": ("Train throughput", "img/s", True),
    "sample_ms_per_image": ("Sampling latency", "ms/img", False),
    "nfe": ("NFE", "evals", False),
    "peak_memory_gb": ("Peak memory", "GB", False),
    "train_seconds_timed": ("Train time", "s", False),     # the timed training steps (plugins.measure.Timer)
    "train_seconds": ("Train wall time", "s", False),     # only when a store has no timed seconds (older runs)
}
#: a cost shown only when the first is absent: the timed steps leave out warm-up (compilation, kernel autotuning),
#: checkpoints and in-training evaluations, which the wall clock charges to whichever trial met them first
_FALLBACK = {"train_seconds": "train_seconds_timed"}
#: quality metrics when the metric registry is unavailable: (title, higher is better)
KNOWN_QUALITY = {"fd-effnet": ("FD-EffNetLite0", False), "fid": ("FID", False), "kid": ("KID", False),
                 "frame-fd": ("Frame FD", False), "temporal-fd": ("Temporal FD", False),
                 "cond-accuracy": ("Cond. accuracy", True),
                 "final_train_loss": ("Final train loss", False)}
#: a variant's own training loss: comparable between variants only when they train the same objective
LOSS_METRICS = ("final_train_loss",)


def objective_keys(values: dict[str, list[Any]]) -> list[str]:
    """The axis keys (key -> the values the variants take) that change the training objective itself: the
    interpolant's path, prediction target, loss weighting. Variants that differ in one minimise different losses,
    so their train losses are not compared (a noise-prediction loss is not a worse velocity loss)."""
    return [k for k, vals in values.items() if (k == "interpolant" or k.startswith("interpolant."))
            and len({repr(v) for v in vals if v is not None}) > 1]


@dataclass(frozen=True)
class MetricInfo:
    name: str
    title: str
    unit: str
    higher_is_better: bool
    kind: str  # 'quality' | 'cost'
    description: str = ""
    bounds: tuple[float | None, float | None] = (None, None)  # the values the metric can take (from its entry)

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    @property
    def header(self) -> str:
        unit = f" ({self.unit})" if self.unit else ""
        return f"{self.title}{unit} {self.arrow}"


@dataclass
class Cell:
    mean: float
    std: float          # NaN with one seed
    n: int
    delta: float = math.nan
    rel: float = math.nan          # delta / |baseline mean|
    noise: bool | None = None      # True: within seed noise (Holm-adjusted Welch p >= 0.05); None: n < 2
    p: float = math.nan            # Welch's t-test p-value against the baseline
    p_holm: float = math.nan       # p adjusted by Holm's method over the table's comparisons of this metric
    best: bool = False
    better: bool | None = None     # the delta's sign in the metric's better direction


@dataclass
class Row:
    values: dict[str, Any]         # axis key (or 'study') -> value
    label: str                     # the variant, prefixed 'study: ' when several studies are compared
    n_seeds: int
    n_failed: int
    n_resumed: int = 0             # completed seeds whose last segment resumed from a checkpoint
    cells: dict[str, Cell] = field(default_factory=dict)
    baseline: bool = False
    compared_with: str = ""        # the label of the row its deltas are against (itself when it is a baseline)


@dataclass
class Table:
    title: str
    keys: list[str]
    metrics: list[MetricInfo]
    rows: list[Row]
    baseline_label: str
    decimals: dict[str, int] = field(default_factory=dict)
    uncompared: dict[str, list[str]] = field(default_factory=dict)  # metric -> the objective keys that differ


def _registry_metrics() -> dict[str, Any]:
    try:
        from plugins.registry import load_registries

        return {r.entry.name: r.entry for r in load_registries().metrics}
    except Exception:  # noqa: BLE001 - the arrows fall back to the known table when plugins cannot load
        return {}


def metric_infos(names: list[str]) -> list[MetricInfo]:
    """Metric names -> titles, units and directions (eval metrics from the registry's higher_is_better)."""
    registry = _registry_metrics() if any(n not in COST for n in names) else {}
    out = []
    for n in names:
        if n in COST:
            title, unit, hib = COST[n]
            out.append(MetricInfo(n, title, unit, hib, "cost"))
        elif n in registry:
            e = registry[n]
            out.append(MetricInfo(n, e.label or KNOWN_QUALITY.get(n, (n,))[0], "", bool(e.higher_is_better),
                                  "quality", e.description, tuple(getattr(e, "bounds", (None, None)))))
        else:
            title, hib = KNOWN_QUALITY.get(n, (n, False))
            out.append(MetricInfo(n, title, "", hib, "quality"))
    return out


def lower_title(title: str) -> str:
    """'Sampling latency' -> 'sampling latency' inside a sentence; an acronym ('NFE', 'GFLOPs') stays as it is."""
    return title[:1].lower() + title[1:] if title[1:2].islower() else title


def _decimals(values: list[float], spreads: Sequence[float] = ()) -> int:
    """About three significant digits for the column's typical magnitude; one more where a seed spread (a quality
    column's std) would otherwise print as 0 ('87 ± 0' reads as no spread; '86.7 ± 0.4' is what was measured)."""
    finite = sorted(abs(v) for v in values if math.isfinite(v) and v != 0)
    if not finite:
        return 2
    mid = finite[len(finite) // 2]
    d = max(0, min(6, 2 - math.floor(math.log10(mid))))
    if any(math.isfinite(s) and 0 < s < 0.5 * 10 ** -d for s in spreads):
        d = min(6, d + 1)
    return d


def fmt(x: float, d: int, *, sign: bool = False) -> str:
    """Stable float text; '−' (U+2212) for negatives, '+' when sign=True, '–' for missing."""
    if x is None or not math.isfinite(x):
        return "–"
    s = f"{abs(x):.{d}f}"
    if float(s) == 0:
        return f"{0:.{d}f}"
    return ("−" if x < 0 else ("+" if sign else "")) + s


def _cell(vals: list[float]) -> Cell:
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    n = len(vals)
    if n == 0:
        return Cell(math.nan, math.nan, 0)
    mean = math.fsum(vals) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else math.nan
    return Cell(mean, std, n)


def _rows(frame: pd.DataFrame, keys: list[str], metrics: list[MetricInfo], order: dict[str, list[Any]],
          sort_keys: list[str]) -> list[Row]:
    rows: dict[tuple, Row] = {}
    for _, t in frame.iterrows():
        vals = {k: t["study"] if k == "study" else t.get(f"axis.{k}") for k in keys}
        vals = {k: v if _isset(v) else None for k, v in vals.items()}  # None: the row's axes block does not set k
        ident = tuple(repr(vals[k]) for k in keys)
        row = rows.get(ident)
        if row is None:
            variant = variant_label({k: v for k, v in vals.items() if k != "study" and v is not None})
            row = rows[ident] = Row(vals, f"{vals['study']}: {variant}" if "study" in vals else variant, 0, 0)
            row.cells = {m.name: [] for m in metrics}  # type: ignore[assignment]
        if t["status"] != "completed":
            row.n_failed += 1
            continue
        row.n_seeds += 1
        resumed = t.get("resumed_from_step")
        row.n_resumed += bool(_isset(resumed) and float(resumed) > 0)
        for m in metrics:
            v = t.get(f"metrics.{m.name}")
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                row.cells[m.name].append(float(v))  # type: ignore[union-attr]
    for row in rows.values():
        row.cells = {name: _cell(vals) for name, vals in row.cells.items()}  # type: ignore[arg-type]

    def key(r: Row) -> tuple:
        return tuple((2, 0, "") if r.values[k] is None else (0, order[k].index(r.values[k]), "")
                     if r.values[k] in order.get(k, []) else (1, 0, str(r.values[k])) for k in sort_keys)

    return sorted(rows.values(), key=key)


def _matches(row: Row, baseline: dict[str, Any]) -> bool:
    present = {k: v for k, v in row.values.items() if v is not None}
    return all(present.get(k) == v for k, v in baseline.items() if k in present) and \
        any(k in present for k in baseline)


def _pick_baselines(rows: list[Row], baseline: dict[str, Any] | None, *, per_arm: bool) -> dict[int, Row]:
    """id(row) -> the row its deltas are against. The rows that match the study's baseline are the candidates
    (the first row when none does). With `per_arm`, each row takes the candidate that shares the most of its
    other key values ('not set' included): its arm of the study (the same budget, patch size, mixer ...), the
    first in table order on a tie, and every candidate is a baseline of its own; without it, the first candidate
    serves every row (several studies side by side: the first study's baseline)."""
    cands = [r for r in rows if baseline and _matches(r, baseline)] or [rows[0]]
    if not per_arm:
        return {id(r): cands[0] for r in rows}
    out = {}
    for r in rows:
        others = [k for k in r.values if k not in (baseline or {})]
        out[id(r)] = r if any(r is c for c in cands) else \
            max(cands, key=lambda c: sum(c.values[k] == r.values[k] for k in others))  # max keeps the first of ties
    return out


def _compare(rows: list[Row], metrics: list[MetricInfo], bases: dict[int, Row]) -> dict[str, list[str]]:
    """Deltas against each row's baseline with Welch's test; 'best' (the column's extreme mean, when one row alone
    holds it) only on a row of >= 2 seeds. A train loss is compared only between rows of one training objective, and has no 'best' when the
    rows' objectives differ (returned: metric -> the keys that make them differ)."""
    for r in rows:
        r.baseline = bases[id(r)] is r
        r.compared_with = bases[id(r)].label
    differ = objective_keys({k: [r.values[k] for r in rows] for k in (rows[0].values if rows else {})})
    uncompared = {m.name: differ for m in metrics if m.name in LOSS_METRICS and differ}
    for m in metrics:
        finite = [r.cells[m.name].mean for r in rows if math.isfinite(r.cells[m.name].mean)]
        best = (max if m.higher_is_better else min)(finite) if len(set(finite)) > 1 else None
        if finite.count(best) > 1:  # a best several rows share (NFE 50 in 11 of 12 rows) singles nothing out
            best = None
        for r in rows:
            r.cells[m.name].best = best is not None and r.cells[m.name].mean == best and r.cells[m.name].n >= 2 \
                and m.name not in uncompared
        # the table makes one comparison of this metric per compared row: a difference counts only when it survives
        # Holm's correction over all of them
        compared = [r for r in rows if not r.baseline and all(
            r.values[k] == bases[id(r)].values[k] for k in uncompared.get(m.name, []))]
        tests = welch_holm([(r.cells[m.name], bases[id(r)].cells[m.name]) for r in compared])
        for r, (p, q) in zip(compared, tests):
            c, b = r.cells[m.name], bases[id(r)].cells[m.name]
            if not (math.isfinite(c.mean) and math.isfinite(b.mean)):
                continue
            c.delta = c.mean - b.mean
            c.rel = c.delta / abs(b.mean) if b.mean != 0 else math.nan
            c.better = None if c.delta == 0 else ((c.delta > 0) == m.higher_is_better)
            if p is not None:
                c.p, c.p_holm, c.noise = p, q, q >= ALPHA
    return uncompared


def _baseline_label(rows: list[Row], baseline: dict[str, Any] | None) -> str:
    """The caption's baseline: the row's label when one row serves all, else the rule and the baseline rows."""
    bases = [r.label for r in rows if r.baseline]
    if len(bases) == 1:
        return bases[0]
    spec = variant_label(baseline or {})
    return f"{spec} of each row's arm (the {spec} row sharing the most other settings with it, marked baseline)"


def _metric_names(studies: list[StudyData], frame: pd.DataFrame) -> list[str]:
    present = {c[8:] for c in frame.columns if c.startswith("metrics.") and frame[c].notna().any()}
    names = []
    for s in studies:
        for m in [s.objective, *s.eval_metrics]:
            if m in present and m not in names and m not in COST:
                names.append(m)
    names += [m for m in sorted(present) if m in KNOWN_QUALITY and m not in names]
    names += [m for m in COST if m in present and m not in names and _FALLBACK.get(m) not in present]
    return names


def build_tables(studies: list[StudyData]) -> list[Table]:
    """One table per study over all its axes blocks (columns: the union of their keys), or one side-by-side
    table over several studies."""
    frame = pd.concat([s.trials for s in studies], ignore_index=True) if studies else pd.DataFrame()
    metrics = metric_infos(_metric_names(studies, frame))
    order = {"study": [s.name for s in studies]}
    for s in studies:
        for k, vals in s.axis_values.items():
            order.setdefault(k, [])
            order[k] += [v for v in vals if v not in order[k]]
    tables = []
    if len(studies) > 1:
        keys = ["study"] + list(dict.fromkeys(k for s in studies for b in s.blocks for k in b))
        groups = [("Side by side: " + " vs ".join(order["study"]), keys, frame, keys[1:] + ["study"])]
    else:  # one table over every axes block: the union of their keys, None where a block does not set one
        s = studies[0]
        blocks = [list(b) for b in dict.fromkeys(tuple(b) for b in s.blocks or [[]])]
        keys = list(dict.fromkeys(k for b in blocks for k in b))
        sub = frame[frame.apply(lambda t: any(_in_block(t, b, s.axis_values, s.search) for b in blocks), axis=1)] \
            if len(frame) else frame
        title = "Axis: " + " × ".join(short_key(k) for k in keys) if keys else "Base configuration"
        if len(blocks) > 1:  # blocks with different keys; several blocks with the same keys read as one
            title += f" ({len(s.blocks)} axes blocks)"
        groups = [(title, keys, sub, keys)]
    for title, keys, sub, sort_keys in groups:
        rows = _rows(sub, keys, metrics, order, sort_keys)
        if not rows:
            continue
        uncompared = _compare(rows, metrics, _pick_baselines(rows, studies[0].baseline, per_arm=len(studies) == 1))
        if studies[0].search and studies[0].objective in {m.name for m in metrics}:
            om = next(m for m in metrics if m.name == studies[0].objective)
            sign = -1 if om.higher_is_better else 1
            rows.sort(key=lambda r: (not math.isfinite(r.cells[om.name].mean), sign * r.cells[om.name].mean
                                     if math.isfinite(r.cells[om.name].mean) else 0))
        dec = {m.name: _decimals([r.cells[m.name].mean for r in rows],
                                 [r.cells[m.name].std for r in rows] if m.kind == "quality" else ()) for m in metrics}
        tables.append(Table(title, keys, metrics, rows, _baseline_label(rows, studies[0].baseline), dec, uncompared))
    return tables


def _in_block(t: pd.Series, block: list[str], values: dict[str, list[Any]], search: bool) -> bool:
    present = {c[5:] for c in t.index if c.startswith("axis.") and _isset(t[c])}
    if present != set(block):
        return False
    return search or all(t[f"axis.{k}"] in values.get(k, [t[f"axis.{k}"]]) for k in block)


def _isset(v: Any) -> bool:
    return not (v is None or (isinstance(v, float) and math.isnan(v)))


def failed_trials(studies: list[StudyData]) -> list[dict[str, Any]]:
    """Every trial that did not complete, with its reason, in table order."""
    out = []
    for s in studies:
        for _, t in s.trials.iterrows():
            if t["status"] != "completed":
                out.append({"study": s.name, "variant": t["variant"], "seed": t["seed"], "status": t["status"],
                            "reason": t["failure"] or "(no reason recorded)", "run_id": t["run_id"] or ""})
    return out
