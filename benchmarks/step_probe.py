"""Steady-state time of one training step of a study trial's model (random data of its shape, warm-up excluded),
eager, compiled (a train.compile mode) or replayed as one CUDA graph (GRAPHED: the model eager or compiled).
Used by benchmarks/study_throughput.py (--probe)."""

from __future__ import annotations

import time
from typing import Any

import torch

__all__ = ["GRAPHED", "probe_settings", "step_probe"]

#: step-probe settings that capture the step: name -> train.compile of the captured model
GRAPHED: dict[str, bool | str] = {"cuda-graph": False, "cuda-graph-compile": "default"}


def probe_settings(text: str) -> list[bool | str]:
    """--probe "false,cuda-graph-compile" -> [False, "cuda-graph-compile"]; ValueError naming an unknown one."""
    from harness.compile import compile_mode
    out = [{"false": False, "true": True}.get(s.strip().lower(), s.strip()) for s in text.split(",") if s.strip()]
    for setting in (s for s in out if s not in GRAPHED):
        try:
            compile_mode(setting)
        except ValueError as err:
            raise ValueError(f"--probe: {err}; or one of {', '.join(GRAPHED)}") from None
    return out


def step_probe(spec: Any, registries: Any, device: torch.device, setting: Any, *, warm: int, iters: int) -> dict:
    """Steady-state time of one training step of the trial's model (random data of its shape, same batch)."""
    from harness.compile import compile_mode
    from harness.model import Net, build_model, build_transport
    from harness.study import resolve_trial
    from harness.training import Stepper
    from harness.trial import _load_data
    cfg = spec.config
    entries = resolve_trial(spec, registries)
    info = _load_data(entries["dataset"], cfg).info
    net = Net(build_model(cfg, entries, info, seed=spec.seed, device=device, context_dim=None)).to(device)
    transport = build_transport(cfg, entries)
    ema = Net(build_model(cfg, entries, info, seed=spec.seed, device=device, context_dim=None)).to(device)
    graph = setting in GRAPHED                # its whole step replayed as a CUDA graph (the model eager or compiled)
    update = {"compile": GRAPHED[setting], "cuda_graph": True} if graph else {"compile": setting, "cuda_graph": False}
    stepper = Stepper(net, ema.requires_grad_(False), transport, cfg.train.model_copy(update=update), device)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(cfg.train.batch_size, *info.shape, device=device, generator=g)
    kwargs = {"y": torch.zeros(x.shape[0], dtype=torch.long, device=device)} if cfg.conditioning.kind == "class" \
        else {}
    t0 = time.perf_counter()
    for s in range(warm):
        stepper(x, kwargs, s, g)
    _sync(device)
    t1 = time.perf_counter()
    for s in range(iters):
        stepper(x, kwargs, warm + s, g)
    _sync(device)
    t2 = time.perf_counter()
    return {"mode": setting if graph else compile_mode(setting) or "eager", "ms_per_step": 1e3 * (t2 - t1) / iters,
            "warmup_s": t1 - t0, "warm": warm, "iters": iters}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
