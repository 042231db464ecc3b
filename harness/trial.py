"""One trial: resolve plugins -> DataBundle -> backbone (+scan) -> Transport -> train -> sample -> metrics."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.budget import Budget, forward_flops_per_image
from harness.compile import sampling_net
from harness.costs import trial_costs
from harness.data_stream import batch_source
from harness.distributed import Ranks
from harness.errors import TrialFailed
from harness.model import Conditioning, Net, build_model, build_sampler, build_transport
from harness.provenance import provenance
from harness.sampling import ModelGraphs, sample_images, save_grid
from harness.seeds import seed_for
from harness.study import TrialConfig, TrialSpec, keyed_dump, resolve_trial
from harness.training import BatchStream, autocast_dtype, train, warmup_steps
from plugins.errors import HarnessError
from plugins.measure import WallSplit
from plugins.specs import DataBundle, MetricContext, option_values, validated_options

__all__ = ["run_trial", "TrialHooks", "config_hash", "default_device", "loss_text"]


@dataclass
class TrialHooks:
    """How a trial talks to the runner; `report(metrics, step)` (intermediate values) may prune it."""

    log: Callable[[dict[str, float], int], None] = lambda metrics, step: None
    history: Callable[[str, list[tuple[int, float]]], None] = lambda name, points: None  # one metric's points
    report: Callable[[dict[str, float], int], None] | None = None
    phase: Callable[[str, int | None], None] = lambda name, total: None     # a new progress phase
    advance: Callable[[int, str], None] = lambda completed, info: None     # progress within the phase


def default_device() -> torch.device:
    """cuda:0 of the visible devices when there is one, else cpu; ZIGMA_HARNESS_DEVICE overrides."""
    name = os.environ.get("ZIGMA_HARNESS_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def loss_text(loss: float) -> str:
    """The running trial's loss for its progress bar; nothing before the first log point reads one (nan)."""
    return f"loss {loss:.4f}" if math.isfinite(loss) else ""


def config_hash(config: TrialConfig) -> str:
    """Content hash of a resolved TrialConfig (a checkpoint is only resumed under the same one)."""
    blob = json.dumps(keyed_dump(config), sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


_DATA: dict[str, DataBundle] = {}


def _load_data(entry: Any, cfg: TrialConfig) -> DataBundle:
    """The trial's DataBundle, kept for the next trials of this worker (datasets are deterministic)."""
    key = f"{cfg.dataset.model_dump_json()}|{entry.load.__module__}"
    if key not in _DATA:
        bundle = entry.load(validated_options(entry, cfg.dataset.options))
        _DATA.clear()  # keep one dataset: studies rarely alternate, and some are large
        _DATA[key] = bundle
    return _DATA[key]


def _build_metrics(entries: list, names: Sequence[str], options: dict[str, dict]) -> list[tuple[str, Any]]:
    """Build every metric once, before training, so a metric that cannot be built fails the trial early."""
    return [(name, entry.build(**option_values(entry, options.get(name, {})))) for name, entry in zip(names, entries)]


def _metrics(metrics: list[tuple[str, Any]], fake: torch.Tensor,
             ctx: MetricContext) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    values, meta = {}, {}
    for name, metric in metrics:
        out = metric.compute(fake, ctx)
        meta[name] = {k: v for k, v in out.items() if k.startswith("meta.")}
        values.update({k: float(v) for k, v in out.items() if not k.startswith("meta.")})
    return values, meta


def run_trial(spec: TrialSpec, registries: Any, *, trial_dir: Path, device: torch.device, cache_dir: Path,
              hooks: TrialHooks | None = None, source: str = "<study>", ranks: Ranks | None = None
              ) -> dict[str, Any] | None:
    """Train, sample and measure one trial; writes config.json, provenance.json, checkpoint.pt, samples.png,
    metrics_meta.json, cost.json (how each cost figure was measured) and results.json under trial_dir.
    Raises TrialFailed with a reason. ranks: this process is one rank of a distributed trial
    (harness/distributed.py): rank 0 writes the files, calls the hooks and returns the results; the other ranks
    train and sample their shares and return None."""
    hooks = hooks or TrialHooks()
    cfg = spec.config
    entries = resolve_trial(spec, registries, source=source)
    trial_dir.mkdir(parents=True, exist_ok=True)
    lead = ranks is None or ranks.lead
    if lead:
        _write_config(spec, registries, entries, trial_dir, device, ranks)
    amp = autocast_dtype(device, cfg.train.precision)
    try:
        return _run(spec, entries, cfg, trial_dir=trial_dir, device=device, cache_dir=cache_dir, hooks=hooks,
                    amp=amp, ranks=ranks)
    except torch.cuda.OutOfMemoryError as exc:
        raise TrialFailed(f"CUDA out of memory: {str(exc).splitlines()[0]}") from None
    except MemoryError:
        raise TrialFailed("out of memory (host RAM)") from None


def _write_config(spec: TrialSpec, registries: Any, entries: dict, trial_dir: Path, device: torch.device,
                  ranks: Ranks | None) -> None:
    """config.json and provenance.json (with the process layout of a distributed trial)."""
    cfg = spec.config
    (trial_dir / "config.json").write_text(json.dumps(
        {"trial_key": spec.key, "label": spec.label, "params": spec.params, "seed": spec.seed,
         "config": cfg.model_dump(mode="json")}, indent=2, default=str))
    amp = autocast_dtype(device, cfg.train.precision)
    scan_seed = spec.seed if cfg.scan.seed is None else cfg.scan.seed
    kinds = (("dataset", "datasets"), ("backbone", "backbones"), ("interpolant", "interpolants"),
             ("sampler", "samplers"), ("scan", "scans"), ("mixer", "mixers"), ("text_encoder", "text-encoders"))
    plugins = {kind: registries[reg].plugin_of(entries[kind].name) for kind, reg in kinds
               if entries.get(kind) is not None}
    precision = f"{str(amp).removeprefix('torch.')} autocast" if amp else "fp32"
    prov = provenance(device=device, precision=precision,
                      mixer_backend_requested=cfg.backbone.mixer_backend, plugins=plugins,
                      seeds={"trial": spec.seed, "scan": scan_seed, "model_init": spec.seed,
                             "samples": "zigma.random.sample_seeds(trial seed, index)"})
    if ranks is not None:
        t = cfg.train
        prov["distributed"] = {"launcher": "torchrun", "world_size": ranks.world, "devices": t.devices,
                               "nodes": t.nodes, "backend": ranks.backend, "rdzv_backend": t.rdzv_backend,
                               "per_rank_batch": t.batch_size // ranks.world, "global_batch": t.batch_size}
    (trial_dir / "provenance.json").write_text(json.dumps(prov, indent=2, default=str))


def _run(spec: TrialSpec, entries: dict, cfg: TrialConfig, *, trial_dir: Path, device: torch.device,
         cache_dir: Path, hooks: TrialHooks, amp: torch.dtype | None, ranks: Ranks | None) -> dict[str, Any] | None:
    hooks.phase("data", None)
    data = _load_data(entries["dataset"], cfg)
    info = data.info
    kind = cfg.conditioning.kind
    if kind == "class" and not info.num_classes:
        raise HarnessError(f"conditioning.kind=class needs a labelled dataset; {info.name!r} has no labels")
    if kind == "text" and not info.captions:
        raise HarnessError(f"conditioning.kind=text needs captions; {info.name!r} has none")

    torch.manual_seed(seed_for(spec.seed, 0))           # parameter initialisation
    text_encoder = None
    if kind == "text":
        te_entry = entries["text_encoder"]
        te_opts = option_values(te_entry, cfg.conditioning.text_encoder_options)
        text_encoder = te_entry.build(vocab=info.vocab, max_length=te_opts.pop("max_length", 32),
                                      device=device, dtype=None, **te_opts)
        if not te_entry.trainable:
            text_encoder.requires_grad_(False)
    backbone = build_model(cfg, entries, info, seed=spec.seed,
                           device=device, context_dim=text_encoder.dim if text_encoder is not None else None)
    net = Net(backbone, text_encoder).to(device)
    cond = Conditioning(kind, cfg.conditioning.label_dropout, data, device, text_encoder=text_encoder)
    transport = build_transport(cfg, entries)
    sampler = build_sampler(cfg, entries, transport)
    metrics = _build_metrics(entries["metrics"], cfg.eval.metrics, cfg.eval.metric_options)
    # stochastic depth: rank r > 0 of a distributed trial draws its own masks (not checkpointed: a resumed rank
    # restarts its stream; see harness/distributed.py)
    own = ranks is not None and not ranks.lead
    drop_gen = torch.Generator(device=device).manual_seed(seed_for(spec.seed, 6, *([ranks.rank] if own else [])))
    net.set_generator(drop_gen)

    graphs = ModelGraphs(cfg.eval.cuda_graph, device)      # the sampler's model call, captured once per shape

    def sample(ema: Net, n: int, advance: Any, measure: bool = False) -> Any:
        """n samples of the EMA net (a distributed trial: each rank its share, all of them on rank 0, else None)."""
        out = sample_images(sampling_net(ema, cfg.eval.compile), transport, sampler, cond, n=n,
                            batch_size=cfg.eval.batch_size, shape=info.shape, seed=spec.seed,
                            cfg_scale=cfg.sampler.cfg_scale, device=device, amp=amp, advance=advance,
                            measure=measure, part=ranks.part if ranks is not None else (0, 1), graphs=graphs)
        return out if ranks is None else ranks.gather_samples(out)

    stream = BatchStream(len(data.train), cfg.train.batch_size, spec.seed)
    loader_for, _ = batch_source(cfg.train.data_on_device, data.train, batch_size=cfg.train.batch_size,
                                 seed=spec.seed, num_workers=cfg.train.num_workers, device=device)

    cache_dir.mkdir(parents=True, exist_ok=True)

    def ctx_for(labels, captions) -> MetricContext:
        return MetricContext(data=data, device=device, cache_dir=str(cache_dir), labels=labels,
                             captions=captions, progress=False)

    # training budget (harness/budget.py); FLOPs counted when a budget or eval.every needs them
    fpi = (forward_flops_per_image(net, cond, info.shape, device, spec.seed)
           if cfg.train.budget is not None or cfg.eval.every else None)
    budget = Budget(cfg.train.budget, max_steps=cfg.train.steps, flops_per_image=fpi, every=cfg.eval.every,
                    exact_seconds=device.type != "cuda")
    total = budget.planned_steps(cfg.train.batch_size)

    def evaluate(ema: Net, step: int) -> None:
        hooks.phase(f"eval@{step}", cfg.eval.intermediate_samples)
        out = sample(ema, cfg.eval.intermediate_samples, hooks.advance)
        if ranks is None:
            _evaluated(out, step)
        else:                                           # rank 0 measures and reports; a prune stops every rank
            ranks.on_lead(lambda: _evaluated(out, step))

    def _evaluated(out: Any, step: int) -> None:
        values, _ = _metrics(metrics, out.fake, ctx_for(out.labels, out.captions))
        hooks.log({**{f"during/{k}": v for k, v in values.items()}, "during/images": budget.amount("images"),
                   "during/train_seconds": budget.seconds, "during/train_tflops": budget.train_flops / 1e12},
                  step)
        hooks.phase("train", total)
        if budget.bound() is not None:   # the curve's last point; the final evaluation follows on num_samples
            return
        hooks.log(values, step)
        if hooks.report is not None:
            hooks.report(values, step)

    hooks.phase("train", total)
    ema, state = train(
        net=net, transport=transport, loader_for=loader_for, per_epoch=stream.per_epoch,
        condition=cond.train_kwargs, cfg=cfg.train, seed=spec.seed, device=device,
        ckpt=trial_dir / "checkpoint.pt", config_hash=config_hash(cfg), log=hooks.log, history=hooks.history,
        evaluate=evaluate, eval_every=cfg.eval.every,
        progress=lambda step, loss: hooks.advance(step, loss_text(loss)),
        extra_generators={} if own else {"droppath": drop_gen}, budget=budget, ranks=ranks)

    wall = {f"wall_{k}_s": v for k, v in state.wall.items()}
    split = WallSplit()                                   # the trial's phases after training
    hooks.phase("sample", cfg.eval.num_samples)
    with split("sample"):
        out = sample(ema, cfg.eval.num_samples, hooks.advance, measure=cfg.eval.cost)
        if out is not None and cfg.eval.grid_samples:
            texts, kind = cond.grid_captions(out.labels, out.captions, cfg.eval.grid_samples)
            save_grid(out.fake, trial_dir / "samples.png", cfg.eval.grid_samples, captions=texts, kind=kind)
            save_grid(data.reference(cfg.eval.grid_samples, seed=0), trial_dir / "real.png", cfg.eval.grid_samples)
    if out is None:                                     # a rank other than 0: its share is drawn and gathered
        return None
    hooks.phase("metrics", None)
    with split("metrics"):
        values, meta = _metrics(metrics, out.fake, ctx_for(out.labels, out.captions))

    results = dict(values)
    results.update(final_train_loss=state.last_loss, train_seconds=state.train_seconds,
                   peak_memory_gb=state.peak_memory_gb, nfe=out.nfe,
                   params_m=sum(p.numel() for p in ema.backbone.parameters()) / 1e6,
                   # the run's own clock: images / seconds inside its timed training steps (warm-up excluded)
                   train_images_per_s=(state.timed_images / state.timed_seconds if state.timed_seconds > 0
                                       else float("nan")),
                   train_step_ms=1000.0 * state.timed_seconds / state.timed_steps if state.timed_steps
                   else float("nan"), timed_steps=state.timed_steps, **wall)
    spent = budget.record()                             # what bound the training and how much it used
    results.update({k: v for k, v in spent.items() if k != "budget_kind"})
    # what ran, for the report's header (the dataset as loaded, not as configured)
    p = cfg.backbone.patch_size or 1
    results.update(data_height=info.height, data_width=info.width, data_frames=info.frames or 1,
                   data_num_train=len(data.train), data_num_reference=data.extras.get("num_reference", float("nan")),
                   tokens=(info.frames or 1) * (info.height // p) * (info.width // p))
    how: dict[str, Any] = {
        "train_images_per_s": f"images / seconds of the {state.timed_steps} timed training steps of the segment "
                              f"that finished the trial (steps {state.resumed_from + 1}..{spent['steps_run']}, first "
                              f"{warmup_steps(cfg.train.steps)} untimed), "
                              + ("CUDA events" if device.type == "cuda" else "time.perf_counter"),
        "wall": "host wall-clock seconds per phase of that segment (data, step, log, eval, checkpoint) and of "
                "the trial (sample, metrics, cost); on CUDA queued step work is waited for in 'log'",
        "peak_memory_gb": "GB = 1e9 bytes; " + ("torch.cuda.max_memory_allocated" if device.type == "cuda"
                                                 else "the process's peak resident set (VmHWM) in the segment"),
        "resumed_from_step": state.resumed_from}
    if ranks is not None:
        how["distributed"] = (f"{ranks.world} rank(s), {ranks.backend}: images are the global batch's, seconds "
                              "and peak memory rank 0's; sampling split over the ranks (latency: rank 0's batches)")
    if cfg.eval.cost:
        hooks.phase("cost", None)
        with split("cost"):
            figures, cost_how = trial_costs(net=net, ema=ema, transport=transport, sampler=sampler, cond=cond,
                                            cfg=cfg, data=data, device=device, amp=amp, seed=spec.seed,
                                            batch_seconds=out.batch_seconds, graphs=graphs)
        results.update(figures)
        if math.isnan(spent["train_flops"]):     # count not taken before training
            results["train_flops"] = spent["images_seen"] * 3.0 * figures["gflops"] * 1e9
        how.update(cost_how)
    results.update({f"wall_{k}_s": v for k, v in split.seconds.items()})
    (trial_dir / "cost.json").write_text(json.dumps(
        {k: v for k, v in results.items() if k not in values} | {"how": how}, indent=2, default=str))
    (trial_dir / "metrics_meta.json").write_text(json.dumps(meta, indent=2, default=str))
    results = {k: float(v) for k, v in results.items()}
    refused = {k: v for k, v in state.extras.items() if k == "checkpoint_refused"}  # why it started afresh
    (trial_dir / "results.json").write_text(json.dumps(
        {**results, "budget_kind": spent["budget_kind"], "resumed_from_step": state.resumed_from,
         "trial_key": spec.key, "label": spec.label,
         "params": spec.params, "seed": spec.seed, **refused}, indent=2, default=str))
    return {"metrics": results, "meta": meta, "resumed_from_step": state.resumed_from,
            "budget_kind": spent["budget_kind"], **refused}
