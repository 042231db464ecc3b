"""Training-step time, sampling time and peak memory of ZigMa, Vim and DiT side by side, in one process.
(long because: the measurement loop of a GPU run, point by point with OOM, budget and ceiling, reads top to bottom
in one file; its options and variants live in bench_config.py, the kernel ceiling in micro.py.)

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

import dataclasses
import functools
import gc
import json
import math
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from plugins.measure import PeakMemory, Timing, is_oom, time_calls
from zigma.backbones import SIZES, build_dit, build_vim, build_zigma, flops
from zigma.mixer import FusedUnavailableError, fused_available
from zigma.mixer.fused import fused_kernels

from .analysis import goal_ratios, plot, summary_lines
from .bench_config import (
    CEILING_AFTER,
    CUDA_BUDGET_S,
    DTYPES,
    MIXERS,
    VARIANTS,
    Config,
    Variant,
    check_config,
    make_config,
    parser,
)
from .micro import kernel_ceiling, mixer_vs_linear, permute_cost

__all__ = ["Variant", "VARIANTS", "CEILING_AFTER", "Config", "make_config", "points", "run", "write",
           "output_paths", "summary_lines", "fused_path", "main"]

BUILDERS = {"zigma": build_zigma, "vim": build_vim, "dit": build_dit}
#: every measured field of a row (None where the point did not run)
MEASURED = ("step_ms", "step_ms_q1", "step_ms_q3", "train_images_per_s", "train_tokens_per_s", "forward_ms", "nfe",
            "sample_ms_per_image", "peak_memory_gb", "sample_peak_memory_gb", "params_m", "gflops", "mixer_backend")


# ----------------------------------------------------------------------------------------------- one point
def _batch(cfg: Config, variant: Variant, tokens: int) -> int:
    total = cfg.small_batch_tokens if variant.small_batch else cfg.batch_tokens
    return max(1, total // tokens)


def _backend(variant: Variant, device: torch.device) -> str:
    return variant.mixer_backend or ("fused" if device.type == "cuda" else "reference")


def _scan(name: str):
    """The registered scan scheme `name` (the same build as a study's `scan.name`)."""
    from plugins.registry import load_registries

    return load_registries().scans.get(name).build(seed=0)


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
    kw["mixer"] = functools.partial(MIXERS[variant.mixer], **dict(variant.mixer_options))
    if variant.backbone == "vim":
        return build_vim(**kw)
    return build_zigma(scan=_scan(variant.scan), permute_mode=variant.permute_mode, **kw)


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
    for pkg in ("mamba_ssm", "causal_conv1d", "triton", "fla"):
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
    check_config(cfg)
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


def main(argv: list[str] | None = None, *, prog: str = "python -m benchmarks.bench") -> int:
    """The bench's one command line (`harness bench` forwards its arguments here); exit code."""
    args = vars(parser(prog).parse_args(argv))
    try:
        return _main(args, prog)
    except ValueError as err:
        print(f"error: {prog}: {err}", file=sys.stderr)
        return 2


def _main(args: dict, prog: str) -> int:
    out, plot_path = args.pop("out"), args.pop("plot")
    study, preset, trials = args.pop("study"), args.pop("preset"), args.pop("trials")
    if study is not None:
        from .study_throughput import from_bench

        return from_bench(study, preset=preset, trials=trials, variants=args["variants"],
                                 device=args["device"], budget=args["time_budget_s"], out=Path(out))
    if args.pop("list_variants"):
        for name, v in VARIANTS.items():
            print(f"{name:<20} {v.backbone:<6} {v.description}")
        return 0
    cfg = make_config(**args)
    json_path, plot_path = output_paths(out, plot_path)
    print(f"bench: {len(points(cfg))} points -> {json_path}", flush=True)
    doc = run(cfg, on_update=lambda d: write(d, json_path), log=lambda s: print(s, flush=True))
    write(doc, json_path, plot_path)
    print("\n".join(summary_lines(doc)))
    print(f"wrote {json_path} and {plot_path} ({doc['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
