"""Expanding a study into trials: axes blocks x seeds -> TrialSpecs (each with a stable key), or one search point."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from harness.labels import axis_text
from harness.study.load import LoadedStudy, as_loaded
from harness.study.schema import LAUNCH_KEYS, MAX_TRIALS, Study, TrialConfig, format_validation_error
from plugins.errors import ConfigError, suggest

__all__ = ["TrialSpec", "expand_trials", "keyed_dump", "trial_from_params"]


def keyed_dump(config: TrialConfig) -> dict[str, Any]:
    """config as JSON for trial keys and checkpoint hashes: the default mixer (mamba1, no options) is left out,
    so trials resolved before `backbone.mixer` existed keep their keys and checkpoints; so are the launch keys
    (train.devices, nodes, launcher, rdzv_*): one trial on any number of processes is the same trial (an axis over
    them still makes distinct keys through its params); and the CUDA-graph switches, which compute the same step."""
    out = config.model_dump(mode="json")
    if out["backbone"].get("mixer") == {"name": "mamba1"}:
        del out["backbone"]["mixer"]
    if out["train"].get("budget", 0) is None:   # no budget: train.steps, as before budgets existed
        del out["train"]["budget"]
    for key in LAUNCH_KEYS:
        del out["train"][key]
    # a speed switch that computes the same step (tests/harness/test_cuda_graph.py): not part of a trial's identity,
    # so switching it on resumes and keeps the trials already run
    out["train"].pop("cuda_graph", None)
    out["eval"].pop("cuda_graph", None)
    return out


@dataclass(frozen=True)
class TrialSpec:
    """One trial: its axis values (dotted key -> value), seed and the resolved configuration."""

    params: dict[str, Any]
    seed: int
    config: TrialConfig
    origin: dict[str, str] = field(default_factory=dict, compare=False)  # axis key -> 'axes[b].key[i]'

    @property
    def key(self) -> str:
        """Stable identifier of (params, seed, resolved config), used to run each combination exactly once.
        The config is part of it so that a preset (or an edited base) never reuses another setting's results."""
        blob = json.dumps({"params": self.params, "seed": self.seed, "config": keyed_dump(self.config)},
                          sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        vals = ", ".join(f"{k}={axis_text(v)}" for k, v in self.params.items())
        return f"{vals or 'base'} seed={self.seed}"


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if isinstance(nxt, str):  # `scan: zigzag-8` shorthand
            nxt = {"name": nxt}
        if not isinstance(nxt, dict):
            nxt = {}
        cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def _check_axis_key(source: str, where: str, key: str) -> None:
    parts = key.split(".")
    model: Any = TrialConfig
    for i, p in enumerate(parts):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ConfigError(f"{source}: {where}: {key!r} goes below a value")
        if p not in model.model_fields:
            extra_ok = model.model_config.get("extra") == "allow" and i == len(parts) - 1
            if extra_ok:
                return  # a component option, checked against the plugin later
            raise ConfigError(f"{source}: {where}: " + suggest(
                ".".join(parts[: i + 1]), [".".join(parts[:i] + [f]) for f in model.model_fields], what="axis key"))
        model = model.model_fields[p].annotation


def _config_with(base: TrialConfig, params: dict[str, Any], origin: dict[str, str], source: str) -> TrialConfig:
    raw = base.model_dump(mode="python", exclude_unset=False)
    for k, v in params.items():
        _set_dotted(raw, k, v)
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as err:
        e = err.errors()[0]
        dotted = ".".join(str(x) for x in e["loc"])
        for key, where in origin.items():
            if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
                got = f" (got {params[key]!r})"
                raise ConfigError(f"{source}: {where}: {e['msg']}{got}") from None
        raise ConfigError(format_validation_error(source, err, TrialConfig, prefix=("base",))) from None


def trial_from_params(study: Study | LoadedStudy, params: dict[str, Any], seed: int, *,
                      where: str = "search.space") -> TrialSpec:
    """The TrialSpec of one point (dotted key -> value) on top of the study's base, e.g. a sampled search point."""
    loaded = as_loaded(study)
    study, source = loaded.study, loaded.source
    origin = {k: f"{where}.{k}" for k in params}
    return TrialSpec(params=dict(params), seed=seed, config=_config_with(study.base, params, origin, source),
                     origin=origin)


def expand_trials(study: Study | LoadedStudy) -> list[TrialSpec]:
    """Axes blocks -> cartesian products (union over blocks, duplicates dropped) x seeds."""
    loaded = as_loaded(study)
    study, source = loaded.study, loaded.source
    combos: list[tuple[dict[str, Any], dict[str, str]]] = []
    for b, block in enumerate(study.axes or ({},)):
        for key, values in block.items():
            _check_axis_key(source, f"axes[{b}].{key}", key)
            if not values:
                raise ConfigError(f"{source}: axes[{b}].{key}: give at least one value")
            seen_values: dict[str, int] = {}
            for i, v in enumerate(values):
                j = seen_values.setdefault(json.dumps(v, sort_keys=True, default=str), i)
                if j != i:
                    raise ConfigError(f"{source}: axes[{b}].{key}[{i}]: {v!r} repeats axes[{b}].{key}[{j}]")
        n = math.prod(len(v) for v in block.values()) * len(study.seeds)
        if n > MAX_TRIALS:
            raise ConfigError(f"{source}: axes[{b}]: {n:,} trials (combinations x seeds); a study file is limited "
                              f"to {MAX_TRIALS:,}")
        keys = list(block)
        for idx in itertools.product(*(range(len(block[k])) for k in keys)):
            params = {k: block[k][i] for k, i in zip(keys, idx)}
            combos.append((params, {k: f"axes[{b}].{k}[{i}]" for k, i in zip(keys, idx)}))
    trials, seen = [], set()
    for params, origin in combos:
        config = _config_with(study.base, params, origin, source)
        for seed in study.seeds:
            spec = TrialSpec(params=params, seed=seed, config=config, origin=origin)
            if spec.key not in seen:
                seen.add(spec.key)
                trials.append(spec)
    return trials
