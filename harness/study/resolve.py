"""Plugin resolution, what `harness validate` checks before any GPU work: every name a trial uses is registered,
every option validates against its plugin, objective, baseline and sample counts make sense."""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from harness.study.expand import TrialSpec, _check_axis_key, expand_trials
from harness.study.load import LoadedStudy, as_loaded
from harness.study.schema import Study, format_validation_error
from plugins.errors import ConfigError, HarnessError, suggest

__all__ = ["resolve_trial", "validate_study"]


def _where(spec: TrialSpec, key: str, default: str) -> str:
    return spec.origin.get(key, default)


def _non_finite(value: Any, path: str = "") -> str | None:
    """The dotted path of the first NaN or infinite float in nested options, else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list | tuple) else ()
    for k, v in items:
        found = _non_finite(v, f"{path}[{k}]" if isinstance(k, int) else f"{path}.{k}" if path else str(k))
        if found is not None:
            return found
    return None


def _check_options(source: str, where: str, entry: Any, options: dict[str, Any]) -> None:
    bad = _non_finite(options)
    if bad is not None:   # plugins' option models may allow inf; a study file never needs it
        raise ConfigError(f"{source}: {where}.{bad}: Input should be a finite number")
    model = getattr(entry, "options", None)
    if model is None:
        if options:
            raise ConfigError(f"{source}: {where}: {entry.name!r} takes no options, got {sorted(options)}")
        return
    try:
        model.model_validate(options)
    except ValidationError as err:
        raise ConfigError(format_validation_error(source, err, model, prefix=(where,))) from None


def resolve_trial(spec: TrialSpec, registries: Any, *, source: str = "<study>") -> dict[str, Any]:
    """Look up every plugin a trial names and validate its options. Returns kind -> entry."""
    c, p = spec.config, spec

    def get(kind: str, name: str, key: str) -> Any:
        try:
            return registries[kind].get(name)
        except HarnessError as exc:
            raise ConfigError(f"{source}: {_where(p, key, 'base.' + key)}: {exc}") from None

    out = {
        "dataset": get("datasets", c.dataset.name, "dataset.name"),
        "backbone": get("backbones", c.backbone.name, "backbone.name"),
        "interpolant": get("interpolants", c.interpolant.path, "interpolant.path"),
        "sampler": get("samplers", c.sampler.name, "sampler.name"),
        "metrics": [get("metrics", m, "eval.metrics") for m in c.eval.metrics],
    }
    _check_options(source, _where(p, "dataset.name", "base.dataset"), out["dataset"], c.dataset.options)
    bb_opts = c.backbone.options
    _check_options(source, _where(p, "backbone.name", "base.backbone"), out["backbone"], bb_opts)
    sampler_opts = c.sampler.options
    _check_options(source, _where(p, "sampler.name", "base.sampler"), out["sampler"], sampler_opts)
    if getattr(out["backbone"], "uses_mixer", False):
        key = "backbone.mixer" if "backbone.mixer" in p.origin else "backbone.mixer.name"
        out["mixer"] = get("mixers", c.backbone.mixer.name, key)
        _check_options(source, _where(p, key, "base.backbone.mixer"), out["mixer"], c.backbone.mixer.options)
    else:
        out["mixer"] = None
    if getattr(out["backbone"], "uses_scan", True):
        out["scan"] = get("scans", c.scan.name, "scan.name")
    else:
        out["scan"] = None
    if c.conditioning.kind == "text":
        out["text_encoder"] = get("text-encoders", c.conditioning.text_encoder, "conditioning.text_encoder")
        _check_options(source, "base.conditioning.text_encoder_options", out["text_encoder"],
                       c.conditioning.text_encoder_options)
    for m, entry in zip(c.eval.metrics, out["metrics"]):
        _check_options(source, f"base.eval.metric_options.{m}", entry, c.eval.metric_options.get(m, {}))
    for m in c.eval.metric_options:
        if m not in c.eval.metrics:
            raise ConfigError(f"{source}: base.eval.metric_options.{m}: "
                              + suggest(m, c.eval.metrics, what="metric (not in eval.metrics)"))
    return out


def _check_samples(source: str, trials: list[TrialSpec], registries: Any) -> None:
    """eval.num_samples (and intermediate_samples with eval.every) reach every metric's min_samples."""
    for spec in trials:
        e = spec.config.eval
        for m in e.metrics:
            need = getattr(registries["metrics"].get(m), "min_samples", 1)
            for key, n in (("num_samples", e.num_samples), ("intermediate_samples", e.intermediate_samples)):
                if key == "intermediate_samples" and e.every is None:
                    continue
                if n < need:
                    where = _where(spec, f"eval.{key}", f"base.eval.{key}")
                    raise ConfigError(f"{source}: {where}: metric {m!r} needs at least {need} samples, got {n}")


def validate_study(study: Study | LoadedStudy, registries: Any) -> list[TrialSpec]:
    """Expand and resolve every trial; checks objective and baseline keys. Raises ConfigError."""
    loaded = as_loaded(study)
    study, source = loaded.study, loaded.source
    trials = expand_trials(loaded)
    for spec in trials:
        resolve_trial(spec, registries, source=source)
    known_metrics = set(study.base.eval.metrics) | {m for s in trials for m in s.config.eval.metrics}
    cost_metrics = {"train_loss", "params_m", "gflops", "train_images_per_s", "sample_ms_per_image",
                    "peak_memory_gb", "nfe"}
    if study.objective.metric not in known_metrics | cost_metrics:
        raise ConfigError(f"{source}: objective.metric: " + suggest(
            study.objective.metric, sorted(known_metrics | cost_metrics), what="metric"))
    for i, con in enumerate(study.objective.constraints):
        if con.metric not in known_metrics | cost_metrics:
            raise ConfigError(f"{source}: objective.constraints[{i}].metric: " + suggest(
                con.metric, sorted(known_metrics | cost_metrics), what="metric"))
    if study.baseline:
        axis_keys = {k for block in study.axes for k in block}
        for k, v in study.baseline.items():
            if k not in axis_keys:
                raise ConfigError(f"{source}: baseline.{k}: " + suggest(k, axis_keys, what="axis key"))
            values = [x for block in study.axes for x in block.get(k, ())]
            if v not in values:
                raise ConfigError(f"{source}: baseline.{k}: {v!r} is none of the axis values {list(values)}")
    _check_samples(source, trials, registries)
    if study.search is not None and len(study.axes) > 1:
        raise ConfigError(f"{source}: axes: a search study takes one axes block (its values become categorical "
                          f"choices), got {len(study.axes)}")
    if study.search is not None:
        for k in study.search.space:
            _check_axis_key(source, f"search.space.{k}", k)
    return trials
