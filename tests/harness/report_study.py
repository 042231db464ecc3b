"""A small finished study written directly in the runner's layout (docs/ARCHITECTURE.md), for report tests.

3 scans x 2 seeds; `hilbert-8` seed 1 fails with a reason; every other trial logs a per-step train_loss,
an intermediate fd-effnet, final metrics, params, provenance, metrics meta and a samples.png grid.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

STUDY_YAML = """\
name: toy_scans
description: Scan order ablation on digits (test fixture).
base:
  dataset: {name: digits}
  backbone: {name: zigma, size: tiny, patch_size: 2}
  train: {steps: 40, batch_size: 16}
  eval: {num_samples: 64, metrics: [fd-effnet, kid]}
axes:
  scan.name: [sweep-1, zigzag-8, hilbert-8]
seeds: [0, 1]
baseline: {scan.name: sweep-1}
objective: {metric: fd-effnet, direction: minimize}
"""

FAILURE = "out of memory: peak 9.1 GB above train.max_memory_gb=8"
#: (fd-effnet, kid, train_images_per_s, sample_ms_per_image, peak_memory_gb) per scan, before seed noise
BASE = {"sweep-1": (40.0, 0.030, 900.0, 2.0, 1.10), "zigzag-8": (31.0, 0.021, 820.0, 2.3, 1.15),
        "hilbert-8": (33.0, 0.024, 700.0, 2.6, 1.30)}


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def _grid_png(scan: str, seed: int) -> bytes:
    rng = np.random.default_rng(len(scan) * 10 + seed)
    img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def make_study(root: Path) -> Path:
    """Write runs/toy_scans/ under root; returns the study folder."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import yaml
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from harness.study import expand_trials, parse_study

    folder = root / "runs" / "toy_scans"
    (folder / "trials").mkdir(parents=True)
    (folder / "study.yaml").write_text(STUDY_YAML)
    study = parse_study(yaml.safe_load(STUDY_YAML))
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.create_experiment("toy_scans", artifact_location=(folder / "mlartifacts").as_uri())
    parent = client.create_run(exp, tags={"harness.kind": "study", "harness.study": "toy_scans",
                                          "harness.preset": ""})
    for spec in expand_trials(study):
        scan, seed = spec.params["scan.name"], spec.seed
        failed = scan == "hilbert-8" and seed == 1
        tdir = folder / "trials" / spec.key
        tdir.mkdir()
        tags = {"mlflow.parentRunId": parent.info.run_id, "harness.kind": "trial", "harness.trial_key": spec.key,
                "harness.label": spec.label, "harness.status": "failed" if failed else "completed"}
        if failed:
            tags["harness.failure"] = FAILURE
        run = client.create_run(exp, tags=tags, run_name=spec.label)
        rid = run.info.run_id
        params = _flatten(spec.config.model_dump(mode="json"))
        params.update({"axis.scan.name": scan, "seed": str(seed)})
        fd0, kid0, ips, ms, mem = BASE[scan]
        noise = (-1) ** seed * (0.5 + 0.1 * len(scan))
        steps = 10 if failed else 20
        metrics = [Metric("train_loss", 1.0 / step + 0.01 * seed + 0.001 * len(scan), step, step)
                   for step in range(1, steps + 1)]
        if failed:
            client.log_batch(rid, metrics=metrics, params=[Param(k, v) for k, v in sorted(params.items())])
            client.set_terminated(rid, "FAILED")
            continue
        metrics.append(Metric("fd-effnet", fd0 * 1.5 + noise, 10, 10))
        final = {"fd-effnet": fd0 + noise, "kid": kid0 + noise / 1000, "params_m": 1.25, "gflops": 0.31,
                 "train_images_per_s": ips + 10 * noise, "sample_ms_per_image": ms + noise / 10, "nfe": 50.0,
                 "peak_memory_gb": mem, "train_seconds": 12.0 + seed, "final_train_loss": 0.05 + 0.01 * seed}
        metrics += [Metric(k, v, 20, 20) for k, v in final.items()]
        client.log_batch(rid, metrics=metrics, params=[Param(k, v) for k, v in sorted(params.items())])
        prov = {"git_sha": "0123456789abcdef0123456789abcdef01234567", "device": "cpu (test fixture)",
                "versions": {"torch": "2.14.1", "zigma-harness": "0.1.0"}, "precision": "fp32",
                "mixer_backend": "reference", "seed": seed}
        meta = {"fd-effnet": {"meta.implementation": "zigma.metrics.frechet_distance",
                              "meta.extractor": "efficientnet-lite0", "meta.num_samples": 64,
                              "meta.reference_hash": "feedfacecafebeef"},
                "kid": {"meta.implementation": "zigma.metrics.kid", "meta.num_samples": 64,
                        "meta.reference_hash": "feedfacecafebeef"}}
        (tdir / "results.json").write_text(json.dumps(final))
        (tdir / "provenance.json").write_text(json.dumps(prov))
        (tdir / "metrics_meta.json").write_text(json.dumps(meta))
        (tdir / "samples.png").write_bytes(_grid_png(scan, seed))
        for f in ("provenance.json", "metrics_meta.json", "samples.png"):
            client.log_artifact(rid, str(tdir / f))
        client.set_terminated(rid, "FINISHED")
    client.set_terminated(parent.info.run_id, "FINISHED")
    bench = {"rows": [{"backbone": b, "tokens": n, "train_images_per_s": 5e5 / n ** e, "step_ms": n ** e / 50,
                       "peak_memory_gb": 0.2 + n * m, "device": "cpu (test fixture)"}
                      for b, e, m in (("zigma", 1.0, 1e-4), ("dit", 1.6, 4e-4)) for n in (64, 256, 1024, 4096)]}
    (folder / "bench.json").write_text(json.dumps(bench))
    return folder


BACKBONE_YAML = """\
name: toy_backbones
description: Three backbones in three axes blocks with different keys (test fixture).
base:
  dataset: {name: digits}
  backbone: {size: tiny, patch_size: 2}
  eval: {num_samples: 64, metrics: [fd-effnet]}
axes:
  - {backbone.name: [zigma], scan.name: [zigzag-8]}
  - {backbone.name: [vim], scan.name: [sweep-2]}
  - {backbone.name: [dit]}
seeds: [0, 1]
baseline: {backbone.name: dit}
objective: {metric: fd-effnet, direction: minimize}
"""
#: (fd-effnet, params_m, train_images_per_s) per backbone, before seed noise
BACKBONE_BASE = {"zigma": (30.0, 1.20, 800.0), "vim": (36.0, 1.30, 600.0), "dit": (40.0, 1.10, 1000.0)}


def write_results_study(root: Path, text: str, results_of, git_sha: str | None = "0" * 40,
                        device_of=lambda spec: "cpu (test fixture)") -> Path:
    """Write runs/<name>/ under root for the study YAML `text` from results.json files alone (no tracking store, so
    it is quick): each trial's results are results_of(spec) plus its params and seed, and its provenance.json
    records `git_sha` and device_of(spec). Returns the study folder."""
    import yaml

    from harness.study import expand_trials, parse_study

    folder = root / "runs" / yaml.safe_load(text)["name"]
    (folder / "trials").mkdir(parents=True)
    (folder / "study.yaml").write_text(text)
    for spec in expand_trials(parse_study(yaml.safe_load(text))):
        tdir = folder / "trials" / spec.key
        tdir.mkdir()
        (tdir / "results.json").write_text(json.dumps({**results_of(spec), "params": spec.params, "seed": spec.seed}))
        (tdir / "provenance.json").write_text(json.dumps(
            {"git_sha": git_sha, "git_dirty": None, "device": device_of(spec), "precision": "fp32"}))
    return folder


def make_backbone_study(root: Path, git_sha: str | None = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """Write runs/toy_backbones/ under root from results.json files alone (no tracking store, so it is quick):
    every trial completes and records `git_sha` in its provenance.json. Returns the study folder."""

    def results(spec) -> dict:
        fd, params_m, ips = BACKBONE_BASE[spec.params["backbone.name"]]
        noise = (-1) ** spec.seed * 0.5
        return {"fd-effnet": fd + noise, "params_m": params_m, "train_images_per_s": ips + 10 * noise}

    return write_results_study(root, BACKBONE_YAML, results, git_sha)
