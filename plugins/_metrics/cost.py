"""Cost metrics: parameters and forward FLOPs (timing and peak memory live in plugins/measure.py).

FLOPs follow the DiT / ZigMa / fvcore convention: one multiply-accumulate = one FLOP, forward pass only.
Backbones are counted by `zigma.backbones.flops` when it is present: torch.utils.flop_counter.FlopCounterMode
for everything it sees, plus the documented formula for the selective scan, which the counter cannot see inside
(9*B*L*E*N per direction, as in the official fvcore helper; see zigma/backbones/flops.py). Any other module is
counted by FlopCounterMode alone (its 2-per-MAC count halved).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["count_params", "flops"]

def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def flops(model: nn.Module, *inputs: Any, **kwargs: Any) -> dict[str, Any]:
    """Forward FLOPs (1 per MAC) of model(*inputs, **kwargs) -> {'flops', 'gflops', 'flops_method'}.

    zigma backbones (and anything holding a MambaMixer) go through zigma.backbones.flops(model, x, t=0.5 default).
    """
    try:
        from zigma.backbones import Backbone
        from zigma.backbones import flops as backbone_flops
        from zigma.mixer import MambaMixer
    except ImportError:
        backbone_flops = None
    if backbone_flops is not None and (isinstance(model, Backbone)
                                       or any(isinstance(m, MambaMixer) for m in model.modules())):
        total = int(backbone_flops(model, *inputs, **kwargs))
        method = "zigma.backbones.flops (FlopCounterMode; Mamba mixers by formula)"
    else:
        from torch.utils.flop_counter import FlopCounterMode

        from zigma.backbones.flops import _CUSTOM  # CPU attention counted too (see there)

        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_CUSTOM) as counter:
            model(*inputs, **kwargs)
        total = counter.get_total_flops() // 2
        method = "torch.utils.flop_counter.FlopCounterMode (MACs)"
    return {"flops": total, "gflops": total / 1e9, "flops_method": method}
