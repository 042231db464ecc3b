"""The report's provenance header and its honest notes, gathered from every trial's provenance and metric meta."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from .data import StudyData, axis_text
from .stats import TEST
from .tables import Table

__all__ = ["classifier_note", "notes", "provenance", "what_ran"]

#: what each quality metric is, and what it is not
METRIC_NOTES = {
    "fd-effnet": "FD-EffNetLite0 is the Fréchet distance between EfficientNet-Lite0 features of generated and "
                 "reference images. It is not FID (Inception-V3 features): its values are not comparable with FID "
                 "numbers in papers, only with each other at the same sample count and reference set.",
    "fid": "FID uses Inception-V3 features. At fewer than 50k samples it is biased upward, so compare only runs "
           "with equal sample counts and reference statistics.",
    "kid": "KID here is the kernel (polynomial MMD²) distance on the same EfficientNet-Lite0 features, not Inception "
           "KID. It is unbiased but has high variance at small sample counts.",
    "frame-fd": "Frame FD is FD-EffNetLite0 over all frames of the videos: it scores single frames and is blind to "
                "temporal consistency.",
    "temporal-fd": "Temporal FD is the Fréchet distance between the frame-to-frame changes of EfficientNet-Lite0 "
                   "features, f(frame t+1) - f(frame t), of generated and real videos: a video whose content does not "
                   "hold from one frame to the next (or that freezes while real ones move) scores far. Our own proxy "
                   "for the temporal half of FVD, not FVD.",
    "cond-accuracy": "Cond. accuracy is the fraction of conditional samples (class labels or captions) whose every "
                     "attribute, as a classifier trained on the real data reads it, matches their prompt.",
}


def _pct(values: list[str]) -> str:
    return " / ".join(f"{100 * float(v):.1f} %" for v in values)


def classifier_note(study: str, fields: dict[str, list[str]]) -> str | None:
    """How accurate cond-accuracy's classifier is on real data, from the trials' metric meta (None: not scored)."""
    real, n = fields.get("classifier_real_accuracy"), fields.get("classifier_real_n")
    own, own_n = fields.get("classifier_heldout_accuracy"), fields.get("classifier_heldout_n")
    if not real and not own:
        return None
    text = f"{study}: the classifier that scores cond-accuracy"
    if real and n:
        parts = [f"{a} {_pct(fields[f'classifier_real_accuracy.{a}'])}" for a in ("colour", "shape", "position")
                 if fields.get(f"classifier_real_accuracy.{a}")]
        text += (f" reads all attributes right on {_pct(real)} of {' / '.join(n)} held-out real captioned images"
                 + (f" ({', '.join(parts)})" if parts else ""))
        if own:
            text += f", and on {_pct(own)} of the {' / '.join(own_n or ['?'])} training images it was not fitted on"
        return text + "; a sample's score is only as exact as that."
    return (text + f" reads all attributes right on {_pct(own)} of the training images it was not fitted on; its "
            "accuracy on held-out real images was not recorded by these trials.")


def _vals(values: Any) -> list[str]:
    return sorted({str(v) for v in values if v not in (None, "")})


def _get(doc: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if k in doc:
            return doc[k]
    return None


def _sharing(doc: dict[str, Any]) -> int | None:
    """How many trials shared this trial's device (None: not recorded, runs before the field existed)."""
    info = _get(doc, "device_info")
    value = info.get("trials_per_device") if isinstance(info, dict) else None
    return int(value) if value is not None else None


def _devices(doc: dict[str, Any]) -> list[str]:
    """The device name(s) a trial's provenance records."""
    dev = _get(doc, "device", "devices")
    if isinstance(dev, dict):
        dev = dev.get("name") or dev.get("type")
    return [str(x) for x in (dev if isinstance(dev, list) else [dev]) if x]


def _shas(shas: list[str]) -> list[str]:
    """The full SHA when all trials ran from one commit, 12-character prefixes when from several."""
    return shas if len(shas) < 2 else [s[:12] for s in shas]


def provenance(study: StudyData) -> dict[str, Any]:
    """One study's provenance, each field the sorted set of values over its completed trials."""
    docs = list(study.provenance.values())
    completed = set(study.trials.loc[study.trials["status"] == "completed", "trial_key"]) if len(study.trials) else set()
    done = [d for key, d in study.provenance.items() if key in completed]
    versions: dict[str, set[str]] = {}
    for d in docs:
        for pkg, ver in (_get(d, "versions", "packages") or {}).items():
            versions.setdefault(pkg, set()).add(str(ver))
    device = []
    for d in docs:
        device.extend(_devices(d))
    metrics: dict[str, dict[str, list[str]]] = {}
    for doc in study.metrics_meta.values():
        for metric, meta in sorted(doc.items()):
            if not isinstance(meta, dict):
                continue
            for k, v in meta.items():
                metrics.setdefault(metric, {}).setdefault(k.removeprefix("meta."), set()).add(str(v))  # type: ignore[arg-type]
    status = study.trials["status"].value_counts().to_dict() if len(study.trials) else {}
    return {
        "study": study.name,
        "description": study.description,
        "preset": study.preset or "",
        "git_sha": _shas(_vals(_get(d, "git_sha", "git") for d in docs)),
        "git_dirty": _vals(_get(d, "git_dirty") for d in docs),
        "devices": _vals(device),
        "precision": _vals(_get(d, "precision", "precision_flags") for d in docs if
                           not isinstance(_get(d, "precision", "precision_flags"), dict)),
        "mixer_backend": _vals(_get(d, "mixer_backend") for d in docs),
        # trials that ran with others on their device (--trials-per-gpu K): sharing -> how many trials
        "sharing": {k: sum(1 for d in done if _sharing(d) == k) for k in sorted({_sharing(d) for d in done})
                    if k and k > 1},
        # completed trials per device: a study that continued on another card averages its cost cells across them
        "trials_per_device": dict(sorted(Counter(dev for d in done for dev in _devices(d)).items())),
        "dropped_peaks": study.dropped_peaks,
        **({"superseded": study.superseded} if study.superseded else {}),
        "versions": {k: sorted(v) for k, v in sorted(versions.items())},
        "metrics": {m: {k: sorted(v) for k, v in sorted(f.items())} for m, f in sorted(metrics.items())},
        "seeds": [int(s) for s in study.seeds] if study.seeds else sorted({int(s) for s in study.trials["seed"].dropna()}),
        "objective": f"{study.objective} ({study.objective_direction})",
        "baseline": study.baseline or {},
        "baseline_text": {k: axis_text(v) for k, v in (study.baseline or {}).items()},
        "trials": {k: int(v) for k, v in sorted(status.items())},
        "ran": _span(study),
        "what_ran": what_ran(study),
        "resumed": [f"{t['variant']} seed {t['seed']} (from step {int(t['resumed_from_step'])})"
                    for _, t in study.trials.iterrows() if t["status"] == "completed"
                    and _num(t.get("resumed_from_step")) > 0] if len(study.trials) else [],
    }


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(f) else f


def _distinct(t: Any, column: str, *, integer: bool = False) -> str:
    """The distinct values of one column over the completed trials, ' / '-joined in first-seen order."""
    if column not in t.columns:
        return "?"
    out: list[str] = []
    for v in t[column]:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
            continue
        text = f"{int(float(v)):,}" if integer else (f"{v:g}" if isinstance(v, float) else str(v))
        if text not in out:
            out.append(text)
    return " / ".join(out) or "?"


def _sampler_nfe(t: Any) -> str:
    """'sampler euler / heun at NFE 50, dopri5 at NFE 152–188': each sampler with the NFE its trials recorded (a
    range when they differ, as an adaptive solver's do), samplers of the same NFE text grouped."""
    if "params.sampler.name" not in t.columns:
        return f"sampler ? at NFE {_distinct(t, 'metrics.nfe')}"
    groups: dict[str, list[str]] = {}
    for name in dict.fromkeys(v for v in t["params.sampler.name"] if isinstance(v, str) and v):
        rows = t[t["params.sampler.name"] == name]
        nfe = sorted({float(v) for v in rows.get("metrics.nfe", []) if _num(v) > 0})
        text = "?" if not nfe else f"{nfe[0]:g}" if len(nfe) == 1 else f"{nfe[0]:g}–{nfe[-1]:g}"
        groups.setdefault(text, []).append(name)
    if not groups:
        return f"sampler ? at NFE {_distinct(t, 'metrics.nfe')}"
    return "sampler " + ", ".join(f"{' / '.join(names)} at NFE {text}" for text, names in groups.items())


def what_ran(study: StudyData) -> str:
    """The header sentence generated from the resolved configuration and data of the study's completed trials."""
    t = study.trials
    if not len(t):
        return ""
    t = t[t["status"] == "completed"]
    if not len(t):
        return "No trial completed yet."
    seeds = sorted({int(s) for s in t["seed"].dropna()})
    params = ""
    if "metrics.params_m" in t.columns and t["metrics.params_m"].notna().any():
        params = " (" + " / ".join(dict.fromkeys(f"{v:.3g}" for v in t["metrics.params_m"].dropna())) + " M parameters)"
    h, w = _distinct(t, "metrics.data_height", integer=True), _distinct(t, "metrics.data_width", integer=True)
    frames = _distinct(t, "metrics.data_frames", integer=True)
    res = f"{h}×{w}" + (f"×{frames} frames" if frames not in ("1", "?") else "")
    return (f"Ran: {_distinct(t, 'params.dataset.name')} "
            f"({_distinct(t, 'metrics.data_num_train', integer=True)} train / "
            f"{_distinct(t, 'metrics.data_num_reference', integer=True)} reference "
            f"{'videos' if _frames(study) > 1 else 'images'}) at {res}, "
            f"{_distinct(t, 'metrics.tokens', integer=True)} tokens (patch {_distinct(t, 'params.backbone.patch_size')}); "
            f"backbone {_distinct(t, 'params.backbone.name')} size {_distinct(t, 'params.backbone.size')}{params}; "
            f"{_distinct(t, 'params.train.steps', integer=True)} training steps of batch "
            f"{_distinct(t, 'params.train.batch_size')}; {len(seeds)} seed{'s' if len(seeds) != 1 else ''} "
            f"({', '.join(map(str, seeds))}); {_distinct(t, 'params.eval.num_samples', integer=True)} samples per "
            f"trial from {_sampler_nfe(t)}; "
            f"{len(t)} completed trial{'s' if len(t) != 1 else ''}.")


def _count(tables: list[Table]) -> str:
    """How many comparisons with a baseline each metric's column makes, for the notes."""
    k = sum(not r.baseline for r in tables[0].rows) if tables else 0
    return f"here up to {k} per metric: one for each row against its baseline, where both have two or more seeds"


def _frames(study: StudyData) -> int:
    """Frames per sample of the study's completed trials (1: images)."""
    t = study.trials
    if "metrics.data_frames" not in t.columns:
        return 1
    return int(max((_num(v) for v in t["metrics.data_frames"]), default=1) or 1)


def _span(study: StudyData) -> str:
    """'first start – last end' of the study's runs (UTC), '' when unrecorded."""
    t = study.trials
    starts = sorted(s for s in t.get("started", []) if isinstance(s, str) and s)
    ends = sorted(s for s in t.get("ended", []) if isinstance(s, str) and s)
    if not starts:
        return ""
    first, last = starts[0], (ends[-1] if ends else "running")
    if last[:10] == first[:10]:  # same day: '2024-05-01 12:30 – 14:05 UTC'
        return f"{first.removesuffix(' UTC')} – {last[11:]}"
    return f"{first} – {last}"


def notes(studies: list[StudyData], tables: list[Table], provs: list[dict[str, Any]]) -> list[str]:
    """Plain statements a reader needs to read the numbers right."""
    out = [("Each cell is the mean ± sample standard deviation (ddof=1) over the completed seeds of a variant; "
            f"the seed count is in the n column. Δ is the difference of means against the baseline row, tested with "
            f"{TEST}, its p adjusted by Holm's method for the number of comparisons the table makes of that "
            f"metric (Holm 1979; {_count(tables)}): '~' marks an adjusted "
            "p ≥ 0.05 (not distinguishable from seed noise), and only a difference with adjusted p < 0.05 is "
            "coloured better/worse (summary.json keeps both p_welch and p_holm). With fewer than two seeds on "
            "either side the noise cannot be estimated: no test, no colour, and no 'best' in bold.")]
    if any(sum(r.baseline for r in t.rows) > 1 for t in tables):
        out.append("Several rows match the study's baseline (one per arm: another budget, patch size, mixer ...): "
                   "each row is compared with the baseline row that shares the most of its other settings, marked "
                   "(baseline) in the table and named in summary.json (compared_with), never across arms.")
    for m in (m for t in tables[:1] for m in t.metrics if m.kind == "quality"):
        if m.name in METRIC_NOTES:
            out.append(METRIC_NOTES[m.name])
        elif m.description:
            out.append(f"{m.title} ({m.name}): {m.description}.")
    for p in provs:
        if "cond-accuracy" in p["metrics"] and (line := classifier_note(p["study"], p["metrics"]["cond-accuracy"])):
            out.append(line)
        for m, f in p["metrics"].items():
            n = f.get("num_samples", [])
            if n:
                out.append(f"{p['study']}: {m} computed from {', '.join(n)} generated samples"
                           + (f" against reference statistics {', '.join(h[:12] for h in f['reference_hash'])}."
                              if f.get("reference_hash") else "."))
    if len(provs) > 1:
        for m in sorted({m for p in provs for m in p["metrics"]}):
            protos = {p["study"]: (tuple(p["metrics"].get(m, {}).get("num_samples", [])),
                                   tuple(p["metrics"].get(m, {}).get("reference_hash", []))) for p in provs}
            if len(set(protos.values())) > 1:
                out.append(f"Caution: the studies computed {m} with different sample counts or reference "
                           "statistics; their values are not directly comparable.")
    for s in studies:
        if (frames := _frames(s)) > 1:
            out.append(f"{s.name}: each sample is a video of {frames} frames: 'img' in the cost units (img/s, ms/img, "
                       "GFLOPs per image) counts videos, not frames.")
    devices = sorted({d for p in provs for d in p["devices"]})
    if any(m.kind == "cost" for t in tables for m in t.metrics):
        out.append("Cost columns (throughput, latency, memory) were measured on "
                   + (", ".join(devices) if devices else "an unrecorded device")
                   + "; compare them only within one device.")
    if any(m.name == "train_seconds_timed" for t in tables for m in t.metrics):
        out.append("Train time is the seconds inside the timed training steps (CUDA events on a GPU), the clock of "
                   "a gpu_seconds budget: every step but the first few of each run (at most 5; there compilation, "
                   "CUDA-graph capture and kernel autotuning happen), without checkpoints or in-training "
                   "evaluations, so a one-off compilation is not charged to whichever trial met it first. The "
                   "wall-clock seconds of the whole training loop are results.csv's metrics.train_seconds.")
    for p in provs:
        if len(per := p.get("trials_per_device", {})) > 1:
            out.append(f"Caution: {p['study']}'s completed trials ran on {len(per)} devices ("
                       + ", ".join(f"{d}: {n}" for d, n in per.items()) + "): a variant's cost cells (throughput, "
                       "latency, memory, time) may average trials of different cards; the quality metrics do not "
                       "depend on the card beyond floating-point differences.")
        failed = sum(v for k, v in p["trials"].items() if k not in ("completed", "missing"))
        missing = p["trials"].get("missing", 0)
        if failed:
            out.append(f"{p['study']}: {failed} trial(s) did not complete and are left out of the means "
                       "(listed with their reasons below).")
        if missing:
            out.append(f"{p['study']}: {missing} trial(s) of the study have no recorded run; the study is unfinished.")
        if p.get("resumed"):
            out.append(f"{p['study']}: resumed after an interruption (cost figures from the segment that finished "
                       f"each; 'resumed' in the n column): {', '.join(p['resumed'])}.")
        if p.get("superseded"):
            out.append(f"{p['study']}: {p['superseded']} trial(s) recorded under an earlier version of the study "
                       "file (another base setting or axis value) are left out: they ran a different configuration.")
        if p.get("dropped_peaks"):
            out.append(f"{p['study']}: peak memory is left out for {p['dropped_peaks']} trial(s) that ran with CUDA "
                       "graphs before their worker released memory between trials (it could include memory held "
                       "over from the worker's earlier trials, up to about 0.24 GB for each; fixed since).")
        for k, n in (p.get("sharing") or {}).items():
            out.append(f"{p['study']}: {n} of the completed trials ran with {k} trials side by side on one device "
                       f"(`--trials-per-gpu {k}`): their cost columns (throughput, latency, train time) are those of a "
                       "shared device, not of the trial alone; quality figures are unaffected.")
        if len(p["git_sha"]) > 1:
            out.append(f"{p['study']}: trials ran from {len(p['git_sha'])} different git commits.")
    return out
