"""Iso-cost verdicts compare models within each value of a key the study crosses with its models (resolution_tokens:
backbone.patch_size, i.e. 256 and 1,024 tokens), never a 256-token model with a 1,024-token one."""

from __future__ import annotations

import pandas as pd

from harness.report.compute import compute_section, crossed_keys
from harness.report.data import StudyData

STEPS = (10, 20, 40, 80)


def _study(rows, curves=None, baseline=None):
    """rows: (backbone, patch, seed) trials; curves: (backbone, patch) -> fd at a step (seconds = step / 100)."""
    trials, during = [], {}
    for i, (backbone, patch, seed) in enumerate(rows):
        run = f"run{i}"
        trials.append({"status": "completed", "run_id": run, "seed": seed,
                       "variant": f"backbone={backbone}, patch_size={patch}",
                       "axis.backbone.name": backbone, "axis.backbone.patch_size": patch,
                       "axis.scan.name": "zigzag-8" if backbone == "zigma" else float("nan")})
        if curves:
            fd = curves[(backbone, patch)]
            during[run] = {"during/fd-effnet": [(s, fd(s) + seed) for s in STEPS],
                           "during/train_seconds": [(s, s / 100) for s in STEPS],
                           "during/train_tflops": [(s, s / 10) for s in STEPS],
                           "during/images": [(s, 16.0 * s) for s in STEPS]}
    return StudyData(name="rt", folder=None, trials=pd.DataFrame(trials), during=during,
                     baseline={"backbone.name": "dit"} if baseline is None else baseline)


def test_a_key_every_model_runs_at_each_value_of_is_crossed_and_one_only_some_run_is_not():
    full = [(b, p, 0) for b in ("zigma", "dit") for p in (2, 1)]
    assert crossed_keys(_study(full)) == ["backbone.patch_size"]
    # scan.name: one value, and only ZigMa has it; patch 1 run by ZigMa alone: not a comparison within patch 1
    assert crossed_keys(_study([("zigma", 2, 0), ("dit", 2, 0), ("zigma", 1, 0)])) == []
    assert crossed_keys(_study(full, baseline={})) == []


def test_iso_cost_verdicts_stay_within_a_token_count():
    """At patch 2 ZigMa beats DiT by 20 at every budget, at patch 1 DiT beats ZigMa by 20; the patch-1 models are
    300 lower than either patch-2 one. Compared across patch sizes, patch 1's DiT would lead everywhere and ZigMa's
    patch-2 lead would never show; within each patch size each table names its own leader."""
    curves = {("zigma", 2): lambda s: 600 - s, ("dit", 2): lambda s: 620 - s,
              ("zigma", 1): lambda s: 320 - s, ("dit", 1): lambda s: 300 - s}
    rows = [(b, p, seed) for b in ("zigma", "dit") for p in (2, 1) for seed in (0, 1)]
    section = compute_section([_study(rows, curves)])
    titles = [t["title"] for t in section["tables"]]
    assert titles == [f"FD-EffNetLite0 at equal {what}, patch_size={p}" for what in ("GPU time", "FLOPs") for p in (2, 1)]
    for table in section["tables"]:
        leader = ("backbone=zigma, patch_size=2, scan=zigzag-8" if table["title"].endswith("2")
                  else "backbone=dit, patch_size=1")
        assert f"{leader} at " in table["sentence"], table["sentence"]
        other_patch = "patch_size=1" if table["title"].endswith("2") else "patch_size=2"
        assert all(other_patch not in r["variant"] for r in table["rows"])
    assert "compared only with models of the same backbone.patch_size" in section["method"]

