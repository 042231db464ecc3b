"""The study schema: frozen, validated pydantic models of a study file and of one trial's configuration.

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

import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.budget import BudgetConfig
from plugins.errors import suggest

__all__ = ["LAUNCH_KEYS", "MAX_DEVICES", "MAX_LIST", "MAX_NAME", "MAX_SEED", "MAX_TRIALS", "BackboneConfig", "ConditioningConfig", "Constraint",
           "DatasetConfig", "EvalConfig", "InterpolantConfig", "MixerConfig", "Objective", "SamplerConfig",
           "ScanConfig", "Search", "SearchParam", "Study", "TrainConfig", "TrialConfig", "format_validation_error"]


MAX_SEED = 2**31 - 1               # seeds are 31-bit (seed_for masks to 31 bits; samplers take 32-bit seeds)
MAX_LIST = 1000                    # seeds, axis values, axes blocks: larger lists are mistakes
MAX_TRIALS = 10_000                # combinations x seeds of one study file
MAX_NAME = 100                     # a study name is a folder, an Optuna study and an MLflow experiment
MAX_DEVICES = 4096                 # train.devices, train.nodes: larger values are mistakes
LAUNCH_KEYS = ("devices", "nodes", "launcher", "rdzv_backend", "rdzv_endpoint")   # train.*: how, not what
_ENDPOINT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")   # host:port, [v6]:port

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
    cuda_graph: bool | Literal["auto"] = "auto"  # the whole step (fwd, bwd, clip, AdamW) replayed as one CUDA
    # graph after 3 eager steps (harness/cuda_graph.py); auto: wherever it can be (CUDA, no fp16, no stochastic
    # depth, no torch.compile), true: an error where it cannot. true with train.compile "default" (or true) or
    # "max-autotune-no-cudagraphs" captures the compiled step (compiled in the warm-up steps; its speed is measured
    # by benchmarks/study_throughput.py, variant graph-compile); "reduce-overhead" / "max-autotune" (Inductor's own
    # CUDA graphs) cannot be captured again: an error with true
    data_on_device: Literal["off", "auto", "on"] = "off"   # whole training set on the device, batches cut there
    # by the same seeded permutation (no DataLoader); auto: on a CUDA device when it takes < 1/4 of free memory
    checkpoint_async: bool = False            # write checkpoints from a background thread (a CPU copy is taken)
    log_buffer: int = Field(1, ge=1)          # training log calls kept before one MLflow log_batch (1: each at once);
    # whatever is kept is sent when the trial ends, however it ends
    max_memory_gb: float | None = Field(None, gt=0)  # a trial above this peak memory fails with the reason
    budget: BudgetConfig | None = None        # {kind: steps|images|gpu_seconds|flops, value}; None = train.steps
    # steps; for the other kinds train.steps is a ceiling (harness/budget.py says how each is counted and stopped)
    # one trial on several processes (harness/distributed.py, harness/runner/torchrun.py): how a trial is launched,
    # left out of trial keys and checkpoint hashes (a checkpoint resumes under any of these settings)
    devices: int = Field(1, ge=1, le=MAX_DEVICES)   # processes per node for one trial (one GPU each on CUDA);
    # > 1: torchrun + DistributedDataParallel, each rank trains batch_size / (devices x nodes) of the global batch
    nodes: int = Field(1, ge=1, le=MAX_DEVICES)     # hosts per trial; the others join with `harness worker
    # --node-rank K` (harness/runner/torchrun.py)
    launcher: Literal["auto", "torchrun"] = "auto"  # auto: torchrun when devices x nodes > 1, else in the worker
    # process; torchrun: always (a 1-device torchrun trial, to compare with the plain one)
    rdzv_backend: Literal["c10d", "static"] = "c10d"  # torchrun's rendezvous (static: node 0 hosts rank 0)
    rdzv_endpoint: str | None = None          # HOST:PORT of the rendezvous on node 0; needed when nodes > 1 (one
    # node: a free local port)

    @property
    def world_size(self) -> int:
        """Processes (ranks) of one trial: devices x nodes."""
        return self.devices * self.nodes

    @property
    def uses_torchrun(self) -> bool:
        """Whether a worker launches this trial under torchrun (several ranks, or launcher: torchrun)."""
        return self.launcher == "torchrun" or self.world_size > 1

    @model_validator(mode="after")
    def _graph_and_compile(self) -> TrainConfig:
        if self.cuda_graph is True and self.compile in ("reduce-overhead", "max-autotune"):
            raise ValueError(f"train.cuda_graph true cannot capture train.compile {self.compile!r} (it replays "
                             "Inductor's own CUDA graphs); use compile 'default' or 'max-autotune-no-cudagraphs', "
                             "or train.cuda_graph false")
        return self

    @model_validator(mode="after")
    def _distributed(self) -> TrainConfig:
        world = self.world_size
        if self.batch_size % world:
            raise ValueError(f"train.batch_size ({self.batch_size}) must be divisible by train.devices x "
                             f"train.nodes ({self.devices} x {self.nodes} = {world}): each rank trains an equal "
                             "share of the global batch")
        if self.nodes > 1 and self.rdzv_endpoint is None:
            raise ValueError(f"train.nodes={self.nodes} needs train.rdzv_endpoint: HOST:PORT of node 0, which "
                             "every node can reach")
        if self.rdzv_endpoint is not None:
            m = _ENDPOINT.fullmatch(self.rdzv_endpoint)
            if m is None or not 0 < int(m.group(2)) < 65536:
                raise ValueError(f"train.rdzv_endpoint must be HOST:PORT with a port in 1..65535, got "
                                 f"{self.rdzv_endpoint!r}")
        if world > 1 and self.budget is not None and self.budget.kind == "gpu_seconds":
            raise ValueError("train.budget.kind gpu_seconds is not supported with train.devices x train.nodes > 1 "
                             "(each rank's clock would stop it at another step); use steps, images or flops")
        return self


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
    cuda_graph: bool | Literal["auto"] = "auto"  # the sampler's model call replayed as a CUDA graph per batch
    # shape (harness/sampling.py ModelGraphs); auto: on CUDA with tensor conditioning, true: an error elsewhere


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
# errors: 'FILE: dotted.key: message'


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


_YAML_WORDS = {"tuple_type": "Input should be a list, e.g. [a, b]", "list_type": "Input should be a list, e.g. [a, b]",
               "model_type": "Input should be a mapping, e.g. {key: value}",
               "dict_type": "Input should be a mapping, e.g. {key: value}"}


def format_validation_error(source: str, err: ValidationError, model: type[BaseModel] | None = None,
                            prefix=()) -> str:
    """One line: 'FILE: dotted.key: message' for the first error, plus how many more."""
    errors = err.errors()
    e = errors[0]
    loc = tuple(prefix) + tuple(e["loc"])
    if e["type"] == "extra_forbidden":
        parent = tuple(e["loc"][:-1])
        known = _fields_at(model, parent) if model is not None else []
        msg = suggest(str(e["loc"][-1]), known, what="key") if known else f"unknown key {e['loc'][-1]!r}."
    else:   # pydantic's Python words for YAML's two containers, in YAML's words
        msg = _YAML_WORDS.get(e["type"], e["msg"])
        if e["type"] not in ("missing",) and "input" in e and not isinstance(e["input"], dict | list):
            msg += f" (got {e['input']!r})"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {_loc(loc)}: {msg}{more}"
