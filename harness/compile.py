"""torch.compile switches (`train.compile`, `eval.compile`): the training model and the sampler's model call.

Fused mamba-ssm kernels are opaque to Dynamo and graph-break; the graph compiles around them. Off (false) is
today's eager path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["compile_mode", "maybe_compile", "sampling_net"]

_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(setting: bool | str) -> str | None:
    """None (eager) for False; "default" for True; else the torch.compile mode named."""
    if setting is False:
        return None
    if setting is True:
        return "default"
    if setting in _MODES:
        return setting
    raise ValueError(f"unknown compile setting {setting!r} (false, true, {', '.join(_MODES)})")


def maybe_compile(module: nn.Module, setting: bool | str) -> nn.Module:
    """`module` itself when eager, else torch.compile(module, mode=...) (same parameters, same state_dict)."""
    mode = compile_mode(setting)
    if mode is None:
        return module
    _allow_recompiles()
    return torch.compile(module, mode=mode)


def _allow_recompiles(limit: int = 64) -> None:
    """A worker compiles a new model every trial (scan orders differ): raise Dynamo's per-function recompile limit
    (8 by default; past it the model runs eager without a word) so a whole study stays compiled."""
    import torch._dynamo.config as dynamo
    for name in ("recompile_limit", "cache_size_limit"):      # the name changed across torch versions
        if hasattr(dynamo, name) and getattr(dynamo, name) < limit:
            setattr(dynamo, name, limit)
            return


def sampling_net(ema: Any, setting: bool | str) -> Any:
    """The EMA Net with its backbone compiled for sampling (a new Net sharing every parameter), or ema itself."""
    if compile_mode(setting) is None:
        return ema
    from harness.model import Net
    return Net(maybe_compile(ema.backbone, setting), ema.text_encoder).eval()
