"""A throwaway third-party mixer plugin for tests: 'causal-mean', y_t = W mean(x_1..x_t) per segment and direction.
Loaded with ZIGMA_HARNESS_PLUGINS=tests.plugins.toy_mixer (or load_registries(["tests.plugins.toy_mixer"]))."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from plugins import MixerEntry, hookimpl


class CausalMeanOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = 1.0


class CausalMean(nn.Module):
    """(B, L, D) -> (B, L, D): running mean over each segment, summed over directions, then a Linear."""

    def __init__(self, d_model, *, num_directions=1, backend="auto", layer_idx=None, generator=None, d_conv=4,
                 expand=2, d_state=None, scale=1.0, device=None, dtype=None):
        super().__init__()
        self.num_directions, self.scale = num_directions, scale
        self.proj = nn.Linear(d_model, d_model, device=device, dtype=dtype)

    def forward(self, x, *, segments=1, branch_index=None):
        b, l, d = x.shape
        orders = [torch.arange(l, device=x.device)] + [
            torch.arange(l - 1, -1, -1, device=x.device) if idx is None else idx
            for idx in (branch_index or [None] * (self.num_directions - 1))]
        y = 0
        for idx in orders:
            u = x[:, idx].reshape(b * segments, l // segments, d)
            mean = u.cumsum(1) / torch.arange(1, l // segments + 1, device=x.device)[:, None]
            y = y + mean.reshape(b, l, d)[:, torch.argsort(idx)]
        return self.proj(self.scale * y)


@hookimpl
def register_mixers(register):
    register(MixerEntry(name="causal-mean", description="running mean (test plugin)", build=CausalMean,
                        options=CausalMeanOptions))
