"""Study files: YAML -> preset merged -> frozen, validated schema -> the list of trials.

A study names a base trial configuration and the axes to sweep:

    name: scan_ablation
    base:                      # one TrialConfig; every key has a default
      dataset: {name: fashion-mnist, resolution: 32}
      backbone: {name: zigma, size: S, patch_size: 2}
      scan: zigzag-8
      train: {steps: 4000, batch_size: 128}
    axes:                      # a mapping (one grid) or a list of mappings (union of grids: conditional ablations)
      scan.name: [sweep-1, zigzag-1, zigzag-8]
    seeds: [0, 1, 2]           # every combination runs once per seed
    presets:
      smoke: {base: {dataset: {name: digits}, train: {steps: 50}}, seeds: [0]}

Every error names the file and the dotted key and suggests near matches.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.budget import BudgetConfig
from plugins.errors import ConfigError, HarnessError, suggest

__all__ = [
    "Study", "TrialConfig", "TrialSpec", "keyed_dump", "load_study", "parse_study", "read_yaml", "expand_trials",
    "trial_from_params",
    "resolve_trial",
    "validate_study", "format_validation_error",
]


MAX_SEED = 2**31 - 1               # seeds are 31-bit (seed_for masks to 31 bits; samplers take 32-bit seeds)
MAX_LIST = 1000                    # seeds, axis values, axes blocks: larger lists are mistakes
MAX_TRIALS = 10_000                # combinations x seeds of one study file
MAX_NAME = 100                     # a study name is a folder, an Optuna study and an MLflow experiment

_Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _WithOptions(BaseModel):
    """A component reference: `name` plus that component's own options (validated against its plugin)."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class DatasetConfig(_WithOptions):
    name: str = "digits"                      # registry key of a dataset plugin


class MixerConfig(_WithOptions):
    name: str = "mamba1"                      # registry key of a token mixer (`harness ls mixers`)


class BackboneConfig(_WithOptions):
    name: str = "zigma"                       # zigma | vim | dit | a plugin's
    mixer: MixerConfig = MixerConfig()        # zigma / vim: the token mixer and its options (ignored by dit)
    size: str = "tiny"                        # a preset of zigma.backbones.SIZES
    patch_size: int = Field(2, ge=1)
    pos_embed: Literal["none", "sincos", "learned"] = "learned"
    mixer_backend: Literal["auto", "fused", "reference"] = "auto"


class ScanConfig(_Strict):
    name: str = "zigzag-8"                    # registry key of a scan scheme
    seed: _Seed | None = None                 # for random scans; None -> the trial seed

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class InterpolantConfig(_Strict):
    path: str = "linear"                      # linear | gvp | vp (registry key)
    prediction: Literal["velocity", "noise", "score"] = "velocity"
    loss_weight: Literal["none", "velocity", "likelihood"] = "none"
    time_sampler: Literal["uniform", "logit-normal"] = "uniform"
    train_eps: float | None = None            # None -> the official trimming rule for path x prediction
    sample_eps: float | None = None


class SamplerConfig(_WithOptions):
    name: str = "euler"                       # euler | heun | dopri5 | euler-maruyama | sde-heun
    cfg_scale: float = Field(1.0, ge=0.0)     # classifier-free guidance; 1.0 = off


class ConditioningConfig(_Strict):
    kind: Literal["none", "class", "text"] = "none"
    label_dropout: float = Field(0.1, ge=0.0, le=1.0)   # probability of the null label/caption (enables CFG)
    text_encoder: str = "token-embedding"
    text_encoder_options: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(_Strict):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0)
    ema_decay: float = Field(0.9999, ge=0.0, lt=1.0)
    ema_warmup: bool = True                   # decay ramps as min(decay, (1+n)/(10+n)); False = official (from step 0)
    grad_clip: float | None = Field(2.0, gt=0)  # applied BEFORE the optimiser step (the official code clips after it)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"   # auto: bf16 autocast on CUDA, fp32 on CPU
    checkpoint_every: int = Field(500, ge=1)
    log_every: int = Field(25, ge=1)
    num_workers: int = Field(0, ge=0)
    compile: bool | Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = False
    # torch.compile of the model in the training step: false = eager; true = mode "default"; or the mode
    data_on_device: Literal["off", "auto", "on"] = "off"   # whole training set on the device, batches cut there
    # by the same seeded permutation (no DataLoader); auto: on a CUDA device when it takes < 1/4 of free memory
    checkpoint_async: bool = False            # write checkpoints from a background thread (a CPU copy is taken)
    log_buffer: int = Field(1, ge=1)          # training log calls kept before one MLflow log_batch (1: each at once);
    # whatever is kept is sent when the trial ends, however it ends
    max_memory_gb: float | None = Field(None, gt=0)  # a trial above this peak memory fails with the reason
    budget: BudgetConfig | None = None        # {kind: steps|images|gpu_seconds|flops, value}; None = train.steps
    # steps; for the other kinds train.steps is a ceiling (harness/budget.py says how each is counted and stopped)


class EvalConfig(_Strict):
    num_samples: int = Field(1000, ge=1)
    batch_size: int = Field(100, ge=1)
    metrics: tuple[str, ...] = ("fd-effnet",)
    metric_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    every: int | float | None = Field(None, gt=0)  # intermediate evaluation (and pruning) every N units of the
    # training budget (steps by default; images, seconds or FLOPs with train.budget), on intermediate_samples
    intermediate_samples: int = Field(200, ge=1)
    cost: bool = True                         # params, GFLOPs, throughput, latency, peak memory
    cost_iters: int = Field(5, ge=1)
    grid_samples: int = Field(64, ge=0)       # sample grid logged as an image
    compile: bool | Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = False
    # torch.compile of the sampler's model call (EMA network), like train.compile


class TrialConfig(_Strict):
    """Everything one trial needs. Every field has a commented default."""

    dataset: DatasetConfig = DatasetConfig()
    backbone: BackboneConfig = BackboneConfig()
    scan: ScanConfig = ScanConfig()
    interpolant: InterpolantConfig = InterpolantConfig()
    sampler: SamplerConfig = SamplerConfig()
    conditioning: ConditioningConfig = ConditioningConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()


class Constraint(_Strict):
    metric: str
    max: float                                # feasible when metric <= max (Optuna: value - max <= 0)


class Objective(_Strict):
    metric: str = "fd-effnet"
    direction: Literal["minimize", "maximize"] = "minimize"
    constraints: tuple[Constraint, ...] = ()
    prune: bool = False                       # median pruning on the intermediate metric (needs eval.every)


class SearchParam(_Strict):
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SearchParam:
        ranged = self.low is not None and self.high is not None
        if ranged == (self.choices is not None):
            raise ValueError("give either low and high, or choices")
        if ranged and self.low >= self.high:  # type: ignore[operator]
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class Search(_Strict):
    space: dict[str, SearchParam]
    n_trials: int = Field(20, ge=1)
    sampler: Literal["tpe", "random", "gp"] = "tpe"


class Study(_Strict):
    name: str
    description: str = ""
    base: TrialConfig = TrialConfig()
    axes: tuple[dict[str, Annotated[tuple[Any, ...], Field(max_length=MAX_LIST)]], ...] = Field(
        (), max_length=MAX_LIST)
    seeds: tuple[_Seed, ...] = Field((0,), max_length=MAX_LIST)
    search: Search | None = None
    objective: Objective = Objective()
    baseline: dict[str, Any] | None = None    # the axis values reports compare against, e.g. {scan.name: sweep-1}

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError("use letters, digits, '-', '_' and '.' only")
        if len(v) > MAX_NAME:
            raise ValueError(f"at most {MAX_NAME} characters (it names a folder), got {len(v)}")
        return v

    @field_validator("axes", mode="before")
    @classmethod
    def _axes_blocks(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("give at least one seed")
        if len(set(v)) != len(v):
            raise ValueError("seeds repeat")
        return v


# ---------------------------------------------------------------------------------------------------------------
# errors


def _loc(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "(top level)"


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names valid at `loc` (for 'did you mean')."""
    cur: Any = model
    for p in loc:
        if isinstance(p, int) or not (isinstance(cur, type) and issubclass(cur, BaseModel)):
            return []
        field = cur.model_fields.get(p)
        if field is None:
            return []
        cur = field.annotation
    if isinstance(cur, type) and issubclass(cur, BaseModel):
        return list(cur.model_fields)
    return []


def format_validation_error(source: str, err: ValidationError, model: type[BaseModel] = None, prefix=()) -> str:
    """One line: 'FILE: dotted.key: message' for the first error, plus how many more."""
    errors = err.errors()
    e = errors[0]
    loc = tuple(prefix) + tuple(e["loc"])
    if e["type"] == "extra_forbidden":
        parent = tuple(e["loc"][:-1])
        known = _fields_at(model, parent) if model is not None else []
        msg = suggest(str(e["loc"][-1]), known, what="key") if known else f"unknown key {e['loc'][-1]!r}."
    else:
        msg = e["msg"]
        if e["type"] not in ("missing",) and "input" in e and not isinstance(e["input"], dict | list):
            msg += f" (got {e['input']!r})"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {_loc(loc)}: {msg}{more}"


# ---------------------------------------------------------------------------------------------------------------
# loading


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "axes":
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_study(raw: Any, *, source: str = "<study>", preset: str | None = None) -> Study:
    """Validate an already-parsed YAML document (with `presets` applied) into a Study."""
    if raw is None:
        raise ConfigError(f"{source}: the file is empty; a study needs at least `name:`")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a study file is a YAML mapping, got {type(raw).__name__}")
    raw = dict(raw)
    presets = raw.pop("presets", {}) or {}
    if not isinstance(presets, dict):
        raise ConfigError(f"{source}: presets: expected a mapping of preset name -> overrides")
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"{source}: presets: " + suggest(preset, presets, what="preset"))
        if not isinstance(presets[preset], dict):
            raise ConfigError(f"{source}: presets.{preset}: expected a mapping of overrides")
        named = "name" in presets[preset]
        raw = _deep_merge(raw, presets[preset])
        if not named and isinstance(raw.get("name"), str):
            # a preset is its own study (own folder, Optuna study, MLflow experiment and report):
            # `scan_ablation` with `--preset smoke` runs as `scan_ablation-smoke`
            raw["name"] = f"{raw['name']}-{preset}"
    try:
        study = Study.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(source, err, Study)) from None
    object.__setattr__(study, "_source", source)
    object.__setattr__(study, "_preset", preset)
    object.__setattr__(study, "_presets", tuple(presets))
    return study


MAX_STUDY_BYTES = 1 << 20          # a study file is a few KiB; anything near this is a mistake or an attack
MAX_YAML_NODES = 100_000           # YAML nodes after alias expansion (an alias bomb expands to billions)


class _StudyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, plus: duplicate keys are an error, and the document's size after alias
    expansion is bounded before anything is built from it."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise _DuplicateKey(key, key_node.start_mark)
            except TypeError:
                continue  # unhashable keys fail in the base class with its own message
            seen[key] = True
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, mark: Any) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.problem_mark, self.problem = key, mark, f"duplicate key {key!r}"


def _expanded_nodes(root: yaml.Node, limit: int) -> int:
    """How many nodes `root` has with every alias expanded, counting no further than `limit`."""
    count, stack = 0, [root]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            return count
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack.extend((k, v))
    return count


def _safe_load(text: str, source: str) -> Any:
    """yaml.safe_load with duplicate keys refused and alias expansion bounded (before it happens)."""
    loader = _StudyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise ConfigError(f"{source}: the YAML expands to more than {MAX_YAML_NODES:,} values (anchors and "
                              "aliases repeated inside each other?); study files are limited to that")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_study(path: str | Path, *, preset: str | None = None) -> Study:
    """Read, merge the preset, validate. Raises ConfigError naming the file and key."""
    path = Path(path)
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_STUDY_BYTES:
            raise ConfigError(f"{source}: the study file is {size / 2**20:.1f} MiB; study files are limited to "
                              f"{MAX_STUDY_BYTES // 2**10} KiB (list seeds as a range in a script, not by the "
                              "million)")
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such study file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read the study file ({exc.__class__.__name__})") from None
    return parse_study(read_yaml(text, source), source=source, preset=preset)


def read_yaml(text: str, source: str) -> Any:
    """A study's YAML text -> Python values (safe_load semantics; duplicate keys and alias bombs refused)."""
    if len(text) > MAX_STUDY_BYTES:
        raise ConfigError(f"{source}: the study text is {len(text) / 2**20:.1f} MiB; study files are limited "
                          f"to {MAX_STUDY_BYTES // 2**10} KiB")
    try:
        return _safe_load(text, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: the YAML is nested too deeply") from None


# ---------------------------------------------------------------------------------------------------------------
# trials


def keyed_dump(config: TrialConfig) -> dict[str, Any]:
    """config as JSON for trial keys and checkpoint hashes: the default mixer (mamba1, no options) is left out,
    so trials resolved before `backbone.mixer` existed keep their keys and checkpoints."""
    out = config.model_dump(mode="json")
    if out["backbone"].get("mixer") == {"name": "mamba1"}:
        del out["backbone"]["mixer"]
    if out["train"].get("budget", 0) is None:   # no budget: train.steps, as before budgets existed
        del out["train"]["budget"]
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
        vals = ", ".join(f"{k}={v}" for k, v in self.params.items())
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


def trial_from_params(study: Study, params: dict[str, Any], seed: int, *, where: str = "search.space") -> TrialSpec:
    """The TrialSpec of one point (dotted key -> value) on top of the study's base, e.g. a sampled search point."""
    source = getattr(study, "_source", "<study>")
    origin = {k: f"{where}.{k}" for k in params}
    return TrialSpec(params=dict(params), seed=seed, config=_config_with(study.base, params, origin, source),
                     origin=origin)


def expand_trials(study: Study) -> list[TrialSpec]:
    """Axes blocks -> cartesian products (union over blocks, duplicates dropped) x seeds."""
    source = getattr(study, "_source", "<study>")
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


# ---------------------------------------------------------------------------------------------------------------
# plugin resolution (what `harness validate` checks before any GPU work)


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


def validate_study(study: Study, registries: Any) -> list[TrialSpec]:
    """Expand and resolve every trial; checks objective and baseline keys. Raises ConfigError."""
    source = getattr(study, "_source", "<study>")
    trials = expand_trials(study)
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
