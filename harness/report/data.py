"""Load a finished study (runs/<study>/ or a tracking URI) into one tidy table: one row per trial.

Columns of `StudyData.trials` (MLflow's own `search_runs` frame uses the same prefixes):
`study, trial_key, label, variant, seed, status, resumed_from_step, failure, run_id, started, ended`, then `axis.<key>`
(typed axis values), `metrics.<name>` (final values; see report/caveats.py) and `params.<key>` (as logged).

What is read, in the layout of docs/ARCHITECTURE.md ("Study output folder and tracking layout"):
`study.yaml` (axes, seeds, baseline, objective), the MLflow trial runs (tags, params, final metrics, metric
histories), and per trial `trials/<key>/{results.json, provenance.json, metrics_meta.json, samples.png}` with
the run's artifacts as a fallback. `provenance.json` is read for `git_sha`, `versions` (package -> version),
`device`, `precision` and `mixer_backend`; `metrics_meta.json` is `{metric: {"meta.<field>": value}}`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from harness.labels import axis_text, short_key, variant_label
from harness.report.caveats import drop_held_over_peaks
from harness.study import read_yaml
from harness.tracking import PROXY, check_sqlite_store
from plugins.errors import ConfigError, HarnessError

__all__ = ["StudyData", "axis_text", "load_study_data", "short_key", "variant_label"]

#: metric histories fetched per run (plus every eval metric of the study)
HISTORY_METRICS = ("train_loss",)
_NOT_METRICS = {"seed", "resumed_from_step", "trial_key", "label", "params", "status", "failure"}
_STATUS_FROM_MLFLOW = {"FINISHED": "completed", "FAILED": "failed", "KILLED": "interrupted", "RUNNING": "running",
                       "SCHEDULED": "running"}


@dataclass
class StudyData:
    """One study as the report sees it."""

    name: str
    folder: Path | None
    description: str = ""
    preset: str | None = None
    blocks: list[list[str]] = field(default_factory=list)        # axes blocks: the axis keys of each
    axis_values: dict[str, list[Any]] = field(default_factory=dict)  # key -> values in study order
    seeds: list[int] = field(default_factory=list)
    baseline: dict[str, Any] | None = None
    objective: str = "fd-effnet"
    objective_direction: str = "minimize"
    eval_metrics: list[str] = field(default_factory=list)
    search: bool = False
    trials: pd.DataFrame = field(default_factory=pd.DataFrame)
    histories: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)  # run -> metric
    during: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)  # run -> during/* points
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)   # trial_key -> provenance.json
    metrics_meta: dict[str, dict[str, Any]] = field(default_factory=dict)  # trial_key -> metrics_meta.json
    samples: dict[str, Path] = field(default_factory=dict)               # trial_key -> samples image
    sample_captions: dict[str, Path | None] = field(default_factory=dict)  # trial_key -> samples.json (prompts)
    real: Path | None = None                  # a grid of real reference images (one trial's real.png)
    token_grid: tuple[int, int, int] | None = None   # (frames, H, W) tokens of the trials, when known
    tracking_uri: str | None = None
    dropped_peaks: int = 0                    # trials whose peak memory was blanked (data.held_over_peak)
    superseded: int = 0                       # trials of an earlier version of the study file, left out


def _coerce(text: Any, known: list[Any]) -> Any:
    """An MLflow param string back to the study's typed axis value."""
    if not isinstance(text, str):
        return text
    for v in known:
        if text == str(v) or text == json.dumps(v):
            return v
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_study_folder(p: Path) -> bool:
    return p.is_dir() and ((p / "study.yaml").exists() or (p / "mlflow.db").exists() or (p / "trials").is_dir())


def _resolve_folder(study: str | Path, runs_dir: str | Path) -> Path | None:
    """The study folder `study` names (itself, or runs_dir/study); None when neither is one."""
    for p in (Path(study), Path(runs_dir) / str(study)):
        if _is_study_folder(p):
            return p.resolve()
    return None


def _not_a_study(study: str | Path, runs_dir: str | Path) -> str:
    """Why `study` names no study folder, in one line."""
    p = Path(study)
    if p.is_file():
        from harness.study import load_study
        name = load_study(p).study.name      # a broken study file: its own error
        return (f"{p} is a study file; give its study folder ({Path(runs_dir) / name}; a preset's is "
                f"{Path(runs_dir) / name}-<preset>) or an exported store")
    if p.is_dir():
        return f"{p}: not a study folder (no study.yaml, mlflow.db or trials/ in it); give one written by `harness run`"
    return f"no study folder {Path(runs_dir) / str(study)} (give --runs DIR or --tracking-uri URI)"


def _effective_name(raw: dict[str, Any]) -> str:
    """The study's name as run: a preset run is named `<name>-<preset>` (see harness.study.parse_study)."""
    from harness.study import parse_study

    raw = dict(raw)
    preset = raw.pop("preset", None)
    if preset is None:
        return raw["name"]
    try:
        return parse_study(raw, preset=preset).study.name
    except HarnessError:
        return raw["name"]


def _study_spec(data: StudyData, raw: dict[str, Any], source: str) -> list:
    """Fill axes, seeds, baseline and objective from the study file as run; returns its trials (TrialSpec)."""
    from harness.study import expand_trials, parse_study

    raw = dict(raw)
    preset = raw.pop("preset", None)
    try:
        loaded = parse_study(raw, source=source, preset=preset)
    except ConfigError:
        loaded = parse_study(raw, source=source)  # the preset is already merged into the file as run
    study = loaded.study
    data.name = study.name
    data.description = study.description
    data.preset = preset
    data.seeds = list(study.seeds)
    data.baseline = dict(study.baseline) if study.baseline else None
    data.objective, data.objective_direction = study.objective.metric, study.objective.direction
    data.eval_metrics = list(study.base.eval.metrics)
    for block in study.axes:
        data.blocks.append(list(block))
        for k, vals in block.items():
            known = data.axis_values.setdefault(k, [])
            known.extend(v for v in vals if v not in known)
            for v in vals:  # axes blocks may change eval.metrics
                if k == "eval.metrics" and isinstance(v, list | tuple):
                    data.eval_metrics.extend(m for m in v if m not in data.eval_metrics)
    if study.search is not None:
        data.search = True
        data.blocks = [sorted(study.search.space)]
        return []
    try:
        return expand_trials(loaded)
    except HarnessError:
        return []


def _client(uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars per downloaded file
    from mlflow.tracking import MlflowClient
    check_sqlite_store(uri)
    return MlflowClient(tracking_uri=uri)


def _trial_runs(client, name: str) -> tuple[list, Any]:
    """All trial runs of the study's experiment (every page) and the latest parent run."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        raise HarnessError(f"no MLflow experiment named {name!r} in the tracking store")
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    trials = [r for r in runs if r.data.tags.get("harness.kind") == "trial"]
    parents = sorted((r for r in runs if r.data.tags.get("harness.kind") == "study"), key=lambda r: r.info.start_time)
    return trials, (parents[-1] if parents else None)


def _artifact(client, run_id: str, path: str, folder: Path | None, tmp: Path) -> Path | None:
    """trials/<key>/<path> if the runner wrote it, else the run's artifact (downloaded to tmp)."""
    if folder is not None and (folder / path).exists():
        return folder / path
    if client is None or run_id is None:
        return None
    try:
        uri, store = client.get_run(run_id).info.artifact_uri, client.tracking_uri
        if uri.startswith(PROXY) and store.startswith("sqlite:///"):   # harness's own store: <folder>/mlartifacts
            local = Path(store[len("sqlite:///"):]).parent / "mlartifacts" / uri[len(PROXY):].lstrip("/") / path
            return local if local.is_file() else None
        names = {a.path for a in client.list_artifacts(run_id)}
        if path not in names:
            return None
        dst = tmp / run_id
        dst.mkdir(parents=True, exist_ok=True)
        return Path(client.download_artifacts(run_id, path, str(dst)))
    except Exception:  # noqa: BLE001 - an unreachable artifact store leaves the section out, not the report
        return None


def _token_grid(spec: Any) -> tuple[int, int, int] | None:
    """(frames, H, W) tokens a trial's model sees: dataset resolution / patch size (/ 8 in VAE latent mode)."""
    opts = spec.config.dataset.options
    res, patch = opts.get("resolution"), spec.config.backbone.patch_size
    if not isinstance(res, int):
        return None
    side = res // (8 if opts.get("vae_path") else 1) // patch
    frames = opts.get("frames")
    return (frames if isinstance(frames, int) else 1, side, side) if side > 0 else None


def _pick(runs: list) -> Any:
    """Several runs of one trial key (retries): a completed one first, then the latest."""
    rank = {"completed": 0, "pruned": 1, "failed": 2, "interrupted": 3}
    return min(runs, key=lambda r: (rank.get(r.data.tags.get("harness.status", ""), 3), -r.info.start_time))


def load_study_data(study: str | Path, *, runs_dir: str | Path = "runs", tracking_uri: str | None = None,
                    cache_dir: Path | None = None) -> StudyData:
    """A study folder or name (looked up under runs_dir), or a name in `tracking_uri` -> StudyData."""
    folder = _resolve_folder(study, runs_dir)
    name = folder.name if folder is not None else str(study)
    if folder is None and tracking_uri is None:
        raise HarnessError(_not_a_study(study, runs_dir))
    data = StudyData(name=name, folder=folder)
    tmp = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(prefix="harness-report-"))
    uri = tracking_uri
    if uri is None and folder is not None and (folder / "mlflow.db").exists():
        uri = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
    data.tracking_uri = uri
    client = _client(uri) if uri is not None else None

    raw = None
    if folder is not None and (folder / "study.yaml").exists():
        raw = read_yaml((folder / "study.yaml").read_text(), str(folder / "study.yaml"))  # shared folders: bounded
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            data.name = _effective_name(raw)  # the experiment is named after the study, whatever the folder is called
    runs, parent = _trial_runs(client, data.name) if client is not None else ([], None)
    if raw is None and parent is not None:
        path = _artifact(client, parent.info.run_id, "study.yaml", None, tmp)
        raw = read_yaml(path.read_text(), f"{data.name}/study.yaml (MLflow artifact)") if path else None
    specs = {}
    if raw is not None:
        source = str(folder / "study.yaml") if folder else f"{data.name}/study.yaml"
        specs = {s.key: s for s in _study_spec(data, raw, source)}
        data.token_grid = next(filter(None, map(_token_grid, specs.values())), None)

    by_key: dict[str, list] = {}
    for r in runs:
        by_key.setdefault(r.data.tags.get("harness.trial_key", r.info.run_id), []).append(r)
    rows = [_row_from_run(data, key, _pick(rs), client, tmp) for key, rs in sorted(by_key.items())]
    rows += _rows_from_folders(data, set(by_key), specs)
    if specs:   # an edited study file (another base or axis value) makes new trial keys: the old ones ran otherwise
        data.superseded = sum(1 for row in rows if row["trial_key"] not in specs)
        rows = [row for row in rows if row["trial_key"] in specs]
    if not data.blocks:  # no study file: one block per set of logged axis keys (DiT logs no scan), widest first
        found = {tuple(sorted(k[5:] for k in row if k.startswith("axis."))) for row in rows} or {()}
        data.blocks = [list(b) for b in sorted(found, key=lambda b: (-len(b), b))]
    seen = {row["trial_key"] for row in rows}
    rows += [{"trial_key": s.key, "label": s.label, "seed": s.seed, "status": "missing", "failure": "no run recorded",
              "run_id": "", "resumed_from_step": 0, **{f"axis.{k}": v for k, v in s.params.items()}}
             for s in specs.values() if s.key not in seen]
    data.trials = _frame(data, rows)
    data.dropped_peaks = drop_held_over_peaks(data.trials, data.provenance)
    return data


def _row_from_run(data: StudyData, key: str, run, client, tmp: Path) -> dict[str, Any]:
    tags, params = run.data.tags, run.data.params
    axes = {k[5:]: _coerce(v, data.axis_values.get(k[5:], [])) for k, v in params.items() if k.startswith("axis.")}
    seed = _coerce(params.get("seed", tags.get("harness.seed")), [])
    status = tags.get("harness.status") or _STATUS_FROM_MLFLOW.get(run.info.status, run.info.status.lower())
    row: dict[str, Any] = {"trial_key": key, "label": tags.get("harness.label", ""), "seed": seed,
                           "status": status, "failure": tags.get("harness.failure", ""), "run_id": run.info.run_id}
    row["started"], row["ended"] = _iso(run.info.start_time), _iso(run.info.end_time)
    row["resumed_from_step"] = int(tags.get("harness.resumed_from_step", 0) or 0)
    row.update({f"axis.{k}": v for k, v in axes.items()})
    row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
    row.update({f"params.{k}": v for k, v in params.items()})
    folder = data.folder / "trials" / key if data.folder is not None else None
    results = _read_json(folder / "results.json") if folder is not None and (folder / "results.json").exists() else None
    for k, v in _flat_metrics(results).items():
        row.setdefault(f"metrics.{k}", v)
    for fname, store in (("provenance.json", data.provenance), ("metrics_meta.json", data.metrics_meta)):
        path = _artifact(client, run.info.run_id, fname, folder, tmp)
        if path is not None and isinstance(doc := _read_json(path), dict):
            store[key] = doc
    grids = (p for f in ("samples.png", "samples.gif") if (p := _artifact(client, run.info.run_id, f, folder, tmp)))
    if (grid := next(grids, None)) is not None:
        data.samples[key] = grid
    data.sample_captions[key] = _artifact(client, run.info.run_id, "samples.json", folder, tmp)
    if data.real is None:
        data.real = _artifact(client, run.info.run_id, "real.png", folder, tmp)
    wanted = sorted(set(HISTORY_METRICS) | set(data.eval_metrics) | {data.objective})
    hist = {}
    for m in wanted:
        if m in run.data.metrics:
            pts = sorted((h.step, h.value) for h in client.get_metric_history(run.info.run_id, m))
            if len(pts) > 1:
                hist[m] = pts
    data.histories[run.info.run_id] = hist
    data.during[run.info.run_id] = {m: sorted((h.step, h.value) for h in client.get_metric_history(run.info.run_id, m))
                                    for m in run.data.metrics if m.startswith("during/")}   # eval.every points
    return row


def _iso(ms: int | None) -> str:
    """MLflow milliseconds -> '2024-05-01 12:30 UTC' ('' when unset)."""
    if not ms:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _flat_metrics(results: Any) -> dict[str, float]:
    """results.json: {metric: number} (or under 'metrics'); other fields are ignored."""
    if not isinstance(results, dict):
        return {}
    src = results.get("metrics") if isinstance(results.get("metrics"), dict) else results
    return {k: float(v) for k, v in src.items() if isinstance(v, int | float) and not isinstance(v, bool)
            and not k.startswith("meta.") and k not in _NOT_METRICS}


def _rows_from_folders(data: StudyData, seen: set[str], specs: dict[str, Any]) -> list[dict[str, Any]]:
    """Trials that wrote results.json but have no MLflow run (e.g. tracking was off); axis values and seed
    come from results.json's 'params'/'seed' or else from the study's own trial of that key."""
    rows = []
    if data.folder is None or not (data.folder / "trials").is_dir():
        return rows
    for d in sorted(p for p in (data.folder / "trials").iterdir() if p.is_dir() and p.name not in seen):
        results = _read_json(d / "results.json")
        if not isinstance(results, dict):
            continue
        spec = specs.get(d.name)
        axes = results.get("params") if isinstance(results.get("params"), dict) else (spec.params if spec else {})
        seed = results.get("seed", spec.seed if spec else None)
        row = {"trial_key": d.name, "label": results.get("label", spec.label if spec else ""), "seed": seed,
               "status": results.get("status", "completed"), "failure": results.get("failure", ""), "run_id": "",
               "resumed_from_step": int(results.get("resumed_from_step", 0) or 0)}
        row.update({f"axis.{k}": v for k, v in axes.items()})
        row.update({f"metrics.{k}": v for k, v in _flat_metrics(results).items()})
        for fname, store in (("provenance.json", data.provenance), ("metrics_meta.json", data.metrics_meta)):
            if isinstance(doc := _read_json(d / fname), dict):
                store[d.name] = doc
        if (d / "samples.png").exists():
            data.samples[d.name] = d / "samples.png"
            data.sample_captions[d.name] = d / "samples.json"      # read if there (text prompts)
        if data.real is None and (d / "real.png").exists():
            data.real = d / "real.png"
        rows.append(row)
    return rows


def _order(value: Any, known: list[Any]) -> tuple:
    return (0, known.index(value), "") if value in known else (1, 0, str(value))


def _frame(data: StudyData, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> the tidy frame, with a stable row and column order."""
    for row in rows:
        axes = {k[5:]: row[k] for k in sorted(row) if k.startswith("axis.")}
        ordered = {k: axes[k] for b in data.blocks for k in b if k in axes}
        ordered.update({k: v for k, v in axes.items() if k not in ordered})
        row["variant"] = variant_label(ordered)
        row["study"] = data.name
        row.setdefault("label", "")
        if not row["label"]:
            row["label"] = f"{variant_label(ordered)} seed={row['seed']}"
    first = ["study", "trial_key", "label", "variant", "seed", "status", "resumed_from_step", "failure",
             "run_id", "started", "ended"]
    cols = set().union(*(r.keys() for r in rows)) if rows else set(first)
    axis_cols = [f"axis.{k}" for b in data.blocks for k in b if f"axis.{k}" in cols]
    axis_cols = list(dict.fromkeys(axis_cols + sorted(c for c in cols if c.startswith("axis."))))
    rest = sorted(c for c in cols if c not in first and c not in axis_cols)
    frame = pd.DataFrame(rows, columns=first + axis_cols + rest)

    def sort_key(row: pd.Series) -> tuple:
        axes = tuple(_order(row[c], data.axis_values.get(c[5:], [])) if _present(row[c]) else (2, 0, "")
                     for c in axis_cols)
        return (*axes, _order(row["seed"], data.seeds), row["trial_key"])

    if len(frame):
        frame = frame.iloc[sorted(range(len(frame)), key=lambda i: sort_key(frame.iloc[i]))].reset_index(drop=True)
    return frame


def _present(v: Any) -> bool:
    return not (v is None or (isinstance(v, float) and math.isnan(v)))
