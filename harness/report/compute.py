"""Quality vs compute: curves from the `during/*` histories (eval.every) and the iso-cost tables.

Each completed trial with intermediate evaluations gives, per seed, the objective's points against images seen,
GPU-hours (timed training-step seconds / 3600) and training TFLOPs, joined on the training step. Curves: one line
per variant, the mean of the seeds' curves (each read linearly in log-compute on a shared grid inside the range
every seed covers) with the min-max band. Iso-cost tables: each variant's quality at log-spaced budgets of equal
GPU time and equal FLOPs over the table's trials' range (one table a value of a `crossed_keys` key), where at
least two models reach them (harness/report/isocost.py), mean ± std over seeds.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from harness.labels import BUDGET_KEYS, axis_text, missing, model_label, short_key

from . import plots
from .data import StudyData
from .figures import Figure
from .isocost import at_budget, budgets, common_range, crossing_sentence, interpolate, winners
from .tables import MetricInfo, metric_infos

__all__ = ["compute_section"]

#: (during/* history, axis title, scale to the axis unit, table title, budget label unit)
AXES = (("during/images", "training images", 1.0, None, "images"),
        ("during/train_seconds", "GPU-hours (timed training steps)", 1 / 3600, "GPU time", "GPU-h"),
        ("during/train_tflops", "training TFLOPs", 1.0, "FLOPs", "TFLOP"))


def crossed_keys(study: StudyData) -> list[str]:
    """Axis keys (not the baseline's, not labels.BUDGET_KEYS) that the study crosses with its models: every
    completed trial has a value, there are two or more, and each value comes with two or more of the baseline
    keys' values (e.g. backbone.patch_size [2, 1] for each of backbone.name zigma, vim, dit). Iso-cost verdicts
    compare models within each value of these, as a results table compares each row with its own arm's baseline;
    none without a baseline."""
    done = study.trials[study.trials["status"] == "completed"] if len(study.trials) else study.trials
    if not study.baseline or done.empty:
        return []
    ident = [f"axis.{k}" for k in study.baseline]
    if not all(c in done.columns for c in ident):
        return []
    models = done[ident].astype(str).agg("|".join, axis=1)
    keys = []
    for col in done.columns:
        key = col[5:]
        if not col.startswith("axis.") or col in ident or key in BUDGET_KEYS:
            continue
        values = done[col].map(lambda v: None if missing(v) else json.dumps(v, sort_keys=True, default=str))
        if values.isna().any() or values.nunique() < 2:
            continue
        if all(models[values == v].nunique() >= 2 for v in values.unique()):
            keys.append(key)
    return keys


def _curves(study: StudyData, metric: str, multi: bool
            ) -> tuple[dict[str, dict[str, list]], dict[str, str], dict[str, str]]:
    """(axis history -> variant -> seeds' (compute, quality) curves of the completed trials, variant -> its model:
    the variant's label without labels.BUDGET_KEYS, variant -> its comparison group: the values of
    `crossed_keys` ('' without))."""
    out: dict[str, dict[str, list]] = {a[0]: {} for a in AXES}
    models: dict[str, str] = {}
    groups: dict[str, str] = {}
    crossed = crossed_keys(study)
    for _, t in study.trials.iterrows():
        if t["status"] != "completed" or not t["run_id"]:
            continue
        during = study.during.get(t["run_id"], {})
        q = dict(during.get(f"during/{metric}", []))
        label = f"{study.name}: {t['variant']}" if multi else t["variant"]
        models[label] = f"{study.name}: {model_label(t)}" if multi else model_label(t)
        groups[label] = ", ".join(f"{short_key(k)}={axis_text(t[f'axis.{k}'])}" for k in crossed)
        for name, _, scale, _, _ in AXES:
            xs = dict(during.get(name, []))
            pts = [(xs[s] * scale, v) for s, v in sorted(q.items()) if s in xs and math.isfinite(xs[s])]
            if len(pts) >= 2:
                out[name].setdefault(label, []).append(pts)
    return out, models, groups


def _mean_band(seeds: list[list[tuple[float, float]]]) -> tuple[list[float], list[float], list[float], list[float]]:
    """(x, mean, min, max) over seeds on 40 log-spaced points of the range every seed covers."""
    rng = common_range({"v": seeds})
    if rng is None:
        return [], [], [], []
    xs = [float(x) for x in np.geomspace(rng[0], rng[1], 40)] if rng[0] < rng[1] else [rng[0]]
    vals = [[interpolate(c, x) for c in seeds] for x in xs]
    keep = [(x, v) for x, v in zip(xs, vals) if all(u is not None for u in v)]
    return ([x for x, _ in keep], [sum(v) / len(v) for _, v in keep], [min(v) for _, v in keep],
            [max(v) for _, v in keep])


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _table(curves: dict[str, list], models: dict[str, str], info: MetricInfo, what: str, unit: str) -> dict[str, Any]:
    """Cells at 6 budgets log-spaced over every trial's range together; budgets fewer than 2 models reach are
    left out (a cell is n/a where one of the variant's seeds does not reach the budget). The verdict at a budget
    compares models, not arms: of a model's variants (rows differing only in labels.BUDGET_KEYS) the first whose
    seeds all reach the budget stands for it, so two arms of one model never hide each other's lead."""
    xs = [x for seeds in curves.values() for c in seeds for x, _ in c if x > 0]
    points = budgets(min(xs), max(xs), 6) if xs else []
    cells = {v: [at_budget(seeds, b) for b in points] for v, seeds in curves.items()}
    arms: dict[str, list[str]] = {}
    for v in cells:
        arms.setdefault(models.get(v, v), []).append(v)

    def per_model(i: int) -> dict[str, Any]:
        reached = {m: [cells[v][i] for v in vs if cells[v][i].mean is not None] for m, vs in arms.items()}
        return {m: cs[0] for m, cs in reached.items() if cs}

    keep = [i for i in range(len(points)) if len(per_model(i)) >= 2]
    title = f"{info.title} at equal {what}"
    if not keep:
        spans = "; ".join(f"{v} {_fmt(min(x for c in seeds for x, _ in c))}–{_fmt(max(x for c in seeds for x, _ in c))}"
                          for v, seeds in curves.items())
        return {"title": title, "budgets": [], "heads": [], "rows": [], "markdown": "",
                "sentence": f"No {what} budget is reached by two models, so there is no iso-cost comparison "
                            f"(ranges in {unit}: {spans})."}
    heads = [f"{_fmt(points[i])} {unit}" for i in keep]
    rows = [{"variant": v, "n": len(curves[v]), "cells": [
        "n/a" if (c := cs[i]).mean is None else (f"{_fmt(c.mean)} ± {_fmt(c.spread)}" if math.isfinite(c.spread)
                                                 else _fmt(c.mean)) for i in keep]} for v, cs in cells.items()]
    leads = winners([per_model(i) for i in keep], higher_is_better=info.higher_is_better)
    verdicts = list(zip(heads, leads))
    md = "\n".join([f"| variant | n | {' | '.join(heads)} |", "|---|--:|" + "--:|" * len(heads),
                    *(f"| {r['variant']} | {r['n']} | {' | '.join(r['cells'])} |" for r in rows)])
    return {"title": title, "budgets": [points[i] for i in keep], "heads": heads, "rows": rows, "markdown": md,
            "sentence": crossing_sentence(verdicts, what)}


def compute_section(studies: list[StudyData]) -> dict[str, Any] | None:
    """{'figures', 'tables', 'method'} for the studies' during/* curves, or None when no trial has them."""
    multi = len(studies) > 1
    metric = studies[0].objective
    info = metric_infos([metric])[0]
    merged: dict[str, dict[str, list]] = {a[0]: {} for a in AXES}
    models: dict[str, str] = {}
    groups: dict[str, str] = {}
    for s in studies:
        curves, of, grouped = _curves(s, metric, multi)
        models.update(of)
        groups.update(grouped)
        for name, by_variant in curves.items():
            merged[name].update(by_variant)
    if not any(merged.values()):
        return None
    panels = {title: {v: _mean_band(seeds) for v, seeds in merged[name].items()}
              for name, title, _, _, _ in AXES if merged[name]}
    png = plots.compute_plot(panels, info, models)
    fig = Figure(f"compute-{metric}.png".replace("/", "-"), f"{info.title} vs training compute",
                 f"{info.title} from the intermediate evaluations (eval.every, on eval.intermediate_samples samples) "
                 "against images, GPU-hours and TFLOPs; mean over seeds (each seed's curve read linearly in "
                 "log-compute) with the min–max band; one colour per model, one line style per arm of it.", png,
                 "compute")
    tables = []
    for name, _, _, what, unit in AXES:
        if not (what and merged[name]):
            continue
        for group in dict.fromkeys(groups.get(v, "") for v in merged[name]):   # in study order
            part = {v: c for v, c in merged[name].items() if groups.get(v, "") == group}
            table = _table(part, models, info, what, unit)
            table["group"] = group
            if group:
                table["title"] += f", {group}"
            tables.append(table)
    method = ("Iso-cost values: each seed's curve read at the budget by linear interpolation in log10(compute) "
              "between the two evaluations around it, never extrapolated (n/a when a seed's evaluations do not "
              "reach the budget); mean ± sample std over seeds; budgets log-spaced over the range of the table's "
              "trials, shown where at least two models reach them. A model is named ahead only where Welch's t-test separates it "
              "from every other model at that budget, Holm-adjusted over the comparisons at all budgets; the arms of one "
              "model (rows differing only in train.steps, train.budget, eval.every or eval.intermediate_samples) "
              "count once, by the first arm whose seeds all reach the budget. "
              "Values are on the intermediate sample size, so they are not comparable with the final table.")
    crossed = sorted({k for s in studies for k in crossed_keys(s)})
    if crossed:
        method += (f" Models are compared only with models of the same {', '.join(crossed)} (the study runs every "
                   "model at each of its values, as it runs each arm against its own baseline): one table a value.")
    return {"figures": [fig], "tables": tables, "method": method}
