"""What `python -m benchmarks.bench` and `harness bench` measure: the variants, the Config, and the command-line
options of both, defined once here (OPTIONS)."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zigma.backbones import SIZES
from zigma.mixer import Mamba2Mixer, MambaMixer

__all__ = ["BACKBONES", "CEILING_AFTER", "CUDA_BUDGET_S", "DTYPES", "MIXERS", "OPTIONS", "STUDY_VARIANTS", "Config",
           "Option", "Variant", "VARIANTS", "check_config", "make_config", "parser"]

BACKBONES = ("zigma", "vim", "dit")
#: default time budget of a CUDA run (s): no point starts later, so the default run ends in about 5 minutes (README);
#: the variants are ordered so that the goal comparison, checkpointing and the ceiling come first
CUDA_BUDGET_S = 270.0
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Variant:
    """One line of the comparison: a backbone and how it is run."""

    backbone: str                  # zigma | vim | dit
    description: str
    scan: str | None = None        # registered scan name (zigma only; vim is sweep-2, dit has no scan)
    permute_mode: str | None = None  # zigma: 'relative' (ours) | 'around' (official)
    mixer_backend: str | None = None  # None: fused on CUDA, reference on CPU; or 'fused' | 'reference'
    compiled: bool = False         # torch.compile of everything but the Mamba mixers (with --compile)
    small_batch: bool = False      # run at Config.small_batch_tokens, tokens <= Config.small_max_tokens
    checkpointing: bool = False    # activation checkpointing of every block (backbone option `checkpointing`)
    mixer: str = "mamba1"          # zigma/vim token mixer: MIXERS key
    mixer_options: tuple[tuple[str, Any], ...] = ()   # keyword arguments of the mixer (e.g. Mamba-2's chunk_size)
    default: bool = True           # in the default set (else only when named in --variants)


VARIANTS: dict[str, Variant] = {
    "zigzag-8": Variant("zigma", "ZigMa, zigzag-8, one relative permutation between layers (ours)",
                        "zigzag-8", "relative"),
    "attention": Variant("dit", "DiT, SDPA self-attention + MLP"),
    "no-scan": Variant("zigma", "ZigMa, sweep-1: raster order in every layer, no permutation at all",
                       "sweep-1", "relative"),
    "zigzag-8-ckpt": Variant("zigma", "zigzag-8 with activation checkpointing (each block recomputed in backward)",
                             "zigzag-8", "relative", checkpointing=True),
    "attention-ckpt": Variant("dit", "DiT with activation checkpointing (each block recomputed in backward)",
                              checkpointing=True),
    "zigzag-8-around": Variant("zigma", "ZigMa, zigzag-8, permute + un-permute around every mixer (official)",
                               "zigzag-8", "around"),
    "zigzag-8-fused": Variant("zigma", "zigzag-8 with the fused mamba-ssm mixer, at the small batch",
                              "zigzag-8", "relative", "fused", small_batch=True),
    "zigzag-8-reference": Variant("zigma", "zigzag-8 with the pure-PyTorch reference mixer, at the small batch",
                                  "zigzag-8", "relative", "reference", small_batch=True),
    "sweep-2": Variant("vim", "Vim-style: raster + reversed raster in every layer (bidirectional)"),
    "zigzag-8-compiled": Variant("zigma", "zigzag-8, torch.compile of all but the mixers",
                                 "zigzag-8", "relative", compiled=True),
    "attention-compiled": Variant("dit", "DiT, torch.compile of the whole model", compiled=True),
    "zigzag-8-mamba2": Variant("zigma", "ZigMa, zigzag-8 (relative), Mamba-2 (SSD) mixer", "zigzag-8", "relative",
                               mixer="mamba2"),
    "no-scan-mamba2": Variant("zigma", "ZigMa, sweep-1 (no permutation), Mamba-2 (SSD) mixer", "sweep-1",
                              "relative", mixer="mamba2"),
    "zigzag-8-mamba2-compiled": Variant("zigma", "zigzag-8, Mamba-2 mixer, torch.compile of all but the mixers",
                                        "zigzag-8", "relative", compiled=True, mixer="mamba2"),
    # mamba-ssm's own SSD knob: a shorter chunk trades intra-chunk (quadratic in the chunk) work for state passing
    "zigzag-8-mamba2-c128": Variant("zigma", "zigzag-8, Mamba-2 mixer with SSD chunks of 128 (default 256)",
                                    "zigzag-8", "relative", mixer="mamba2", mixer_options=(("chunk_size", 128),),
                                    default=False),
    "zigzag-8-mamba2-c64": Variant("zigma", "zigzag-8, Mamba-2 mixer with SSD chunks of 64 (default 256)",
                                   "zigzag-8", "relative", mixer="mamba2", mixer_options=(("chunk_size", 64),),
                                   default=False),
    # the same model with Mamba-2's SSD run by flash-linear-attention's chunk_simple_gla (mixer option ssd 'fla';
    # needs fla-core, else its points are skipped naming the install command); experimental
    "zigzag-8-mamba2-fla": Variant("zigma", "zigzag-8, Mamba-2 mixer, SSD by flash-linear-attention (ssd 'fla')",
                                   "zigzag-8", "relative", mixer="mamba2", mixer_options=(("ssd", "fla"),),
                                   default=False),
    "zigzag-8-mamba2-fla-compiled": Variant("zigma", "zigzag-8-mamba2-fla, torch.compile of all but the mixers",
                                            "zigzag-8", "relative", compiled=True, mixer="mamba2",
                                            mixer_options=(("ssd", "fla"),), default=False),
}
#: token mixers of the zigma/vim variants (`--mixers`): the Mamba-1 and Mamba-2 mixers of zigma.mixer
MIXERS = {"mamba1": MambaMixer, "mamba2": Mamba2Mixer}
#: the kernel ceiling runs as soon as the points of these variants (those in the run) are done
CEILING_AFTER = ("zigzag-8", "attention", "no-scan", "zigzag-8-ckpt", "attention-ckpt")


@dataclass(frozen=True)
class Config:
    """What to measure and how (defaults: the GPU run of benchmarks/README.md)."""

    tokens: tuple[int, ...] = (256, 1024, 4096, 16384, 65536)  # tokens a sample (square grids)
    variants: tuple[str, ...] = ()        # VARIANTS keys, in run order
    batch_tokens: int = 65536             # tokens a step: batch = max(1, batch_tokens // tokens)
    small_batch_tokens: int = 4096        # ... for the fused-vs-reference pair and the mixer check
    small_max_tokens: int = 4096          # largest tokens for the pair and the mixer check
    size: str = "B"                       # SIZES key (mamba row for zigma/vim, attention row for dit)
    patch_size: int = 2
    channels: int = 4                     # latent channels (SD VAE)
    num_classes: int = 1000
    device: str = "cuda"
    dtype: str = "bf16"                   # autocast dtype on CUDA (CPU runs in fp32)
    warmup: int = 2                       # untimed calls before each timing
    iters: int = 6                        # timed calls (median reported)
    nfe: int = 50                         # function evaluations a sample, for sample_ms_per_image
    lr: float = 1e-4
    compile_backend: str = "inductor"
    mixer_check: bool = True              # reference mixer vs an nn.Linear stack of its size (issue 11 CPU goal)
    permute_check: bool = True            # cost of one token permutation (gather) forward + backward
    ceiling: bool = True                  # one mixer / ZigMa block / DiT block fwd+bwd (the kernel ceiling)
    time_budget_s: float | None = None    # points starting later are skipped; None: CUDA_BUDGET_S on CUDA, none on
                                          # CPU; inf: no budget
    seed: int = 0
    threads: int | None = None            # torch.set_num_threads on CPU
    extra: dict = field(default_factory=dict)  # free-form notes recorded in the output


def _split(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def make_config(*, tokens: str | None = None, backbones: str | None = None, variants: str | None = None,
                compile: bool = False, mixers: str | None = None, **options) -> Config:
    """Config from command-line strings ('256,1024', 'zigma,dit', mixers 'mamba1,mamba2'); ValueError names the
    bad value. `mixers` keeps the zigma/vim variants of those mixers (default: all)."""
    if tokens is not None:
        options["tokens"] = tuple(int(t) for t in _split(tokens))
    picked_backbones = _split(backbones) if backbones else list(BACKBONES)
    for b in picked_backbones:
        if b not in BACKBONES:
            raise ValueError(f"unknown backbone {b!r}; available: {', '.join(BACKBONES)}")
    if variants:
        names = _split(variants)
        for name in names:
            if name not in VARIANTS:
                near = difflib.get_close_matches(name, VARIANTS, n=1)
                hint = f" Did you mean {near[0]!r}?" if near else ""
                raise ValueError(f"unknown variant {name!r}.{hint} Available: {', '.join(VARIANTS)}")
    else:
        names = [n for n, v in VARIANTS.items() if v.default and (not v.compiled or compile)]
    picked_mixers = _split(mixers) if mixers else list(MIXERS)
    for m in picked_mixers:
        if m not in MIXERS:
            raise ValueError(f"unknown mixer {m!r}; available: {', '.join(MIXERS)}")
    names = [n for n in names if VARIANTS[n].backbone in picked_backbones
             and (VARIANTS[n].backbone == "dit" or VARIANTS[n].mixer in picked_mixers)]
    if not names:
        raise ValueError(f"no variant left for backbones {', '.join(picked_backbones)}")
    cfg = Config(variants=tuple(names), **options)
    check_config(cfg)
    return cfg


def check_config(cfg: Config) -> None:
    """ValueError naming the first bad value of cfg."""
    if not cfg.tokens or any(t < 1 or round(t ** 0.5) ** 2 != t for t in cfg.tokens):
        raise ValueError(f"tokens must be perfect squares (square grids), got {cfg.tokens}")
    if cfg.size not in SIZES:
        raise ValueError(f"unknown size {cfg.size!r}; available: {', '.join(SIZES)}")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"unknown dtype {cfg.dtype!r}; available: {', '.join(DTYPES)}")
    if cfg.device not in ("cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ValueError(f"device must be cpu or cuda[:i], got {cfg.device!r}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no CUDA device here (use --device cpu)")
    if min(cfg.batch_tokens, cfg.small_batch_tokens, cfg.iters, cfg.nfe) < 1 or cfg.warmup < 0:
        raise ValueError("batch tokens, iters and nfe must be >= 1 and warmup >= 0")


# ----------------------------------------------------------------------------------------------- the options
#: study-throughput variants run by default with --study (benchmarks/study_throughput.py VARIANTS)
STUDY_VARIANTS = "baseline,resident,eval-batch,ckpt-async,all"


@dataclass(frozen=True)
class Option:
    """One command-line option of the bench: its flag, default (from Config where it has one) and help."""

    flag: str
    help: str
    default: Any = None
    type: Callable | None = None
    choices: tuple[str, ...] | None = None
    negate: bool = False                  # --no-X: a boolean that defaults to True


_D = Config()
OPTIONS: tuple[Option, ...] = (
    Option("--tokens", "tokens a sample (square grids), comma separated", ",".join(map(str, _D.tokens))),
    Option("--backbones", "backbones to measure, comma separated", ",".join(BACKBONES)),
    Option("--variants", "variants to run, comma separated (default: all but the compiled ones; --list names "
           f"them); with --study: study-throughput variants (default {STUDY_VARIANTS})"),
    Option("--batch-tokens", "tokens a training step: batch = max(1, batch_tokens // tokens)", _D.batch_tokens, int),
    Option("--small-batch-tokens", "tokens a step for the fused-vs-reference pair", _D.small_batch_tokens, int),
    Option("--small-max-tokens", "largest tokens for the pair and the mixer check", _D.small_max_tokens, int),
    Option("--size", "SIZES preset (mamba row for zigma/vim, attention row for dit)", _D.size, choices=tuple(SIZES)),
    Option("--device", "cuda, cuda:i or cpu", _D.device),
    Option("--dtype", "autocast dtype on CUDA (CPU runs fp32)", _D.dtype, choices=tuple(DTYPES)),
    Option("--warmup", "untimed calls before each timing", _D.warmup, int),
    Option("--iters", "timed calls; the median is reported", _D.iters, int),
    Option("--nfe", "function evaluations a sample, for sample_ms_per_image", _D.nfe, int),
    Option("--compile", "also run the torch.compile variants", False),
    Option("--mixers", "token mixers of the zigma/vim variants, comma separated", ",".join(MIXERS)),
    Option("--compile-backend", "torch.compile backend", _D.compile_backend),
    Option("--no-mixer-check", "skip the reference mixer vs an nn.Linear stack of its size", negate=True),
    Option("--no-permute-check", "skip the cost of one token permutation, forward and backward", negate=True),
    Option("--no-ceiling", "skip the kernel ceiling (one mixer / ZigMa block / DiT block alone)", negate=True),
    Option("--time-budget-s", f"no point starts after this many seconds (default {CUDA_BUDGET_S:g} on CUDA, none on "
           "CPU; inf: none)", None, float),
    Option("--threads", "torch threads on CPU", None, int),
    Option("--out", "a folder (-> bench.json, bench.png) or FILE.json", "bench-out"),
    Option("--plot", "the plot's path (default: beside the JSON)"),
    Option("--list", "name every variant and exit", False),
    Option("--study", "study throughput instead: whole trials of STUDY.yaml, the first --trials per --variants "
           "(benchmarks/study_throughput.py; --device, --time-budget-s, --out apply)", None, Path),
    Option("--preset", "with --study: apply this preset"),
    Option("--trials", "with --study: trials per variant", 2, int),
)


def parser(prog: str) -> argparse.ArgumentParser:
    """The bench's argparse parser, built from OPTIONS (`python -m benchmarks.bench` and `harness bench`)."""
    p = argparse.ArgumentParser(prog=prog, description="Training-step time, sampling time and peak memory of ZigMa, "
                                "Vim and DiT side by side; or, with --study, a study's trials phase by phase.")
    for o in OPTIONS:
        if o.negate:
            p.add_argument(o.flag, dest=o.flag[5:].replace("-", "_"), action="store_false", help=o.help)
        elif o.default is False:
            p.add_argument(o.flag, dest="list_variants" if o.flag == "--list" else None, action="store_true",
                           help=o.help)
        else:
            p.add_argument(o.flag, default=o.default, type=o.type, choices=o.choices, help=o.help)
    return p
