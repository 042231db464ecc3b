"""Built-in plugin: the zigma, vim and dit backbones (thin adapters around zigma.backbones)."""

from __future__ import annotations

import inspect
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from zigma import backbones as zb
from zigma.mixer import FusedUnavailableError

from .errors import MissingDependencyError
from .hookspecs import hookimpl
from .specs import BackboneEntry

__all__ = ["DitOptions", "VimOptions", "ZigmaOptions"]


def _defaults(build) -> dict[str, Any]:
    """The keyword defaults of a zigma.backbones builder: the options below take them from there, spelled once."""
    return {k: p.default for k, p in inspect.signature(build).parameters.items() if p.default is not p.empty}


_Z, _D = _defaults(zb.build_zigma), _defaults(zb.build_dit)


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    temporal_pos_embed: bool = _Z["temporal_pos_embed"]   # video: add a learned zero-init per-frame embedding
    checkpointing: bool = _Z["checkpointing"]             # study key backbone.checkpointing: activation checkpointing, each
    #                                           block's activations recomputed in backward (training only): far
    #                                           less memory for about one more forward of the blocks a step


class ZigmaOptions(_Options):
    mlp_ratio: float = Field(_Z["mlp_ratio"], ge=0.0)     # 0 = no MLP sub-block (the paper's block)
    drop_path: float = Field(_Z["drop_path"], ge=0.0, lt=1.0)   # stochastic depth, max rate (official 0.1); needs a generator
    permute_mode: Literal["relative", "around"] = _Z["permute_mode"]   # one relative gather between layers, or
    #                                           permute + un-permute around every mixer (the released code)
    d_state: int | None = Field(_Z["d_state"], ge=1)   # SSM state size N; None: the mixer's default (mamba1 16, mamba2 64)
    expand: int = Field(_Z["expand"], ge=1)              # d_inner = expand * width


class VimOptions(ZigmaOptions):
    pass


class DitOptions(_Options):
    mlp_ratio: float = Field(_D["mlp_ratio"], gt=0.0)


def _guarded(build):
    """Turn a missing fused kernel into the harness's MissingDependencyError."""
    def wrapper(**kwargs):
        try:
            return build(**kwargs)
        except FusedUnavailableError as exc:
            raise MissingDependencyError(str(exc)) from None
    wrapper.__doc__ = build.__doc__
    return wrapper


@hookimpl
def register_backbones(register):
    """Registers zigma, vim and dit."""
    register(BackboneEntry("zigma", "ZigMa: adaLN blocks around a token mixer (backbone.mixer), layer i scanning the scan's order i",
                           build=_guarded(zb.build_zigma), options=ZigmaOptions, uses_mixer=True))
    register(BackboneEntry("vim", "Vim-style bidirectional Mamba (raster + reversed) in every layer, ZigMa shell",
                           build=_guarded(zb.build_vim), options=VimOptions, uses_scan=False,
                           uses_mixer=True))
    register(BackboneEntry("dit", "DiT: adaLN-Zero self-attention + MLP blocks (scaled_dot_product_attention)",
                           build=zb.build_dit, options=DitOptions, uses_scan=False))
