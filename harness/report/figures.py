"""The report's figures: training curves, the quality/cost Pareto front, the benchmark plot, sample grids and
scan paths, each as PNG bytes with a file name, title and caption."""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.labels import model_label

from . import plots
from .data import StudyData
from .scans import scan_pictures
from .tables import MetricInfo, Table, lower_title, metric_infos, objective_keys

__all__ = ["Figure", "figures"]


@dataclass
class Figure:
    file: str
    title: str
    caption: str
    png: bytes
    section: str  # 'curves' | 'compute' | 'cost' | 'samples' | 'seeds' (after the grids) | 'scans'

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-").lower() or "x"


def _label(study: StudyData, variant: str, multi: bool) -> str:
    return f"{study.name}: {variant}" if multi else variant


def curve_figures(studies: list[StudyData], multi: bool) -> list[Figure]:
    metrics: dict[str, dict[str, list]] = {}
    n: dict[str, int] = {}
    models: dict[str, str] = {}
    for s in studies:
        for _, t in s.trials.iterrows():
            if t["status"] != "completed" or not t["run_id"]:
                continue
            label = _label(s, t["variant"], multi)
            n[label] = n.get(label, 0) + 1
            models[label] = _label(s, model_label(t), multi)
            for m, pts in sorted(s.histories.get(t["run_id"], {}).items()):
                metrics.setdefault(m, {}).setdefault(label, []).append(pts)
    order = ["train_loss"] + sorted(m for m in metrics if m != "train_loss")
    infos = {i.name: i for i in metric_infos([m for m in order if m in metrics and m != "train_loss"])}
    out = []
    for m in order:
        if m not in metrics:
            continue
        info = infos.get(m) or MetricInfo(m, "Train loss" if m == "train_loss" else m, "", False, "quality")
        png = plots.history_plot(metrics[m], info, n, models)
        differ = objective_keys({k: v for s in studies for k, v in s.axis_values.items()})
        note = f" The variants differ in {' and '.join(differ)}, which change the training objective: their " \
            "losses are different quantities, not comparable with each other." if m == "train_loss" and differ else ""
        out.append(Figure(f"curve-{_slug(m)}.png", f"{info.title} vs training step",
                          f"{info.title} per logged step, mean over seeds with the min–max band.{note}", png,
                          "curves"))
    return out


def pareto(tables: list[Table], shared: bool = False) -> tuple[Figure | None, dict[str, Any]]:
    """The quality/cost plot of the first quality metric against the first cost that differs between variants; `shared`:
    some trials ran with others on their device."""
    if not tables:
        return None, {}
    rows, seen = [], set()
    for t in tables:
        for r in t.rows:
            if r.label not in seen:
                seen.add(r.label)
                rows.append(r)
    metrics = tables[0].metrics
    quality = next((m for m in metrics if m.kind == "quality"), None)
    finite = lambda m: sum(math.isfinite(r.cells[m.name].mean) for r in rows)
    costs = [m for name in ("sample_ms_per_image", "nfe", "train_images_per_s", "peak_memory_gb", "gflops",
                            "params_m")
             for m in metrics if m.name == name and finite(m) > 1
             and len({r.cells[m.name].mean for r in rows if math.isfinite(r.cells[m.name].mean)}) > 1]
    if quality is None or not costs or finite(quality) < 2:
        return None, {}
    cost = costs[0]
    merged = Table("all", [], metrics, rows, "")
    png, front, line = plots.pareto_plot(merged, quality, cost)
    single = any(r.cells[quality.name].n < 2 or r.cells[cost.name].n < 2 for r in rows
                 if math.isfinite(r.cells[quality.name].mean) and math.isfinite(r.cells[cost.name].mean))
    c = lower_title(cost.title)
    fig = Figure("pareto.png", f"Quality vs cost: {quality.title} against {c}",
                 f"Variant means with ±1 std error bars ({quality.arrow} {quality.title}, {cost.arrow} {c})"
                 + _cut_note(quality, [r.cells[quality.name] for r in rows]) + ". Dashed: "
                 "the front of the means (no other variant's means at least as good on both axes). Filled red: no "
                 "other variant dominates it beyond the seed noise, i.e. is better on one axis (Welch, Holm-adjusted "
                 "over all pairs on both axes, p < 0.05) and not worse beyond the noise on the other; with few seeds "
                 "this keeps variants whose means are well behind, so it reads 'not ruled out', not 'good'."
                 + (" Variants with one seed count by their means alone, untested." if single else "")
                 + (" The cost axis was measured with several trials sharing one device (see Notes)."
                    if shared and cost.name in SHARED_COSTS else ""), png, "cost")
    return fig, {"quality": quality.name, "cost": cost.name, "front": front, "front_of_means": line}


#: cost figures that trials sharing a device (--trials-per-gpu) distort
SHARED_COSTS = ("sample_ms_per_image", "train_images_per_s", "train_seconds", "train_seconds_timed")


def bench(paths: list[Path]) -> tuple[Figure | None, list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    for p in paths:
        doc = json.loads(Path(p).read_text())
        rows += [r for r in doc.get("rows", []) if r.get("tokens")]
    if not rows:
        return None, []
    rows.sort(key=lambda r: (str(r.get("backbone")), str(r.get("device")), float(r["tokens"])))
    png = plots.bench_plot(rows)
    return Figure("bench.png", "Throughput and peak memory vs sequence length",
                  "Training throughput and peak memory against tokens per sample (log-log), one line per benchmark "
                  "variant, from the benchmark results file; every point sees the same tokens a step unless its "
                  "label names another batch.", png, "cost"), rows


def sample_figures(studies: list[StudyData], multi: bool) -> list[Figure]:
    """A real-data grid per study (the metrics' reference set), then one sample grid per variant."""
    out, used = [], set()
    for s in studies:
        if s.real is not None and s.samples:
            title = _label(s, "real data", multi)
            out.append(Figure(f"real-{_slug(s.name)}.png", title, "Real images from the held-out reference set "
                              "the metrics compare against, at the trials' resolution.", s.real.read_bytes(),
                              "samples"))
        for _, t in s.trials.iterrows():
            label = _label(s, t["variant"], multi)
            if t["status"] != "completed" or label in used or t["trial_key"] not in s.samples:
                continue
            used.add(label)
            path = s.samples[t["trial_key"]]
            video = path.suffix == ".gif"
            prompts = _prompts(s.sample_captions.get(t["trial_key"]))
            png, what = (plots.frame_strip(path), "Frames of sample videos") if video else (path.read_bytes(), "Samples")
            if prompts is not None and not video:
                try:
                    png = plots.captioned_grid(path, prompts["captions"], prompts["nrow"])
                    under = "the class it was drawn for" if prompts.get("kind") == "class" else "its prompt"
                    what = f"The first {min(16, len(prompts['captions']))} samples, each under {under}" + (
                        f" (recomputed after the run: trials/{t['trial_key']}/samples.json says how)"
                        if prompts.get("note") else "") + ","
                except ValueError:              # a grid of another layout: shown as it is, without its prompts
                    pass
            out.append(Figure(_unused(f"samples-{_slug(label)}.png", out), label,
                              f"{what} from seed {t['seed']} (EMA weights).", png, "samples"))
    if (seeds := seed_figure(studies, multi)) is not None:
        seeds.file = _unused(seeds.file, out)
        out.append(seeds)
    return out


def _unused(name: str, figures: list[Figure]) -> str:
    """`name`, or name-x.png, name-x-x.png, ... until no figure has it."""
    while any(f.file == name for f in figures):
        name = name[:-4] + "-x.png"
    return name


def seed_figure(studies: list[StudyData], multi: bool) -> Figure | None:
    """Every completed trial's whole sample grid, a row per variant and a column per seed, so that a seed which
    failed shows beside those that did not (None unless some variant has samples from two seeds or more)."""
    rows: dict[str, dict[int, Path]] = {}
    for s in studies:
        for _, t in s.trials.iterrows():
            if t["status"] == "completed" and t["trial_key"] in s.samples:
                seeds = rows.setdefault(_label(s, t["variant"], multi), {})
                seeds.setdefault(int(t["seed"]), s.samples[t["trial_key"]])
    if not any(len(seeds) > 1 for seeds in rows.values()):
        return None
    png = plots.seed_panel([(label, sorted(seeds.items())) for label, seeds in rows.items()])
    return Figure("samples-by-seed.png", "Samples of every seed", "Each row a variant, each column a seed: the "
                  "trial's whole sample grid (EMA weights; an animated GIF by its first frame), so a seed that "
                  "trained badly shows beside the others.", png, "seeds")


def _prompts(path: Path | None) -> dict | None:
    """A trial's grid prompts (samples.json: {"captions": [str, ...], "nrow": int}), None unless well formed."""
    try:
        doc = json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        return None
    ok = (isinstance(doc, dict) and isinstance(doc.get("captions"), list) and doc["captions"]
          and all(isinstance(c, str) for c in doc["captions"]) and type(doc.get("nrow")) is int and doc["nrow"] > 0)
    return doc if ok else None


def scan_figures(studies: list[StudyData]) -> list[Figure]:
    """Each scan of the studies drawn on the trials' token grid (the first study's that knows it)."""
    names = []
    grid = next((s.token_grid for s in studies if s.token_grid), None)
    for s in studies:
        if "scan.name" in s.trials.columns or "axis.scan.name" in s.trials.columns:
            col = "axis.scan.name" if "axis.scan.name" in s.trials.columns else "scan.name"
            for n in s.trials[col].dropna().astype(str):
                if n not in names:
                    names.append(n)
    where = f" on the trials' {grid[1]}x{grid[2]} token grid" + (f" x {grid[0]} frames" if grid[0] > 1 else "") \
        if grid else ""
    return [Figure(f"scan-{_slug(n)}.png", n, f"Token paths of scan '{n}'{where} (from the scan library); "
                   "click to enlarge.", png, "scans") for n, png in scan_pictures(names, grid)]


def figures(studies: list[StudyData], tables: list[Table], bench_paths: list[Path], *, shared: bool = False
            ) -> tuple[list[Figure], dict[str, Any], list[dict[str, Any]]]:
    """Every figure in report order, the Pareto summary and the benchmark rows (`shared`: some trials shared a
    device, which the Pareto caption says when its cost axis is a timed one)."""
    multi = len(studies) > 1
    pareto_fig, front = pareto(tables, shared)
    bench_fig, bench_rows = bench(bench_paths)
    out = curve_figures(studies, multi) + [f for f in (pareto_fig, bench_fig) if f] \
        + sample_figures(studies, multi) + scan_figures(studies)
    return out, front, bench_rows


def _cut_note(quality, cells) -> str:
    """Where plots._err stopped a bar at a bound the metric cannot cross (an accuracy above 1): say so."""
    def was_cut(c) -> bool:
        arms = plots._err(c.std, c.mean, quality.bounds)
        return isinstance(arms, list) and min(arms[0][0], arms[1][0]) < c.std

    if not any(was_cut(c) for c in cells if math.isfinite(c.mean)):
        return ""
    lo, hi = quality.bounds
    rng = (f"[{lo:g}, {hi:g}]" if lo is not None and hi is not None
           else f">= {lo:g}" if lo is not None else f"<= {hi:g}")
    return f"; a bar stops where {quality.title} ends ({rng})"
