"""Deep validation behind `harness validate`: load each dataset once and build each distinct model on `meta`."""

from __future__ import annotations

import functools
from typing import Any

import torch

from plugins.errors import ConfigError, HarnessError

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
            options = _preview(entry.options.model_validate(c.dataset.options)) if entry.options else None
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
    return len(built)


#: validation loads a few items, not the dataset: its shapes and labels are what a model build needs
_PREVIEW = {"num_train": 8, "num_reference": 2}


def _preview(options: Any) -> Any:
    """Dataset options with the item counts a plugin offers (num_train, num_reference) cut to a few."""
    fields = type(options).model_fields
    return options.model_copy(update={k: v for k, v in _PREVIEW.items() if k in fields})


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def build_model(config: Any, entries: dict[str, Any], info: Any, *, seed: int, device: torch.device,
                dtype: torch.dtype | None = None, context_dim: int | None = None) -> torch.nn.Module:
    """The one place a trial's backbone is built from its config (used by validate and by trials).
    context_dim: the built text encoder's width (trials pass it; validate reads text_encoder_options.dim)."""
    c = config
    scan = None
    if entries.get("scan") is not None:
        scan_seed = c.scan.seed if c.scan.seed is not None else seed
        scan = entries["scan"].build(seed=scan_seed)
        modality = getattr(entries["scan"], "modality", "any")
        if modality == "video" and info.frames is None:
            raise ConfigError(f"scan {c.scan.name!r} needs video data; dataset {info.name!r} is images")
    num_classes = info.num_classes if c.conditioning.kind == "class" else None
    if c.conditioning.kind == "class" and not num_classes:
        raise ConfigError(f"conditioning.kind=class but dataset {info.name!r} has no labels")
    if c.conditioning.kind == "text":
        if not info.captions:
            raise ConfigError(f"conditioning.kind=text but dataset {info.name!r} has no captions")
        if context_dim is None:
            text_entry = entries["text_encoder"]
            opts = c.conditioning.text_encoder_options
            context_dim = (text_entry.options.model_validate(opts).dim if text_entry.options is not None
                           else opts.get("dim"))
    options = dict(c.backbone.options)
    entry = entries["backbone"]
    if entry.options is not None:
        options = entry.options.model_validate(options).model_dump()
    # parameter init drawn from a generator seeded by the trial seed: the same seed builds the same weights
    generator = torch.Generator().manual_seed(seed) if torch.device(device).type == "cpu" else None
    extra = {"generator": generator} if generator is not None else {}
    if entries.get("mixer") is not None:
        mixer = entries["mixer"]
        mixer_opts = mixer.options.model_validate(c.backbone.mixer.options).model_dump() if mixer.options else {}
        extra["mixer"] = functools.partial(mixer.build, **mixer_opts)
    return entry.build(size=c.backbone.size, input_shape=info.shape, patch_size=c.backbone.patch_size, scan=scan,
                       num_classes=num_classes, context_dim=context_dim, pos_embed=c.backbone.pos_embed,
                       mixer_backend=c.backbone.mixer_backend, device=device, dtype=dtype, **extra, **options)
