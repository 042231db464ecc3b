"""build_report: studies -> reports/<name>/ with index.html (self-contained), README.md, PNGs, results.csv,
summary.json. Deterministic given the data: only the one 'Generated' line differs between two builds
(SOURCE_DATE_EPOCH fixes it too)."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from .compute import compute_section
from .data import StudyData, axis_text, load_study_data
from .figures import Figure, figures
from .provenance import notes, provenance
from .stats import ALPHA, pairwise
from .tables import LOSS_METRICS, Table, build_tables, failed_trials, fmt
from .verdict import verdict

__all__ = ["GENERATED_PREFIX", "build_report"]

#: the one line of index.html / README.md / summary.json that differs between two builds of the same data
GENERATED_PREFIX = "Generated "
_OURS = re.compile(r"^(curve-|compute-|pareto|bench|samples-|scan-).*\.png$")
_TEMPLATES = Path(__file__).parent / "templates"
#: an axis-key cell of a row whose axes block does not set that key (DiT's scan in a backbone comparison)
UNSET = "—"
#: cost figures repeated in the quality table, without a Δ, when they differ between variants (what a quality
#: figure was bought with: a sampler comparison's NFE)
BESIDE_QUALITY = ("nfe",)
BESIDE_NOTE = {"nfe": "NFE: model evaluations per sample, as the sampler counted them (adaptive samplers such as "
                      "dopri5: the evaluations they took, mean over batches); its Δ is in the cost table."}


def _clean(obj: Any) -> Any:
    """JSON-safe and stable: NaN -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _timestamp() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch else dt.datetime.now(dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _constant(table: Table, name: str) -> bool:
    cells = [r.cells[name] for r in table.rows if r.cells[name].n]
    return len(table.rows) > 1 and bool(cells) and len({c.mean for c in cells}) == 1 and \
        all(not math.isfinite(c.std) or c.std == 0 for c in cells)


def _display(table: Table, kind: str) -> dict[str, Any]:
    """Header and cells (text, css class, sort value) of one table's quality or cost columns.

    Cost columns equal for every variant (params of a scan ablation, say) move to one 'same for all' line,
    and cost deltas are relative only."""
    metrics = [m for m in table.metrics if m.kind == kind]
    beside = [m for m in table.metrics if kind == "quality" and m.name in BESIDE_QUALITY
              and not _constant(table, m.name) and any(r.cells[m.name].n for r in table.rows)]
    same = [m for m in metrics if kind == "cost" and _constant(table, m.name)]
    metrics = [m for m in metrics if m not in same]
    constants = "; ".join(
        f"{m.title} {fmt(next(r.cells[m.name].mean for r in table.rows if r.cells[m.name].n), table.decimals[m.name])}"
        + (f" {m.unit}" if m.unit else "") for m in same)
    if not metrics:
        return {"head": [], "rows": [], "constants": constants} if constants else {}
    keys = list(table.keys)
    deltas = len(table.rows) > 1
    head = [(k, "key") for k in keys] if keys else [("variant", "key")]
    head.append(("n", "num"))
    head += [(m.header.replace(f" {m.arrow}", ""), "num") for m in beside]
    for m in metrics:
        head += [(m.header, "num"), (f"Δ {m.title}" + (" (%)" if kind == "cost" else ""), "num delta")]
    rows = []
    for r in table.rows:
        last = max((i for i, k in enumerate(keys) if r.values[k] is not None), default=len(keys) - 1)
        cells = [(_key_text(r.values[k]) + (" (baseline)" if r.baseline and deltas and i == last else ""), "key",
                  _key_text(r.values[k])) for i, k in enumerate(keys)] if keys else [("base", "key", "base")]
        cells.append((f"{r.n_seeds}" + (f" ({r.n_resumed} resumed)" if r.n_resumed else "")
                      + (f" (+{r.n_failed} not completed)" if r.n_failed else ""), "num", r.n_seeds))
        for m in beside:
            c, d = r.cells[m.name], table.decimals[m.name]
            cells.append((fmt(c.mean, d) + (f" ± {fmt(c.std, d)}" if math.isfinite(c.std) and c.std > 0 else ""),
                          "num", c.mean if math.isfinite(c.mean) else ""))
        for m in metrics:
            c, d = r.cells[m.name], table.decimals[m.name]
            text = fmt(c.mean, d) + (f" ± {fmt(c.std, d)}" if math.isfinite(c.std) else "")
            cells.append((text, "num best" if c.best else "num", c.mean if math.isfinite(c.mean) else ""))
            if r.baseline:
                cells.append(("baseline", "num muted", 0))
            elif not math.isfinite(c.delta):
                cells.append(("–", "num muted", ""))
            else:
                rel = fmt(100 * c.rel, 1, sign=True) + "%" if math.isfinite(c.rel) else ""
                text = rel if kind == "cost" and rel else fmt(c.delta, d, sign=True) + (f" ({rel})" if rel else "")
                # colour only a difference beyond the noise after Holm's correction (never with one seed)
                cls = {True: "noise", None: "", False: {True: "better", False: "worse", None: ""}[c.better]}[c.noise]
                cells.append((("~ " if c.noise else "") + text, f"num {cls}".strip(), c.delta))
        rows.append({"cells": cells, "baseline": r.baseline and deltas})
    if not deltas:  # one variant: nothing to compare against
        keep = [i for i, (_, cls) in enumerate(head) if "delta" not in cls]
        head = [head[i] for i in keep]
        rows = [{**r, "cells": [r["cells"][i] for i in keep]} for r in rows]
    unset = any(r.values[k] is None for r in table.rows for k in keys)
    tested = any(r.cells[m.name].noise is not None or r.cells[m.name].best for r in table.rows for m in metrics)
    said = " ".join([BESIDE_NOTE[m.name] for m in beside] + [
        f"{m.title}: each variant's own training objective, which {' and '.join(table.uncompared[m.name])} change; "
        "losses of different objectives are not comparable, so it has a Δ only against a baseline of the same "
        "objective, and no best." for m in metrics
        if m.name in table.uncompared])
    return {"head": head, "rows": rows, "constants": constants, "deltas": deltas, "unset": unset, "tested": tested,
            "beside": said, **_stacked(head, rows)}


def _key_text(value: Any) -> str:
    """An axis value as a table cell; UNSET where the row's axes block does not set the key."""
    return UNSET if value is None else axis_text(value)


def _stacked(head: list[tuple[str, str]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The HTML layout: each Δ set small under its value, so a table fits the page."""
    keep = [i for i, (_, cls) in enumerate(head) if "delta" not in cls]
    out = []
    for row in rows:
        cells = []
        for i in keep:
            text, cls, key = row["cells"][i]
            sub = row["cells"][i + 1] if i + 1 < len(head) and "delta" in head[i + 1][1] else None
            sub = None if row["baseline"] else sub
            cells.append((text, cls, key, sub[0] if sub else "", sub[1].replace("num", "").strip() if sub else ""))
        out.append({"cells": cells, "baseline": row["baseline"]})
    return {"html_head": [head[i] for i in keep], "html_rows": out}


def _markdown(disp: dict[str, Any]) -> str:
    cols = [h for h, _ in disp["head"]]
    body = [[f"**{t}**" if "best" in cls else t for t, cls, _ in row["cells"]] for row in disp["rows"]]
    align = ["left" if cls == "key" else "right" for _, cls in disp["head"]]
    return pd.DataFrame(body, columns=cols).to_markdown(index=False, colalign=align, disable_numparse=True)


def _number(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _seed(v: Any) -> str:
    return str(int(v)) if isinstance(v, int | float) and math.isfinite(v) and float(v).is_integer() else str(v)


def _pairwise(studies: list[StudyData], tables: list[Table], multi: bool) -> list[dict[str, Any]]:
    """Each quality metric (the objective first; not the training loss) compared between every pair of a one-study
    table's variants (3+ of them with >= 2 seeds), sorted by the Holm-adjusted p (Holm over that metric's pairs);
    empty otherwise (two variants: the table's Δ is that test)."""
    if multi or not tables:
        return []
    t = tables[0]
    objective = studies[0].objective
    metrics = sorted((m for m in t.metrics if m.name == objective
                      or (m.kind == "quality" and m.name not in LOSS_METRICS)), key=lambda m: m.name != objective)
    out = []
    for m in metrics:
        pairs = pairwise([(r.label, r.cells[m.name]) for r in t.rows])
        if len({p["a"] for p in pairs} | {p["b"] for p in pairs}) < 3:
            continue
        rows = []
        for p in sorted(pairs, key=lambda p: (p["p_holm"], p["p"])):
            ahead = (p["delta"] > 0) == m.higher_is_better
            better = (p["a"] if ahead else p["b"]) if p["p_holm"] < ALPHA and p["delta"] != 0 else "~"
            rows.append({"a": p["a"], "b": p["b"], "delta": fmt(p["delta"], t.decimals[m.name], sign=True),
                         "p": f"{p['p']:.3g}", "p_holm": f"{p['p_holm']:.3g}", "better": better})
        k = sum(r["better"] != "~" for r in rows)
        out.append({"metric": m.title, "name": m.name, "rows": rows, "pairs": pairs,
                    "summary": f"{k} of the {len(rows)} pairs of variants differ in {m.title} beyond the seed noise "
                               f"after Holm's correction for the {len(rows)} comparisons (Welch's t-test per pair, "
                               f"α = {ALPHA})"})
    return out


def _raw_trials(studies: list[StudyData], tables: list[Table], multi: bool) -> dict[str, Any]:
    """Every trial (the per-seed numbers behind the tables), for the collapsed block."""
    metrics = tables[0].metrics if tables else []
    dec = tables[0].decimals if tables else {}
    head = (["study"] if multi else []) + ["variant", "seed", "status"] + [m.header for m in metrics] + ["MLflow run"]
    rows = []
    for s in studies:
        for _, t in s.trials.iterrows():
            vals = [fmt(_number(t.get(f"metrics.{m.name}")), dec[m.name]) for m in metrics]
            rows.append(([s.name] if multi else []) + [t["variant"], _seed(t["seed"]), t["status"], *vals,
                                                       (t["run_id"] or "")[:12]])
    align = ["left" if h in ("study", "variant", "status", "MLflow run") else "right" for h in head]
    markdown = pd.DataFrame(rows, columns=head).to_markdown(index=False, colalign=align, disable_numparse=True)
    return {"head": head, "rows": rows, "markdown": markdown if rows else ""}


def _results_frame(studies: list[StudyData]) -> pd.DataFrame:
    frame = pd.concat([s.trials for s in studies], ignore_index=True)
    first = ["study", "trial_key", "label", "variant", "seed", "status", "resumed_from_step", "failure", "run_id",
             "started", "ended"]
    groups = [sorted(c for c in frame.columns if c.startswith(p)) for p in ("axis.", "metrics.", "params.")]
    axis = [c for s in studies for c in s.trials.columns if c.startswith("axis.")]
    return frame[first + list(dict.fromkeys(axis)) + groups[1] + groups[2]]


def build_report(studies: str | Path | list[str | Path], out_dir: str | Path | None = None, *,
                 tracking_uri: str | None = None, runs_dir: str | Path = "runs",
                 bench: list[str | Path] | None = None) -> Path:
    """Load the studies (folders or names under runs_dir) and write the report; returns its folder."""
    items = [studies] if isinstance(studies, str | Path) else list(studies)
    with tempfile.TemporaryDirectory(prefix="harness-report-") as tmp:
        data = [load_study_data(s, runs_dir=runs_dir, tracking_uri=tracking_uri, cache_dir=Path(tmp) / str(i))
                for i, s in enumerate(items)]
        multi = len(data) > 1
        name = "_vs_".join(d.name for d in data)
        out = Path(out_dir) if out_dir is not None else Path("reports") / name
        bench_paths = [Path(b) for b in bench or []]
        bench_paths += [d.folder / "bench.json" for d in data if d.folder and (d.folder / "bench.json").exists()]
        tables = build_tables(data)
        provs = [provenance(d) for d in data]
        figs, pareto, bench_rows = figures(data, tables, bench_paths, shared=any(p["sharing"] for p in provs))
        results = _results_frame(data)
    _write(out, name, data, tables, provs, figs, pareto, bench_rows, results, multi)
    return out


def _write(out: Path, name: str, data: list[StudyData], tables: list[Table], provs: list[dict[str, Any]],
           figs: list[Figure], pareto: dict[str, Any], bench_rows: list[dict[str, Any]], results: pd.DataFrame,
           multi: bool) -> None:
    compute = compute_section(data)                   # quality vs compute (eval.every histories), or None
    figs = figs + (compute["figures"] if compute else [])
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file() and _OURS.match(old.name):
            old.unlink()
    for f in figs:
        (out / f.file).write_bytes(f.png)
    stamp = _timestamp()
    views = [{"title": t.title, "baseline": t.baseline_label,
              "quality": _display(t, "quality"), "cost": _display(t, "cost")} for t in tables]
    for v in views:
        for kind in ("quality", "cost"):
            if v[kind] and v[kind]["rows"]:
                v[kind]["markdown"] = _markdown(v[kind])
    failed = failed_trials(data)
    raw = _raw_trials(data, tables, multi)
    ctx = {
        "name": name, "title": ("Comparison: " + " vs ".join(d.name for d in data)) if multi else f"Study: {name}",
        "studies": data, "provs": provs, "views": views, "figures": figs, "failed": failed,
        "notes": notes(data, tables, provs), "generated": GENERATED_PREFIX + stamp, "pareto": pareto,
        "sections": {s: [f for f in figs if f.section == s]
                     for s in ("curves", "compute", "cost", "samples", "seeds", "scans")}, "compute": compute,
        "metrics": tables[0].metrics if tables else [], "multi": multi, "raw": raw,
        "pairwise": _pairwise(data, tables, multi),
    }
    ctx["verdict"] = verdict(tables, data[0].objective, provs, {p["name"]: p for p in ctx["pairwise"]})
    if compute:  # the equal-cost answers, one a table (a study crossing e.g. token counts: one per value)
        ctx["verdict"]["lines"] += [(f"{t['group']}: " if t["group"] else "") + t["sentence"]
                                    for t in compute["tables"]]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                             autoescape=jinja2.select_autoescape(["html"]))
    (out / "index.html").write_text(env.get_template("index.html.j2").render(**ctx), encoding="utf-8")
    (out / "README.md").write_text(env.get_template("README.md.j2").render(**ctx), encoding="utf-8")
    results.to_csv(out / "results.csv", index=False, lineterminator="\n")
    summary = {
        "generated": stamp, "name": name, "provenance": provs,
        "metrics": [{"name": m.name, "title": m.title, "unit": m.unit, "higher_is_better": m.higher_is_better,
                     "kind": m.kind} for m in ctx["metrics"]],
        "tables": [{"title": t.title, "keys": t.keys, "baseline": t.baseline_label, "rows": [
            {"variant": r.label.split(": ", 1)[-1] if "study" in r.values else r.label, "label": r.label,
             "values": r.values, "n_seeds": r.n_seeds, "n_failed": r.n_failed,
             "n_resumed": r.n_resumed,
             "baseline": r.baseline, "compared_with": r.compared_with,
             "metrics": {k: {"mean": c.mean, "std": c.std, "n": c.n, "delta": c.delta, "rel_delta": c.rel,
                             "within_noise": c.noise, "p_welch": c.p, "p_holm": c.p_holm, "best": c.best}
                         for k, c in r.cells.items()}} for r in t.rows]} for t in tables],
        "failed": failed, "pareto": pareto, "bench": bench_rows, "figures": [f.file for f in figs],
        "notes": ctx["notes"], "verdict": ctx["verdict"],
        "iso_cost": [{k: t[k] for k in ("title", "budgets", "heads", "rows", "sentence")} for t in compute["tables"]]
        if compute else [],
        "pairwise": [{k: p[k] for k in ("metric", "name", "pairs")} for p in ctx["pairwise"]],
    }
    (out / "summary.json").write_text(json.dumps(_clean(summary), indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                                      encoding="utf-8")

