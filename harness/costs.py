"""Model cost figures a trial reports besides its loop timings: parameters (millions) and GFLOPs per image."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["model_costs", "count_gflops"]


@torch.no_grad()
def count_gflops(model: nn.Module, shape: tuple[int, ...], *, device: torch.device,
                 kwargs: dict[str, Any] | None = None) -> float:
    """Forward GFLOPs for one input of `shape` (torch's FLOP counter: matmuls and convolutions, 2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode
    x = torch.zeros((1, *shape), device=device)
    t = torch.full((1,), 0.5, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x, t, **(kwargs or {}))
    return counter.get_total_flops() / 1e9


def model_costs(backbone: nn.Module, shape: tuple[int, ...], *, device: torch.device, kind: str,
                num_classes: int | None, context: dict[str, torch.Tensor] | None) -> dict[str, float]:
    """{'params_m': ..., 'gflops': ...} of a trained backbone (eval mode, conditioned like sampling)."""
    kwargs: dict[str, Any] = {}
    if kind == "class":
        kwargs["y"] = torch.zeros(1, dtype=torch.long, device=device)
    elif kind == "text" and context is not None:
        kwargs.update(context)
    params = sum(p.numel() for p in backbone.parameters())
    return {"params_m": params / 1e6, "gflops": count_gflops(backbone, shape, device=device, kwargs=kwargs)}
