"""Deep validation behind `harness validate`: load each dataset once and build each distinct model on `meta`."""

from __future__ import annotations

from typing import Any

import torch

from harness.model import build_model, build_sampler, build_transport
from plugins.errors import ConfigError, HarnessError
from plugins.specs import validated_options

__all__ = ["check_buildable", "model_signature"]


def model_signature(config: Any) -> tuple:
    """What determines a model's structure (trials that differ only in seed/lr share one build)."""
    c = config
    return (c.dataset.model_dump_json(), c.backbone.model_dump_json(), c.scan.name, c.conditioning.kind,
            c.conditioning.text_encoder)


def check_buildable(study: Any, trials: list, registries: Any) -> int:
    """Load every distinct dataset and build every distinct model (meta device). Returns the number built."""
    from harness.study import as_loaded, resolve_trial

    source = as_loaded(study).source
    datasets: dict[str, Any] = {}
    built: set[tuple] = set()
    for spec in trials:
        sig = model_signature(spec.config)
        if sig in built:
            continue
        entries = resolve_trial(spec, registries, source=source)
        c = spec.config
        dkey = c.dataset.model_dump_json()
        if dkey not in datasets:
            entry = entries["dataset"]
            options = validated_options(entry, c.dataset.options)
            options = _preview(options) if options is not None else None
            try:
                datasets[dkey] = entry.load(options)
            except HarnessError as exc:
                raise ConfigError(f"{source}: dataset {c.dataset.name!r}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - a plugin's bug, named with its plugin
                plugin = registries["datasets"].plugin_of(c.dataset.name)
                raise ConfigError(f"{source}: dataset {c.dataset.name!r} (plugin {plugin!r}) failed to load: "
                                  f"{type(exc).__name__}: {_first_line(exc)}") from None
        info = datasets[dkey].info
        try:
            build_model(c, entries, info, seed=spec.seed, device=torch.device("meta"))
        except HarnessError as exc:
            raise ConfigError(f"{source}: {spec.label}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the backbone's or scan's plugin rejected it, or has a bug
            plugins = f"plugin {registries['backbones'].plugin_of(c.backbone.name)!r}"
            if entries.get("scan") is not None:
                plugins += f"; scan {c.scan.name!r} from plugin {registries['scans'].plugin_of(c.scan.name)!r}"
            raise ConfigError(f"{source}: {spec.label}: cannot build backbone {c.backbone.name!r} ({plugins}): "
                              f"{_first_line(exc)}") from None
        built.add(sig)
    for spec in trials:                      # the metrics against the data, the sampler against its transport
        entries = resolve_trial(spec, registries, source=source)
        c = spec.config
        for m, metric in zip(c.eval.metrics, entries["metrics"]):
            _check_metric_data(f"{source}: {spec.label}: eval.metrics: {m!r}", metric, c.dataset.name,
                               datasets[c.dataset.model_dump_json()].info)
        try:
            build_sampler(spec.config, entries, build_transport(spec.config, entries))
        except HarnessError as exc:
            raise ConfigError(f"{source}: {spec.label}: {exc}") from None
    return len(built)


def _check_metric_data(where: str, metric: Any, dataset: str, info: Any) -> None:
    """A metric scores the dataset's kind of sample (an image metric on videos fails only after training)."""
    modality = getattr(metric, "modality", "any")
    frames = info.frames
    if modality == "video" and frames is None:
        raise ConfigError(f"{where} scores videos; dataset {dataset!r} is images")
    if modality == "image" and frames is not None:
        raise ConfigError(f"{where} scores images; dataset {dataset!r} is videos of {frames} frames "
                          "(a video metric scores them, e.g. frame-fd)")
    need = getattr(metric, "min_frames", 1)
    if frames is not None and frames < need:
        raise ConfigError(f"{where} needs videos of {need} frames or more; dataset {dataset!r} has {frames}")


#: validation loads a few items, not the dataset: its shapes and labels are what a model build needs
_PREVIEW = {"num_train": 8, "num_reference": 2}


def _preview(options: Any) -> Any:
    """Dataset options with the item counts a plugin offers (num_train, num_reference) cut to a few."""
    fields = type(options).model_fields
    return options.model_copy(update={k: v for k, v in _PREVIEW.items() if k in fields})


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
