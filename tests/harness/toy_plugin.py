"""A throwaway plugin for runner tests: a 4x4 two-class dataset, an MLP backbone that can fail on purpose,
a linear path, a 4-step Euler sampler and a trivial metric.
Loaded with ZIGMA_HARNESS_PLUGINS=tests.harness.toy_plugin.

Backbone options: `width`; `fail` = none | raise | nan | kill (raise an error / return NaN / SIGKILL the process
from training step `fail_step`), only on torch.distributed rank `fail_rank` when given; `sleep` = seconds per
training forward (to make trials long enough to kill).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from plugins.hookspecs import hookimpl
from plugins.specs import (
    BackboneEntry,
    DataBundle,
    DataInfo,
    DatasetEntry,
    InterpolantEntry,
    MetricEntry,
    SamplerEntry,
)

SHAPE = (1, 4, 4)


class DataOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = 64


class _Blobs(torch.utils.data.Dataset):
    """Class 0: a bright top half, class 1: a bright bottom half, plus seeded noise; x in [-1, 1]."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 2
        base = torch.full((n, *SHAPE), -0.5)
        base[self.y == 0, :, :2] = 0.5
        base[self.y == 1, :, 2:] = 0.5
        self.x = (base + 0.1 * torch.randn((n, *SHAPE), generator=g)).clamp(-1, 1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i]}


def _load(options: DataOptions) -> DataBundle:
    train = _Blobs(options.n, 0)

    def reference(n: int, seed: int = 0) -> torch.Tensor:
        return ((_Blobs(n, 1000 + seed).x + 1) * 127.5).round().to(torch.uint8)

    info = DataInfo(name="toy-blobs", channels=1, height=4, width=4, num_classes=2, num_train=options.n,
                    source="tests.harness.toy_plugin", fingerprint="toy")
    return DataBundle(info=info, train=train, reference=reference)


class BackboneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = 16
    fail: Literal["none", "raise", "nan", "kill"] = "none"
    fail_step: int = 3
    fail_rank: int | None = None
    fail_message: str = "toy failure on purpose"
    sleep: float = 0.0


class ToyMLP(nn.Module):
    """x (N, 1, 4, 4), t (N,), y (N,) -> (N, 1, 4, 4)."""

    def __init__(self, *, width: int, num_classes: int | None, fail: str, fail_step: int, sleep: float,
                 device=None, fail_message: str = "toy failure on purpose", fail_rank: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16 + 1 + width, width, device=device), nn.SiLU(),
                                 nn.Linear(width, 16, device=device))
        self.label = nn.Embedding((num_classes or 0) + 1, width, device=device)
        self.fail, self.fail_step, self.sleep, self.calls = fail, fail_step, sleep, 0
        self.fail_message = fail_message
        if fail_rank is not None and int(os.environ.get("RANK", "0")) != fail_rank:
            self.fail = "none"                  # another rank of a distributed trial fails

    def forward(self, x, t, *, y=None, context=None, context_mask=None):
        """x (N, 1, 4, 4), t (N,) -> (N, 1, 4, 4)."""
        if self.training:
            self.calls += 1
            if self.sleep:
                time.sleep(self.sleep)
            if self.fail == "raise" and self.calls > self.fail_step:
                raise RuntimeError(self.fail_message)
            if self.fail == "kill" and self.calls > self.fail_step:
                os.kill(os.getpid(), signal.SIGKILL)
        y = torch.zeros(x.shape[0], dtype=torch.long, device=x.device) if y is None else y
        h = torch.cat([x.flatten(1), t[:, None].to(x.dtype), self.label(y)], dim=1)   # (N, 17 + width)
        out = self.net(h).view_as(x)
        if self.training and self.fail == "nan" and self.calls > self.fail_step:
            out = out * float("nan")
        return out


def _build_backbone(*, size, input_shape, patch_size, scan, num_classes, context_dim, pos_embed,
                    mixer_backend, device, dtype, width, fail, fail_step, sleep, fail_message="toy failure on purpose",
                    fail_rank=None, generator=None) -> nn.Module:
    assert tuple(input_shape) == SHAPE, f"toy-mlp takes {SHAPE}, got {input_shape}"
    return ToyMLP(width=width, num_classes=num_classes, fail=fail, fail_step=fail_step, sleep=sleep,
                  device=None if str(device) == "meta" else device, fail_message=fail_message, fail_rank=fail_rank)


class MeanGap:
    name = "toy-gap"

    def compute(self, fake: torch.Tensor, ctx) -> dict:
        real = ctx.data.reference(fake.shape[0], 0)
        gap = (fake.float().mean() - real.float().mean()).abs().item() / 255.0
        return {"toy-gap": gap, "meta.implementation": "tests.harness.toy_plugin",
                "meta.num_samples": len(fake)}


def _linear():
    from zigma.interpolants import LinearPath
    return LinearPath()


def _euler():
    from zigma.interpolants import Euler
    return Euler(steps=4)


@hookimpl
def register_datasets(register):
    register(DatasetEntry(name="toy-blobs", description="4x4 two-class blobs (tests)", load=_load,
                          options=DataOptions))


@hookimpl
def register_backbones(register):
    register(BackboneEntry(name="toy-mlp", description="an MLP that can fail on purpose (tests)",
                           build=_build_backbone, options=BackboneOptions, uses_scan=False))


@hookimpl
def register_interpolants(register):
    register(InterpolantEntry(name="toy-linear", description="zigma's linear path (tests)", build=_linear))


@hookimpl
def register_samplers(register):
    register(SamplerEntry(name="toy-euler", description="4-step Euler (tests)", build=_euler))


@hookimpl
def register_metrics(register):
    register(MetricEntry(name="toy-gap", description="|mean(fake) - mean(real)| / 255 (tests)",
                         build=MeanGap, label="gap"))
