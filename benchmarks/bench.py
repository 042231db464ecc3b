"""Training-step time, sampling time and peak memory of ZigMa, Vim and DiT side by side, in one process.

    python -m benchmarks.bench --device cuda --out bench-out/          # the full GPU run (see benchmarks/README.md)
    python -m benchmarks.bench --device cpu --size tiny --tokens 16,64 --batch-tokens 256 --out /tmp/b

Per (variant, tokens) point: the model at a SIZES preset (mamba row for zigma/vim, attention row for dit: the
parameter counts match within ~10%), class-conditional, on latents (channels, 2*side, 2*side) patchified into
side*side tokens, batch = max(1, batch_tokens // tokens) so every point sees the same tokens a step.
- train: one flow-matching step (forward, MSE loss, backward, AdamW step; bf16 autocast on CUDA), median of N;
- sample: one forward at the same batch under inference_mode (one NFE); sample_ms_per_image = forward * nfe / batch;
- peak memory since a reset before the model is built (see plugins/measure.py), for training and for sampling.
A point that runs out of memory is recorded as status "oom" and the run goes on; a variant that cannot run here
(fused mixer without mamba-ssm or CUDA) is "skipped" with the reason. Results are written after every point.

Variants (`VARIANTS`, run in this order): ZigMa with zigzag-8 and one relative permutation between layers (ours),
DiT, ZigMa with no permutation at all (sweep-1: the scan-order overhead), ZigMa and DiT with activation
checkpointing (backbone option `checkpointing`), then ZigMa with permute + un-permute around every mixer (the
official code), with the fused vs the reference mixer (at a smaller batch, since the reference scan holds
(tokens, d_inner, d_state) fp32 tensors), Vim, and torch.compile of everything but the mixers (--compile).
The kernel ceiling (micro.py: one mixer, one ZigMa block, one DiT block) runs once the first five are done.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from zigma.backbones import SIZES, build_dit, build_vim, build_zigma, flops
from zigma.mixer import FusedUnavailableError, Mamba2Mixer, MambaMixer, fused_available
from zigma.mixer.fused import fused_kernels
from zigma.scans import LayerCycle, Sweep, zigzag_paths

from .analysis import goal_ratios, plot, summary_lines
from plugins.measure import PeakMemory, Timing, is_oom, time_calls
from .micro import kernel_ceiling, mixer_vs_linear, permute_cost

__all__ = ["Variant", "VARIANTS", "CEILING_AFTER", "Config", "make_config", "points", "run", "write",
           "output_paths", "summary_lines", "fused_path", "main"]

BACKBONES = ("zigma", "vim", "dit")
BUILDERS = {"zigma": build_zigma, "vim": build_vim, "dit": build_dit}
SCANS = {"zigzag-8": lambda: LayerCycle(zigzag_paths, 8, name="zigzag-8"), "sweep-1": lambda: Sweep(1, name="sweep-1")}
#: every measured field of a row (None where the point did not run)
MEASURED = ("step_ms", "step_ms_q1", "step_ms_q3", "train_images_per_s", "train_tokens_per_s", "forward_ms", "nfe",
            "sample_ms_per_image", "peak_memory_gb", "sample_peak_memory_gb", "params_m", "gflops", "mixer_backend")
#: default time budget of a CUDA run (s): no point starts later, so the default run ends in about 5 minutes (README);
#: the variants are ordered so that the goal comparison, checkpointing and the ceiling come first
CUDA_BUDGET_S = 270.0
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Variant:
    """One line of the comparison: a backbone and how it is run."""

    backbone: str                  # zigma | vim | dit
    description: str
    scan: str | None = None        # SCANS key (zigma only; vim is sweep-2, dit has no scan)
    permute_mode: str | None = None  # zigma: 'relative' (ours) | 'around' (official)
    mixer_backend: str | None = None  # None: fused on CUDA, reference on CPU; or 'fused' | 'reference'
    compiled: bool = False         # torch.compile of everything but the Mamba mixers (with --compile)
    small_batch: bool = False      # run at Config.small_batch_tokens, tokens <= Config.small_max_tokens
    checkpointing: bool = False    # activation checkpointing of every block (backbone option `checkpointing`)
    mixer: str = "mamba1"          # zigma/vim token mixer: MIXERS key


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
                import difflib
                near = difflib.get_close_matches(name, VARIANTS, n=1)
                hint = f" Did you mean {near[0]!r}?" if near else ""
                raise ValueError(f"unknown variant {name!r}.{hint} Available: {', '.join(VARIANTS)}")
    else:
        names = [n for n, v in VARIANTS.items() if not v.compiled or compile]
    picked_mixers = _split(mixers) if mixers else list(MIXERS)
    for m in picked_mixers:
        if m not in MIXERS:
            raise ValueError(f"unknown mixer {m!r}; available: {', '.join(MIXERS)}")
    names = [n for n in names if VARIANTS[n].backbone in picked_backbones
             and (VARIANTS[n].backbone == "dit" or VARIANTS[n].mixer in picked_mixers)]
    if not names:
        raise ValueError(f"no variant left for backbones {', '.join(picked_backbones)}")
    cfg = Config(variants=tuple(names), **options)
    _check(cfg)
    return cfg


def _check(cfg: Config) -> None:
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


# ----------------------------------------------------------------------------------------------- one point
def _batch(cfg: Config, variant: Variant, tokens: int) -> int:
    total = cfg.small_batch_tokens if variant.small_batch else cfg.batch_tokens
    return max(1, total // tokens)


def _backend(variant: Variant, device: torch.device) -> str:
    return variant.mixer_backend or ("fused" if device.type == "cuda" else "reference")


def _build(variant: Variant, tokens: int, cfg: Config, device: torch.device) -> torch.nn.Module:
    """The variant's model for `tokens` tokens, fp32 weights on `device`."""
    side = round(tokens ** 0.5)
    shape = (cfg.channels, side * cfg.patch_size, side * cfg.patch_size)
    kw = dict(size=cfg.size, input_shape=shape, patch_size=cfg.patch_size, num_classes=cfg.num_classes,
              pos_embed="sincos", device=device,  # sincos: parameter count independent of tokens
              generator=torch.Generator(device).manual_seed(cfg.seed), checkpointing=variant.checkpointing)
    if variant.backbone == "dit":
        return build_dit(**kw)
    kw["mixer_backend"] = _backend(variant, device)
    kw["mixer"] = MIXERS[variant.mixer]
    if variant.backbone == "vim":
        return build_vim(**kw)
    return build_zigma(scan=SCANS[variant.scan](), permute_mode=variant.permute_mode, **kw)


def _compile(model: torch.nn.Module, backend: str) -> torch.nn.Module:
    """torch.compile of the model with every mixer left eager (its kernels are already fused)."""
    for m in model.modules():
        if isinstance(m, tuple(MIXERS.values())):
            m.forward = torch.compiler.disable(m.forward)
    return torch.compile(model, backend=backend)


def _autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def measure_point(variant: Variant, tokens: int, cfg: Config, device: torch.device, dtype: torch.dtype,
                  memory: PeakMemory) -> dict:
    """Build, train-step, sample and meter one (variant, tokens) point -> the measured fields of its row."""
    batch = _batch(cfg, variant, tokens)
    memory.reset()
    model = _build(variant, tokens, cfg, device)
    out = {"params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    mixers = [m for m in model.modules() if isinstance(m, tuple(MIXERS.values()))]
    g = torch.Generator(device).manual_seed(cfg.seed + 1)
    x1 = torch.randn(batch, *model.input_shape, generator=g, device=device)        # "data"
    x0 = torch.randn(batch, *model.input_shape, generator=g, device=device)        # noise
    t = torch.rand(batch, generator=g, device=device)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=g, device=device)
    xt = t.view(-1, 1, 1, 1) * x1 + (1 - t.view(-1, 1, 1, 1)) * x0                  # linear path
    ut = x1 - x0                                                                  # its velocity
    out["mixer_backend"] = mixers[0].backend_used(xt) if mixers else None
    try:
        with _autocast(device, dtype):
            out["gflops"] = 2 * flops(model, xt[:1], t[:1], y=y[:1]) / 1e9  # forward, 2 FLOPs a MAC, per image
    except Exception as err:  # noqa: BLE001 - a counting failure must not lose the timing
        out["gflops"], out["gflops_error"] = None, f"{type(err).__name__}: {err}"
    net = _compile(model, cfg.compile_backend) if variant.compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0,
                            fused=device.type == "cuda")

    def train_step() -> None:
        with _autocast(device, dtype):
            pred = net(xt, t, y=y)                                                # (N, C, H, W)
        loss = F.mse_loss(pred.float(), ut)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    warmup = cfg.warmup + (2 if variant.compiled else 0)
    model.train()
    train = time_calls(train_step, device=device, warmup=warmup, iters=cfg.iters)
    out["peak_memory_gb"] = memory.read()
    opt.state.clear()                                                             # AdamW moments freed
    model.zero_grad(set_to_none=True)
    model.eval()
    memory.reset()

    def sample_forward() -> None:
        with torch.inference_mode(), _autocast(device, dtype):
            net(xt, t, y=y)

    fwd = time_calls(sample_forward, device=device, warmup=warmup, iters=cfg.iters)
    out["sample_peak_memory_gb"] = memory.read()
    out.update(_timing_fields(train, fwd, batch, tokens, cfg.nfe))
    return out


def _timing_fields(train: Timing, fwd: Timing, batch: int, tokens: int, nfe: int) -> dict:
    q1, q3 = train.quartiles
    return {
        "step_ms": train.median, "step_ms_q1": q1, "step_ms_q3": q3,
        "train_images_per_s": 1000.0 * batch / train.median,
        "train_tokens_per_s": 1000.0 * batch * tokens / train.median,
        "forward_ms": fwd.median, "nfe": nfe, "sample_ms_per_image": fwd.median * nfe / batch,
    }


# ------------------------------------------------------------------------------------------------ the run
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def fused_path() -> str | None:
    """The fused mixer's path here: 'mamba_inner_fn (causal-conv1d)', 'selective_scan_fn + torch conv1d', or None
    where mamba-ssm does not import (zigma.mixer.fused uses mamba_inner_fn only when causal-conv1d imports too)."""
    if not fused_available():
        return None
    if fused_kernels()["mamba_inner_fn"] is not None:
        return "mamba_inner_fn (causal-conv1d)"
    return "selective_scan_fn + torch conv1d"


def _versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "fused_available": fused_available()}
    for pkg in ("mamba_ssm", "causal_conv1d", "triton"):
        try:
            out[pkg] = __import__(pkg).__version__
        except Exception as err:  # noqa: BLE001 - absent or broken: recorded as None, with why
            out[pkg] = None
            out[f"{pkg}_import_error"] = f"{type(err).__name__}: {str(err)[:200]}"
    return out


def _cleanup(device: torch.device, *, collect: bool = True) -> None:
    """Free what the last point left (a full gc pass only where it matters: it costs ~1 s on a busy CPU)."""
    if collect or device.type == "cuda":
        gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _prime(cfg: Config, device: torch.device, dtype: torch.dtype) -> str | None:
    """Run a tiny ZigMa and DiT once, so one-time set-up (lazy imports, library handles and workspaces, kernel
    loading) is not charged to the first measured point's time or memory. -> why it failed, or None."""
    backend = "fused" if device.type == "cuda" and fused_available() else "reference"
    tiny = dataclasses.replace(cfg, size="tiny", batch_tokens=32, warmup=0, iters=1)
    try:
        for variant in (Variant("zigma", "prime", "zigzag-8", "relative", backend), Variant("dit", "prime")):
            measure_point(variant, 16, tiny, device, dtype, PeakMemory(device))
    except Exception as err:  # noqa: BLE001 - the points themselves will record what is wrong
        return f"{type(err).__name__}: {err}"
    finally:
        _cleanup(device)
    return None


def points(cfg: Config) -> list[tuple[str, int]]:
    return [(name, n) for name in cfg.variants for n in cfg.tokens
            if not (VARIANTS[name].small_batch and n > cfg.small_max_tokens)]


def run(cfg: Config, *, on_update: Callable[[dict], None] | None = None,
        log: Callable[[str], None] = print) -> dict:
    """Measure every (variant, tokens) point of cfg -> the results document (see benchmarks/README.md)."""
    _check(cfg)
    device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif cfg.threads:
        torch.set_num_threads(cfg.threads)
    dtype = DTYPES[cfg.dtype] if device.type == "cuda" else torch.float32
    dev_name = device_name(device)
    memory = PeakMemory(device)
    doc = {"device": dev_name, "versions": _versions(), "config": dataclasses.asdict(cfg),
           "precision": f"autocast {dtype}".replace("torch.", "") if dtype != torch.float32 else "fp32",
           "memory_method": memory.method, "variants": {n: VARIANTS[n].description for n in cfg.variants},
           "mixer_fused_path": fused_path(),
           "rows": [], "mixer_vs_linear": [], "permute": [], "ceiling": [], "ratios": {}, "wall_s": 0.0}
    budget = budget_s(cfg)
    doc["config"]["time_budget_s"] = None if math.isinf(budget) else budget   # strict JSON has no Infinity
    if device.type == "cuda" and not fused_available():
        log("WARNING: mamba-ssm/causal-conv1d not importable: every fused-mixer point will be skipped")
    elif device.type == "cuda" and doc["mixer_fused_path"] != "mamba_inner_fn (causal-conv1d)":
        log(f"WARNING: causal-conv1d not importable ({doc['versions'].get('causal_conv1d_import_error')}): the fused "
            f"mixer runs {doc['mixer_fused_path']}, not mamba_inner_fn")
    why = _prime(cfg, device, dtype)
    if why:
        log(f"WARNING: the warm-up model failed ({why[:200]}); the first point may carry one-time costs")
    start = time.perf_counter()
    _small_checks(cfg, device, dtype, doc)                    # first: a few seconds, and a killed run keeps them
    if on_update:
        on_update(doc)
    ceiling_due = cfg.ceiling
    for name, tokens in points(cfg):
        if ceiling_due and name not in CEILING_AFTER:
            _ceiling(cfg, device, dtype, doc, log)
            ceiling_due = False
            if on_update:
                on_update(doc)
        variant = VARIANTS[name]
        row = {"backbone": variant.backbone, "variant": name, "tokens": tokens, "grid": f"{round(tokens ** .5)}"
               f"x{round(tokens ** .5)}", "batch": _batch(cfg, variant, tokens), "size": cfg.size,
               "dtype": doc["precision"], "device": dev_name, "scan": variant.scan or
               ("sweep-2" if variant.backbone == "vim" else None), "permute_mode": variant.permute_mode,
               "compiled": variant.compiled, "checkpointing": variant.checkpointing,
               "mixer": None if variant.backbone == "dit" else variant.mixer, "status": "ok",
               "reason": None, **dict.fromkeys(MEASURED)}
        row["batch_tokens"] = row["batch"] * tokens
        row.update(_attempt(variant, tokens, cfg, device, dtype, memory, start))
        doc["rows"].append(row)
        log(_row_line(row))
        doc["ratios"] = goal_ratios(doc)                      # kept current: a killed run still has them
        doc["wall_s"] = time.perf_counter() - start
        if on_update:
            on_update(doc)
    if ceiling_due:
        _ceiling(cfg, device, dtype, doc, log)
    doc["ratios"] = goal_ratios(doc)
    doc["wall_s"] = time.perf_counter() - start
    if on_update:
        on_update(doc)
    return doc


def budget_s(cfg: Config) -> float:
    """Seconds after which no new point starts (CUDA_BUDGET_S on CUDA unless set; inf on CPU unless set)."""
    if cfg.time_budget_s is not None:
        return cfg.time_budget_s
    return CUDA_BUDGET_S if cfg.device.startswith("cuda") else math.inf


def _small_checks(cfg: Config, device: torch.device, dtype: torch.dtype, doc: dict) -> None:
    """The mixer-vs-Linear and permutation checks, into doc (an error is recorded, not raised)."""
    for section, fn, wanted in (("mixer_vs_linear", mixer_vs_linear, cfg.mixer_check),
                                ("permute", permute_cost, cfg.permute_check)):
        if not wanted:
            continue
        try:
            doc[section] = fn(cfg, device, dtype, SIZES[cfg.size]["mamba"].width)
        except Exception as err:  # noqa: BLE001 - the model rows matter more; record and go on
            doc[section] = [{"status": "error", "reason": f"{type(err).__name__}: {err}"}]
            traceback.print_exc()
        _cleanup(device)


def _ceiling(cfg: Config, device: torch.device, dtype: torch.dtype, doc: dict, log) -> None:
    """The kernel ceiling (one mixer, one ZigMa block, one DiT block per tokens) into doc["ceiling"], built as the
    zigzag-8 and attention rows build their models; an error is recorded, not raised. Not subject to the time
    budget (a few seconds: 2 warm-up + `iters` calls of three single blocks per tokens)."""
    if _backend(VARIANTS["zigzag-8"], device) == "fused" and not fused_available():
        doc["ceiling"] = [{"status": "skipped", "reason": "the fused mixer needs mamba-ssm, not importable here"}]
        log(_ceiling_line(doc["ceiling"][0]))
        return
    rows_of = {"zigma": VARIANTS["zigzag-8"], "dit": VARIANTS["attention"]}
    try:
        doc["ceiling"] = kernel_ceiling(cfg, device, dtype, lambda family, n: _build(rows_of[family], n, cfg, device))
    except Exception as err:  # noqa: BLE001 - the model rows matter more; record and go on
        doc["ceiling"] = [{"status": "error", "reason": f"{type(err).__name__}: {err}"}]
        traceback.print_exc()
    _cleanup(device)
    for r in doc["ceiling"]:
        log(_ceiling_line(r))


def _ceiling_line(r: dict) -> str:
    if r.get("status") != "ok":
        return f"ceiling {r.get('tokens', '-'):>6} tok  {r['status'].upper()}: {str(r.get('reason', ''))[:120]}"
    return (f"ceiling {r['tokens']:>6} tok  batch {r['batch']:>4}  fwd+bwd: one mixer {r['mixer_ms']:8.2f} ms  "
            f"one zigma block {r['zigma_block_ms']:8.2f} ms  one dit block {r['dit_block_ms']:8.2f} ms  "
            f"[{r['mixer_backend']}]")


def _attempt(variant: Variant, tokens: int, cfg: Config, device, dtype, memory, start: float) -> dict:
    """measure_point, turning out-of-memory, a missing kernel or an over-budget start into a recorded status."""
    if time.perf_counter() - start > budget_s(cfg):
        return {"status": "skipped", "reason": f"time budget of {budget_s(cfg):.0f} s spent"}
    if _backend(variant, device) == "fused" and device.type != "cuda":
        return {"status": "skipped", "reason": "the fused mixer runs on CUDA only"}
    failure: dict | None = None
    try:
        return measure_point(variant, tokens, cfg, device, dtype, memory)
    except FusedUnavailableError as err:
        failure = {"status": "skipped", "reason": str(err)}
    except Exception as err:  # noqa: BLE001 - one failing point must not end a batched GPU run
        if is_oom(err):
            failure = {"status": "oom", "reason": str(err).splitlines()[0][:300]}
        else:
            traceback.print_exc()
            failure = {"status": "error", "reason": f"{type(err).__name__}: {str(err)[:300]}"}
    finally:
        if variant.compiled:
            torch._dynamo.reset()
        _cleanup(device, collect=failure is not None or variant.compiled)
    failure["peak_memory_gb"] = memory.read() if failure["status"] == "oom" else None
    return failure


def _row_line(row: dict) -> str:
    head = f"{row['backbone']:>5} {row['variant']:<20} {row['tokens']:>6} tok  batch {row['batch']:>4}"
    if row["status"] != "ok":
        return f"{head}  {row['status'].upper()}: {row.get('reason', '')[:120]}"
    return (f"{head}  step {row['step_ms']:9.2f} ms  {row['train_images_per_s']:9.1f} img/s  "
            f"fwd {row['forward_ms']:8.2f} ms  peak {row['peak_memory_gb']:6.2f} GB  "
            f"{row['params_m']:6.1f} M params  [{row['mixer_backend'] or '-'}]")


# --------------------------------------------------------------------------------------------- outputs
def output_paths(out: str | Path, plot_path: str | Path | None = None) -> tuple[Path, Path]:
    """--out FILE.json or a folder (-> FOLDER/bench.json); the plot beside the JSON unless --plot is given."""
    out = Path(out)
    json_path = out if out.suffix == ".json" else out / "bench.json"
    return json_path, Path(plot_path) if plot_path else json_path.with_suffix(".png")


def write(doc: dict, json_path: Path, plot_path: Path | None = None) -> None:
    """Write the results document (atomically) and, when asked, the plot."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    tmp.replace(json_path)
    if plot_path is not None:
        plot_path.parent.mkdir(parents=True, exist_ok=True)
        plot(doc, plot_path)


def _parser() -> argparse.ArgumentParser:
    d = Config()
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n")[0])
    p.add_argument("--tokens", default=",".join(map(str, d.tokens)), help="tokens a sample, comma separated")
    p.add_argument("--backbones", default=",".join(BACKBONES))
    p.add_argument("--variants", default=None, help=f"comma separated, of: {', '.join(VARIANTS)}")
    p.add_argument("--batch-tokens", type=int, default=d.batch_tokens)
    p.add_argument("--small-batch-tokens", type=int, default=d.small_batch_tokens)
    p.add_argument("--small-max-tokens", type=int, default=d.small_max_tokens)
    p.add_argument("--size", default=d.size, choices=list(SIZES))
    p.add_argument("--device", default=d.device)
    p.add_argument("--dtype", default=d.dtype, choices=list(DTYPES))
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--iters", type=int, default=d.iters)
    p.add_argument("--nfe", type=int, default=d.nfe)
    p.add_argument("--compile", action="store_true", help="also run the torch.compile variants")
    p.add_argument("--mixers", default=",".join(MIXERS), help="token mixers of the zigma/vim variants, comma separated")
    p.add_argument("--compile-backend", default=d.compile_backend, help="torch.compile backend (inductor)")
    p.add_argument("--no-mixer-check", dest="mixer_check", action="store_false")
    p.add_argument("--no-permute-check", dest="permute_check", action="store_false")
    p.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                   help="skip the kernel ceiling (one mixer / ZigMa block / DiT block per tokens)")
    p.add_argument("--time-budget-s", type=float, default=None,
                   help=f"no point starts after this (default {CUDA_BUDGET_S:g} on CUDA, none on CPU; inf: none)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="bench-out", help="a folder (-> bench.json, bench.png) or FILE.json")
    p.add_argument("--plot", default=None, help="the plot's path (default: beside the JSON)")
    p.add_argument("--list", dest="list_variants", action="store_true", help="name every variant and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    out, plot_path = args.pop("out"), args.pop("plot")
    if args.pop("list_variants"):
        for name, v in VARIANTS.items():
            print(f"{name:<20} {v.backbone:<6} {v.description}")
        return 0
    try:
        cfg = make_config(**args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    json_path, plot_path = output_paths(out, plot_path)
    print(f"bench: {len(points(cfg))} points -> {json_path}", flush=True)
    doc = run(cfg, on_update=lambda d: write(d, json_path), log=lambda s: print(s, flush=True))
    write(doc, json_path, plot_path)
    print("\n".join(summary_lines(doc)))
    print(f"wrote {json_path} and {plot_path} ({doc['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
