"""Backbones: ZigMa (Mamba + per-layer scan orders), a Vim-style bidirectional baseline and DiT, for images and
videos, unconditional / class / text conditioned. `SIZES` is the one table of model sizes."""

from .dit import DiT, build_dit
from .flops import count_params, flops, mixer_flops
from .layers import POS_EMBEDS
from .presets import SIZES, Size
from .shell import Backbone
from .text import TokenEmbeddingTextEncoder, tokenize
from .vim import build_vim
from .zigma import PERMUTE_MODES, ZigMa, build_zigma

__all__ = [
    "PERMUTE_MODES",
    "POS_EMBEDS",
    "SIZES",
    "Backbone",
    "DiT",
    "Size",
    "TokenEmbeddingTextEncoder",
    "ZigMa",
    "build_dit",
    "build_vim",
    "build_zigma",
    "count_params",
    "flops",
    "mixer_flops",
    "tokenize",
]
