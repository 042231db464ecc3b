"""Sampling with EMA weights: per-sample seeded noise, classifier-free guidance, batches and the sample grid."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.model import Conditioning, Net

__all__ = ["ModelGraphs", "Samples", "sample_batch", "sample_images", "to_uint8", "save_grid"]


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 in [0, 255]."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class ModelGraphs:
    """`eval.cuda_graph`: the sampler's model call replayed as a CUDA graph, one per input shape (harness/cuda_graph.py).

    The call is recorded with its conditioning tensors as inputs, so every batch of one shape replays the same
    graph with its own labels or captions copied in. Where it cannot be used (not CUDA; model arguments that are not
    tensors) the call runs eagerly ("auto") or raises (true)."""

    def __init__(self, setting: bool | str, device: torch.device) -> None:
        self.setting = setting
        self.blocker = "eval.cuda_graph is false" if setting is False else (
            None if device.type == "cuda" else f"CUDA graphs need a CUDA device (sampling runs on {device.type})")
        if self.blocker is not None and setting is True:
            raise ValueError(f"eval.cuda_graph is true but sampling cannot be captured: {self.blocker}")
        self._graphs: dict[tuple, Any] = {}

    def wrap(self, call: Callable[..., torch.Tensor], tensors: list[torch.Tensor]
             ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """model_fn(x, t) = call(x, t, *tensors), replayed from a graph when one can be used."""
        if self.blocker is not None:
            return lambda x, t: call(x, t, *tensors)
        from harness.cuda_graph import CaptureFailed, StepGraph

        def replayed(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            inputs = (x, t, *tensors)
            if self.blocker is not None:                  # a capture failed earlier in this pass
                return call(*inputs)
            key = tuple((tuple(v.shape), v.dtype) for v in inputs)
            if key not in self._graphs:
                self._graphs[key] = StepGraph(call, warmup=1)
            try:
                return self._graphs[key](*inputs)
            except CaptureFailed as err:
                if self.setting is True:
                    raise ValueError(f"eval.cuda_graph is true but the model call could not be captured: {err}") \
                        from err
                self.blocker, self._graphs = f"the capture failed ({err})", {}   # auto: eager from now on
                return call(*inputs)

        return replayed


def _model_fn(net: Net, cond: Conditioning, labels, captions, cfg_scale: float, device: torch.device,
              amp: torch.dtype | None, graphs: ModelGraphs | None = None
              ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    from harness.cuda_graph import flatten_kwargs
    from zigma.interpolants import cfg_model_fn

    c, u = cond.pair(net, labels, captions)
    names, tensors = list(c), [*c.values(), *u.values()]
    if graphs is not None and graphs.blocker is None:
        try:
            flatten_kwargs({**{f"c.{k}": v for k, v in c.items()}, **{f"u.{k}": v for k, v in u.items()}})
        except ValueError as err:
            if graphs.setting is True:
                raise
            graphs.blocker = str(err)

    def call(x: torch.Tensor, t: torch.Tensor, *cond_tensors: torch.Tensor) -> torch.Tensor:
        cc = dict(zip(names, cond_tensors[:len(names)]))
        uu = dict(zip(names, cond_tensors[len(names):]))
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            return cfg_model_fn(net.backbone, cfg_scale, cc, uu)(x, t).float()

    if graphs is None:
        return lambda x, t: call(x, t, *tensors)
    return graphs.wrap(call, tensors)


@torch.no_grad()
def sample_batch(net: Net, transport: Any, sampler: Any, cond: Conditioning, *, seeds: Sequence[int],
                 labels: torch.Tensor | None, captions: list[str] | None, shape: tuple[int, ...],
                 cfg_scale: float, device: torch.device, amp: torch.dtype | None,
                 graphs: ModelGraphs | None = None) -> Any:
    """One batch: noise x0 from per-sample generators, the sampler's SampleResult (x1 (N, *shape), nfe).
    graphs: the model call's CUDA graphs, kept across the batches of one pass (None: eager)."""
    from zigma.random import per_sample_normal

    x0 = per_sample_normal(shape, seeds, device=device, dtype=torch.float32)       # (N, *shape)
    model_fn = _model_fn(net, cond, labels, captions, cfg_scale, device, amp, graphs)
    return sampler.sample(transport, model_fn, x0, seeds=list(seeds))


@dataclass
class Samples:
    """fake: uint8 (n, *shape); labels / captions: the conditioning of each sample; nfe: mean per batch;
    batch_seconds: with measure=True, the seconds of every full batch after the first (its warm-up).
    index: the sample numbers fake holds when it is one rank's share (None: all n in order); batches: how many."""

    fake: torch.Tensor
    labels: torch.Tensor | None
    captions: list[str] | None
    nfe: float
    batch_seconds: list[float]
    index: torch.Tensor | None = None
    batches: int = 1


@torch.no_grad()
def sample_images(net: Net, transport: Any, sampler: Any, cond: Conditioning, *, n: int, batch_size: int,
                  shape: tuple[int, ...], seed: int, cfg_scale: float, device: torch.device,
                  amp: torch.dtype | None, advance: Callable[[int, str], None] = lambda c, i: None,
                  measure: bool = False, part: tuple[int, int] = (0, 1),
                  graphs: ModelGraphs | None = None) -> Samples:
    """n samples, sample i from noise seeded by (seed, i), in batches of batch_size. With measure=True every
    full batch after the first (its warm-up, and the capture of `graphs`) is timed as it is drawn
    (plugins.measure.Timer). part=(rank, world): only batches rank, rank + world, ... (one rank's share;
    Samples.index says which)."""
    from plugins.measure import Timer
    from zigma.random import sample_seeds

    labels, captions = cond.prompts(n, seed)
    seeds = sample_seeds(seed, range(n))
    spans = [(lo, min(n, lo + batch_size)) for lo in range(0, n, batch_size)]
    results: dict[int, Any] = {}

    def draw(i: int) -> Any:
        lo, hi = spans[i]
        results[i] = sample_batch(net, transport, sampler, cond, seeds=seeds[lo:hi],
                                  labels=None if labels is None else labels[lo:hi],
                                  captions=None if captions is None else captions[lo:hi], shape=shape,
                                  cfg_scale=cfg_scale, device=device, amp=amp, graphs=graphs)
        advance(hi, f"nfe {results[i].nfe}")
        return results[i]

    rank, world = part
    mine = list(range(rank, len(spans), world))
    full = [i for i in mine if spans[i][1] - spans[i][0] == batch_size]
    timer = Timer(device)
    for i in mine:
        if measure and i in full[1:]:
            with timer.region():
                draw(i)
        else:
            draw(i)
    if not mine:                                          # more ranks than batches
        return Samples(torch.zeros((0, *shape), dtype=torch.uint8), labels, captions, 0.0, [],
                       torch.zeros(0, dtype=torch.long), 0)
    fake = torch.cat([to_uint8(results[i].x1).cpu() for i in mine])
    nfe = sum(results[i].nfe for i in mine) / len(mine)
    index = None if world == 1 else torch.cat([torch.arange(*spans[i]) for i in mine])
    return Samples(fake, labels, captions, nfe, timer.take(), index, len(mine))


def save_grid(fake: torch.Tensor, path: Path, n: int, *, captions: Sequence[str] | None = None,
              kind: str = "prompt") -> None:
    """A sample grid (videos: one row of frames per sample). With captions, what each image of the grid was
    conditioned on, in reading order, goes beside it as <stem>.json: {"captions": [...], "nrow": k, "kind": kind}
    (kind: 'prompt' for text conditioning, 'class' for class names)."""
    from torchvision.utils import save_image
    imgs = fake[:n].float() / 255.0
    if imgs.ndim == 5:                                   # (N, T, C, H, W)
        nrow = imgs.shape[1]
        imgs = imgs[: max(1, min(8, n))].flatten(0, 1)
    else:
        nrow = max(1, math.isqrt(max(1, imgs.shape[0])))
    save_image(imgs, path, nrow=nrow, padding=1)
    if captions is not None and fake.ndim == 4:
        path.with_suffix(".json").write_text(json.dumps(
            {"captions": list(captions[:len(imgs)]), "nrow": nrow, "kind": kind}, indent=1))
