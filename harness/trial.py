"""One trial: resolve plugins -> DataBundle -> backbone (+scan) -> Transport -> train -> sample (EMA) -> metrics."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness import costs
from harness.provenance import provenance
from harness.study import TrialConfig, TrialSpec, resolve_trial
from harness.validation import build_model
from harness.training import BatchStream, TrialFailed, autocast_dtype, memory_gb, seed_for, train
from plugins.errors import HarnessError
from plugins.specs import DataBundle, MetricContext

__all__ = ["run_trial", "TrialFailed", "TrialHooks", "Net", "config_hash", "default_device", "sample_images",
           "to_uint8"]


@dataclass
class TrialHooks:
    """How a trial talks to the runner. `report(metrics, step)` (intermediate values) may raise optuna.TrialPruned."""

    log: Callable[[dict[str, float], int], None] = lambda metrics, step: None
    report: Callable[[dict[str, float], int], None] | None = None
    phase: Callable[[str, int | None], None] = lambda name, total: None     # a new progress phase
    advance: Callable[[int, str], None] = lambda completed, info: None     # progress within the phase


class Net(nn.Module):
    """The backbone plus the (optional) text encoder, so both are trained, EMA-averaged and checkpointed together."""

    def __init__(self, backbone: nn.Module, text_encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone, self.text_encoder = backbone, text_encoder

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Forwarded to the backbone (stochastic depth draws from it)."""
        if hasattr(self.backbone, "set_generator"):
            self.backbone.set_generator(generator)

    def encode(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        """captions -> {'context': (N, S, D), 'context_mask': (N, S)}."""
        tokens, mask = self.text_encoder.encode(list(captions))
        return {"context": tokens, "context_mask": mask}

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, y: torch.Tensor | None = None,
                captions: Sequence[str] | None = None) -> torch.Tensor:
        """x (N, *shape), t (N,), y (N,) or captions (N strings) -> x's shape."""
        if captions is not None:
            return self.backbone(x, t, **self.encode(captions))
        return self.backbone(x, t, y=y)


def default_device() -> torch.device:
    """cuda:0 of the visible devices when there is one, else cpu; ZIGMA_HARNESS_DEVICE overrides."""
    name = os.environ.get("ZIGMA_HARNESS_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def config_hash(config: TrialConfig) -> str:
    """Content hash of a resolved TrialConfig (a checkpoint is only resumed under the same one)."""
    blob = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 in [0, 255]."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class _Conditioning:
    """Training-time model kwargs with label dropout, and the (cond, uncond) pairs sampling needs."""

    def __init__(self, kind: str, dropout: float, data: DataBundle, device: torch.device) -> None:
        self.kind, self.dropout, self.data, self.device = kind, dropout, data, device
        self.num_classes = data.info.num_classes

    def train_kwargs(self, batch: dict, gen: torch.Generator) -> dict[str, Any]:
        n = batch["x"].shape[0]
        if self.kind == "none":
            return {}
        drop = torch.rand(n, generator=gen) < self.dropout
        if self.kind == "class":
            y = torch.where(drop, torch.full_like(batch["y"], self.num_classes), batch["y"])
            return {"y": y.to(self.device)}
        return {"captions": ["" if d else c for d, c in zip(drop.tolist(), batch["caption"])]}

    def prompts(self, n: int, seed: int) -> tuple[torch.Tensor | None, list[str] | None]:
        """The labels (i mod num_classes) or captions (training captions, seeded order) of n samples."""
        if self.kind == "class":
            return torch.arange(n) % self.num_classes, None
        if self.kind == "text":
            train = self.data.train
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed_for(seed, 5)))
            return None, [train[int(order[i % len(order)])]["caption"] for i in range(n)]
        return None, None

    def pair(self, net: Net, labels: torch.Tensor | None, captions: list[str] | None) -> tuple[dict, dict]:
        """(cond, uncond) backbone kwargs of one batch."""
        if labels is not None:
            y = labels.to(self.device)
            return {"y": y}, {"y": torch.full_like(y, self.num_classes)}
        if captions is not None:
            return net.encode(captions), net.encode([""] * len(captions))
        return {}, {}


@torch.no_grad()
def sample_images(net: Net, transport: Any, sampler: Any, cond: _Conditioning, *, n: int, batch_size: int,
                  shape: tuple[int, ...], seed: int, cfg_scale: float, device: torch.device,
                  amp: torch.dtype | None, advance: Callable[[int, str], None] = lambda c, i: None,
                  ) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None, float, float]:
    """n samples, sample i from noise seeded by (seed, i). Returns (uint8 (n, *shape), labels, captions,
    mean NFE per batch, seconds)."""
    from zigma.interpolants import cfg_model_fn
    from zigma.random import per_sample_normal, sample_seeds

    labels, captions = cond.prompts(n, seed)
    seeds = sample_seeds(seed, range(n))
    out, nfes = [], []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        x0 = per_sample_normal(shape, seeds[lo:hi], device=device, dtype=torch.float32)
        c, u = cond.pair(net, None if labels is None else labels[lo:hi], None if captions is None else captions[lo:hi])
        guided = cfg_model_fn(net.backbone, cfg_scale, c, u)

        def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                return guided(x, t).float()

        result = sampler.sample(transport, model_fn, x0, seeds=seeds[lo:hi])
        out.append(to_uint8(result.x1).cpu())
        nfes.append(result.nfe)
        advance(hi, f"nfe {result.nfe}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    return torch.cat(out), labels, captions, sum(nfes) / len(nfes), seconds


def _options(entry: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """A plugin's options validated (defaults filled in) by its own schema."""
    return entry.options.model_validate(raw).model_dump() if entry.options is not None else dict(raw)


def _metrics(entries: list, names: Sequence[str], options: dict[str, dict], fake: torch.Tensor,
             ctx: MetricContext) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    values, meta = {}, {}
    for name, entry in zip(names, entries):
        out = entry.build(**_options(entry, options.get(name, {}))).compute(fake, ctx)
        meta[name] = {k: v for k, v in out.items() if k.startswith("meta.")}
        values.update({k: float(v) for k, v in out.items() if not k.startswith("meta.")})
    return values, meta


def _save_grid(fake: torch.Tensor, path: Path, n: int) -> None:
    """A sample grid (videos: one row of frames per sample)."""
    from torchvision.utils import save_image
    imgs = fake[:n].float() / 255.0
    if imgs.ndim == 5:                                   # (N, T, C, H, W)
        nrow = imgs.shape[1]
        imgs = imgs[: max(1, min(8, n))].flatten(0, 1)
    else:
        nrow = max(1, math.isqrt(max(1, imgs.shape[0])))
    save_image(imgs, path, nrow=nrow, padding=1)


def run_trial(spec: TrialSpec, registries: Any, *, trial_dir: Path, device: torch.device, cache_dir: Path,
              hooks: TrialHooks | None = None, source: str = "<study>") -> dict[str, Any]:
    """Train, sample and measure one trial; writes config.json, provenance.json, checkpoint.pt, samples.png,
    metrics_meta.json and results.json under trial_dir. Raises TrialFailed with a reason."""
    hooks = hooks or TrialHooks()
    cfg = spec.config
    entries = resolve_trial(spec, registries, source=source)
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / "config.json").write_text(json.dumps(
        {"trial_key": spec.key, "label": spec.label, "params": spec.params, "seed": spec.seed,
         "config": cfg.model_dump(mode="json")}, indent=2, default=str))
    amp = autocast_dtype(device, cfg.train.precision)
    scan_seed = spec.seed if cfg.scan.seed is None else cfg.scan.seed
    plugins = {kind: registries[reg].plugin_of(getattr(entries[kind], "name"))
               for kind, reg in (("dataset", "datasets"), ("backbone", "backbones"), ("interpolant", "interpolants"),
                                 ("sampler", "samplers"), ("scan", "scans")) if entries.get(kind) is not None}
    prov = provenance(device=device, precision=f"{str(amp).replace('torch.', '')} autocast" if amp else "fp32",
                      mixer_backend_requested=cfg.backbone.mixer_backend, plugins=plugins,
                      seeds={"trial": spec.seed, "scan": scan_seed, "model_init": spec.seed,
                             "samples": "zigma.random.sample_seeds(trial seed, index)"})
    (trial_dir / "provenance.json").write_text(json.dumps(prov, indent=2, default=str))

    try:
        return _run(spec, entries, cfg, trial_dir=trial_dir, device=device, cache_dir=cache_dir, hooks=hooks,
                    amp=amp)
    except torch.cuda.OutOfMemoryError as exc:
        raise TrialFailed(f"CUDA out of memory: {str(exc).splitlines()[0]}") from None
    except MemoryError:
        raise TrialFailed("out of memory (host RAM)") from None


def _run(spec: TrialSpec, entries: dict, cfg: TrialConfig, *, trial_dir: Path, device: torch.device,
         cache_dir: Path, hooks: TrialHooks, amp: torch.dtype | None) -> dict[str, Any]:
    from zigma.interpolants import Transport

    hooks.phase("data", None)
    ds_entry = entries["dataset"]
    options = ds_entry.options.model_validate(cfg.dataset.options) if ds_entry.options else None
    data = ds_entry.load(options)
    info = data.info
    kind = cfg.conditioning.kind
    if kind == "class" and not info.num_classes:
        raise HarnessError(f"conditioning.kind=class needs a labelled dataset; {info.name!r} has no labels")
    if kind == "text" and not info.captions:
        raise HarnessError(f"conditioning.kind=text needs captions; {info.name!r} has none")
    cond = _Conditioning(kind, cfg.conditioning.label_dropout, data, device)

    torch.manual_seed(seed_for(spec.seed, 0))           # parameter initialisation
    text_encoder = None
    if kind == "text":
        te_entry = entries["text_encoder"]
        te_opts = dict(cfg.conditioning.text_encoder_options)
        if te_entry.options is not None:
            te_opts = te_entry.options.model_validate(te_opts).model_dump()
        text_encoder = te_entry.build(vocab=info.vocab, max_length=te_opts.pop("max_length", 32), device=device,
                                      dtype=None, **te_opts)
        if not te_entry.trainable:
            text_encoder.requires_grad_(False)
    backbone = build_model(cfg, entries, info, seed=spec.seed,
                           device=device, context_dim=text_encoder.dim if text_encoder is not None else None)
    net = Net(backbone, text_encoder).to(device)
    i = cfg.interpolant
    transport = Transport(entries["interpolant"].build(), prediction=i.prediction, loss_weight=i.loss_weight,
                          time_sampler=i.time_sampler, train_eps=i.train_eps, sample_eps=i.sample_eps)
    sampler = entries["sampler"].build(**_options(entries["sampler"], cfg.sampler.options))
    drop_gen = torch.Generator(device=device).manual_seed(seed_for(spec.seed, 6))
    net.set_generator(drop_gen)

    stream = BatchStream(len(data.train), cfg.train.batch_size, spec.seed)

    def loader_for(epoch: int, batch: int):
        sampler_ = BatchStream(len(data.train), cfg.train.batch_size, spec.seed, epoch=epoch, batch=batch)
        loader = torch.utils.data.DataLoader(data.train, batch_sampler=sampler_, num_workers=cfg.train.num_workers,
                                             pin_memory=device.type == "cuda",
                                             persistent_workers=cfg.train.num_workers > 0)
        return iter(loader)

    cache_dir.mkdir(parents=True, exist_ok=True)

    def ctx_for(labels, captions) -> MetricContext:
        return MetricContext(data=data, device=device, cache_dir=str(cache_dir), labels=labels, captions=captions,
                             progress=False)

    def evaluate(ema: Net, step: int) -> None:
        hooks.phase(f"eval@{step}", cfg.eval.intermediate_samples)
        fake, labels, captions, _, _ = sample_images(
            ema, transport, sampler, cond, n=cfg.eval.intermediate_samples, batch_size=cfg.eval.batch_size,
            shape=info.shape, seed=spec.seed, cfg_scale=cfg.sampler.cfg_scale, device=device, amp=amp,
            advance=hooks.advance)
        values, _ = _metrics(entries["metrics"], cfg.eval.metrics, cfg.eval.metric_options, fake,
                             ctx_for(labels, captions))
        hooks.log(values, step)
        hooks.phase("train", cfg.train.steps)
        if hooks.report is not None:
            hooks.report(values, step)

    hooks.phase("train", cfg.train.steps)
    ema, state = train(
        net=net, transport=transport, loader_for=loader_for, per_epoch=stream.per_epoch,
        condition=cond.train_kwargs, cfg=cfg.train, seed=spec.seed, device=device,
        ckpt=trial_dir / "checkpoint.pt", config_hash=config_hash(cfg), log=hooks.log,
        evaluate=evaluate, eval_every=cfg.eval.every, progress=lambda s, l: hooks.advance(s, f"loss {l:.4f}"),
        extra_generators={"droppath": drop_gen})

    hooks.phase("sample", cfg.eval.num_samples)
    fake, labels, captions, nfe, seconds = sample_images(
        ema, transport, sampler, cond, n=cfg.eval.num_samples, batch_size=cfg.eval.batch_size, shape=info.shape,
        seed=spec.seed, cfg_scale=cfg.sampler.cfg_scale, device=device, amp=amp, advance=hooks.advance)
    if cfg.eval.grid_samples:
        _save_grid(fake, trial_dir / "samples.png", cfg.eval.grid_samples)
    hooks.phase("metrics", None)
    values, meta = _metrics(entries["metrics"], cfg.eval.metrics, cfg.eval.metric_options, fake,
                            ctx_for(labels, captions))
    (trial_dir / "metrics_meta.json").write_text(json.dumps(meta, indent=2, default=str))

    results = dict(values)
    results.update(final_train_loss=state.last_loss, train_seconds=state.train_seconds, nfe=nfe,
                   sample_ms_per_image=1000.0 * seconds / cfg.eval.num_samples,
                   train_images_per_s=(state.timed_images / state.timed_seconds if state.timed_seconds > 0
                                       else float("nan")),
                   peak_memory_gb=max(state.peak_memory_gb, memory_gb(device)))
    if cfg.eval.cost:
        hooks.phase("cost", None)
        results.update(costs.model_costs(ema.backbone, info.shape, device=device, kind=kind,
                                         num_classes=info.num_classes, context=(
                                             ema.encode([""]) if kind == "text" else None)))
    results = {k: float(v) for k, v in results.items()}
    (trial_dir / "results.json").write_text(json.dumps(
        {**results, "resumed_from_step": state.resumed_from, "trial_key": spec.key, "label": spec.label,
         "seed": spec.seed}, indent=2))
    return {"metrics": results, "meta": meta, "resumed_from_step": state.resumed_from}
