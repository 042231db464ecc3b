"""Built-in plugin: the Mamba-1 and Mamba-2 token mixers of zigma.mixer (thin adapters, options validated here)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from zigma.mixer import Mamba2Mixer, MambaMixer
from zigma.mixer.mamba2 import SSD_KERNELS

from .hookspecs import hookimpl
from .specs import MixerEntry

__all__ = ["Mamba1Options", "Mamba2Options"]


class Mamba1Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # how a segmented layer (a video's temporal / spatial layers) runs its equal segments: 'batch' folds them into
    # the batch (a scan per segment), 'packed' keeps one row per sample with the state reset between segments
    # (zigma/mixer/segments.py); both are exact, they differ in speed only; 'auto' picks per backend
    segment_layout: Literal["auto", "batch", "packed"] = "auto"


class Mamba2Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    headdim: int = Field(64, ge=1)        # P: channels per SSM head; expand * width must be a multiple of it
    ngroups: int = Field(1, ge=1)         # G: B/C groups shared by nheads / G heads each
    chunk_size: int = Field(256, ge=1)    # Q: SSD chunk length (exact at any value; speed only)
    # the fused path's SSD kernel: 'mamba-ssm' (its Triton SSD) or 'fla' (flash-linear-attention's simple GLA, the
    # same function; needs fla-core, `pip install 'zigma-harness[fla]'`; runs at fla's own chunk of 64, not
    # chunk_size; experimental, unmeasured). The reference path and the parameters do not change
    ssd: Literal[SSD_KERNELS] = "mamba-ssm"


@hookimpl
def register_mixers(register):
    """Registers mamba1 and mamba2."""
    register(MixerEntry("mamba1", "Mamba-1 selective scan (mamba_ssm.Mamba's parameters; fused mamba-ssm or "
                                  "pure-PyTorch reference), d_state 16 by default", build=MambaMixer,
                        options=Mamba1Options))
    register(MixerEntry("mamba2", "Mamba-2 SSD (mamba_ssm.Mamba2's parameters; mamba-ssm's Triton kernels or an exact "
                                  "chunked pure-PyTorch SSD), d_state 64, headdim 64 by default",
                        build=Mamba2Mixer, options=Mamba2Options))
