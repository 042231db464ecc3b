"""A trial's cost figures, measured with plugins/_metrics/cost.py (the helpers `harness bench` uses too).

params_m (backbone parameters, millions), gflops (forward, one image, 1 FLOP per multiply-accumulate),
train_images_per_s (full optimisation steps on a copy of the trained model, warm-up excluded, synchronized),
sample_ms_per_image and nfe (the trial's sampler with the EMA weights at the eval batch size: the final
sampling pass's batches after its first when there are two or more, else extra batches right after it).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from harness.sampling import Conditioning, Net, sample_batch
from harness.training import Stepper, seed_for

__all__ = ["trial_costs"]


def _batch(data: Any, n: int) -> dict[str, Any]:
    items = [data.train[i % len(data.train)] for i in range(n)]
    return torch.utils.data.default_collate(items)


def trial_costs(*, net: Net, ema: Net, transport: Any, sampler: Any, cond: Conditioning, cfg: Any, data: Any,
                device: torch.device, amp: torch.dtype | None, seed: int,
                sampling: dict[str, Any] | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """(figures, meta) for one trained trial; meta says how each figure was measured. `sampling`: the final
    sampling pass's measure_sampling figures, when it had at least two full batches (else measured here)."""
    from plugins._metrics.cost import count_params, flops, measure_sampling, measure_training_throughput
    from zigma.random import sample_seeds

    shape, iters = data.info.shape, cfg.eval.cost_iters
    labels, captions = cond.prompts(1, seed)
    c, _ = cond.pair(ema, labels, captions)
    with torch.no_grad():
        x, t = torch.zeros((1, *shape), device=device), torch.full((1,), 0.5, device=device)
        f = flops(ema.backbone, x, t, **c)
    out = {"params_m": count_params(ema.backbone) / 1e6, "gflops": f["gflops"]}
    meta: dict[str, Any] = {"flops_method": f["flops_method"], "iters": iters, "warmup": 1}

    batch = _batch(data, cfg.train.batch_size)
    x1 = batch["x"].to(device)
    kwargs = cond.train_kwargs(batch, torch.Generator().manual_seed(seed_for(seed, 7)))
    stepper = Stepper(copy.deepcopy(net).train(), copy.deepcopy(ema), transport, cfg.train, device)
    gen = torch.Generator(device=device).manual_seed(seed_for(seed, 8))
    train = measure_training_throughput(lambda: stepper(x1, kwargs, cfg.train.steps, gen),
                                        cfg.train.batch_size, warmup=1, iters=iters, device=device)
    stepper = None  # free the copies before sampling
    out["train_images_per_s"] = train["train_images_per_s"]
    meta["train_memory_method"] = train["memory_method"]

    n = cfg.eval.batch_size
    if sampling is None:
        labels, captions = cond.prompts(n, seed)
        seeds = sample_seeds(seed, range(n))
        sampling = measure_sampling(
            lambda: sample_batch(ema, transport, sampler, cond, seeds=seeds, labels=labels, captions=captions,
                                 shape=shape, cfg_scale=cfg.sampler.cfg_scale, device=device, amp=amp),
            n, warmup=0, iters=iters, device=device)        # the final sampling pass just warmed it up
        meta["sample_timing"] = f"{iters} extra batch(es) of {n} after the final sampling pass"
    else:
        meta["sample_timing"] = f"batches 2..{sampling['iters'] + 1} of the final sampling pass ({n} each)"
    out["sample_ms_per_image"] = 1000.0 * sampling["sample_latency_per_image_s"]
    out["nfe"] = float(sampling["nfe"]) if sampling["nfe"] is not None else float("nan")
    return out, meta
