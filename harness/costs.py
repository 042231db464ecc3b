"""A trial's cost figures besides those of its own training run (timing and memory: plugins/measure.py).

params_m (backbone parameters, millions); gflops (forward, one image, 1 FLOP per multiply-accumulate);
sample_ms_per_image and its spread (the trial's sampler with the EMA weights at the eval batch size, over at least
MIN_SAMPLE_BATCHES timed batches: the final sampling pass's full batches after its first, topped up with extra
batches drawn right after it); model_step_images_per_s (a model-only steady-state figure: optimisation steps on a
copy of the trained model with one fixed batch, no data loading; never the run's own train_images_per_s).
"""

from __future__ import annotations

import copy
import statistics
from typing import Any

import torch

from harness.cuda_graph import WARMUP_STEPS
from harness.model import Conditioning, Net
from harness.sampling import sample_batch
from harness.seeds import seed_for
from harness.training import Stepper
from plugins.measure import Timer, time_calls

__all__ = ["trial_costs", "MIN_SAMPLE_BATCHES"]

MIN_SAMPLE_BATCHES = 5  #: timed sampling batches per trial, at least


def _batch(data: Any, n: int) -> dict[str, Any]:
    items = [data.train[i % len(data.train)] for i in range(n)]
    return torch.utils.data.default_collate(items)


def trial_costs(*, net: Net, ema: Net, transport: Any, sampler: Any, cond: Conditioning, cfg: Any, data: Any,
                device: torch.device, amp: torch.dtype | None, seed: int,
                batch_seconds: list[float], graphs: Any = None) -> tuple[dict[str, float], dict[str, Any]]:
    """(figures, meta) for one trained trial; meta says how each figure was measured. `batch_seconds`: the
    timed full batches of the final sampling pass (Samples.batch_seconds)."""
    from plugins.metrics import count_params, flops
    from zigma.random import sample_seeds

    shape, n = data.info.shape, cfg.eval.batch_size
    labels, captions = cond.prompts(n, seed)
    c, _ = cond.pair(ema, labels[:1] if labels is not None else None, captions[:1] if captions else None)
    with torch.no_grad():
        x, t = torch.zeros((1, *shape), device=device), torch.full((1,), 0.5, device=device)
        f = flops(ema.backbone, x, t, **c)
    out = {"params_m": count_params(ema.backbone) / 1e6, "gflops": f["gflops"]}
    meta: dict[str, Any] = {"flops_method": f["flops_method"]}

    # sampling latency: >= MIN_SAMPLE_BATCHES timed batches (the pass that just ran warmed the sampler up)
    extra = max(0, MIN_SAMPLE_BATCHES - len(batch_seconds))
    seeds = sample_seeds(seed, range(n))
    timer = Timer(device)

    def batch() -> None:
        sample_batch(ema, transport, sampler, cond, seeds=seeds, labels=labels, captions=captions, shape=shape,
                     cfg_scale=cfg.sampler.cfg_scale, device=device, amp=amp, graphs=graphs)

    if extra and not batch_seconds:      # the pass had no full batch: warm up (and capture) untimed first
        batch()
    for _ in range(extra):
        with timer.region():
            batch()
    ms = [1000.0 * s / n for s in [*batch_seconds, *timer.take()]]
    out["sample_ms_per_image"] = statistics.fmean(ms)
    out["sample_ms_per_image_std"] = statistics.stdev(ms) if len(ms) > 1 else float("nan")
    out["sample_batches"] = float(len(ms))
    meta["sample_timing"] = (f"{len(ms)} timed batches of {n}: {len(batch_seconds)} from the final sampling pass "
                             f"(its first batch untimed), {extra} extra right after it; mean and sample std "
                             "over batches")

    # model-only steady-state step figure (named so; the run's own train_images_per_s comes from training)
    iters = cfg.eval.cost_iters
    batch = _batch(data, cfg.train.batch_size)
    x1 = batch["x"].to(device)
    kwargs = cond.train_kwargs(batch, torch.Generator().manual_seed(seed_for(seed, 7)))
    stepper = Stepper(copy.deepcopy(net).train(), copy.deepcopy(ema), transport, cfg.train, device)
    gen = torch.Generator(device=device).manual_seed(seed_for(seed, 8))
    warm = 1 if stepper.graph is None else WARMUP_STEPS + 1      # a captured step: its eager steps and the capture
    ms_step = time_calls(lambda: stepper(x1, kwargs, cfg.train.steps, gen), device=device, warmup=warm, iters=iters)
    out["model_step_images_per_s"] = 1000.0 * cfg.train.batch_size / ms_step.mean
    meta["model_step_timing"] = (f"{iters} optimisation steps on a copy of the trained model with one fixed batch "
                                 f"of {cfg.train.batch_size} ({warm} warm-up step(s), no data loading"
                                 f"{', replayed as a CUDA graph' if stepper.graph is not None else ''})")
    return out, meta
