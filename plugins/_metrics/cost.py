"""Cost metrics: parameters, forward FLOPs, peak memory, training throughput, sampling latency and NFE.

FLOPs follow the DiT / ZigMa / fvcore convention: one multiply-accumulate = one FLOP, forward pass only.
Backbones are counted by `zigma.backbones.flops` when it is present: torch.utils.flop_counter.FlopCounterMode
for everything it sees, plus the documented formula for the selective scan, which the counter cannot see inside
(9*B*L*E*N per direction, as in the official fvcore helper; see zigma/backbones/flops.py). Any other module is
counted by FlopCounterMode alone (its 2-per-MAC count halved).

Timing excludes warm-up calls and synchronizes the device before each clock read. Peak memory: CUDA
`torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`; CPU: the peak resident set since a reset
(/proc/self/status VmHWM, reset through /proc/self/clear_refs after glibc's malloc_trim), with `resource.getrusage().ru_maxrss` (the
process-lifetime peak, an upper bound) where that reset is unavailable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import torch
from torch import nn

__all__ = ["PeakMemory", "count_params", "flops", "measure_sampling", "measure_training_throughput"]

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


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

        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*inputs, **kwargs)
        total = counter.get_total_flops() // 2
        method = "torch.utils.flop_counter.FlopCounterMode (MACs)"
    return {"flops": total, "gflops": total / 1e9, "flops_method": method}


def _status_kb(key: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    """Hand freed heap pages back to the OS (glibc), so the next peak's growth above the reset level is its own."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _ru_maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024    # bytes on macOS, kB on Linux


class PeakMemory:
    """Context manager: peak memory of the enclosed code. After exit: `peak_bytes` (CUDA allocator peak, or CPU
    peak RSS), `delta_bytes` (peak minus the level at entry) and `method`."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.peak_bytes = self.delta_bytes = 0
        self.method = ""

    def __enter__(self) -> Self:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return self
        _malloc_trim()
        try:
            _CLEAR_REFS.write_text("5")          # resets VmHWM to the current RSS (Linux >= 4.0)
            self._base = (_status_kb("VmRSS") or 0) * 1024
            self.method = "cpu peak RSS (VmHWM since reset)"
        except OSError:
            self._base = _ru_maxrss_bytes()
            self.method = "cpu peak RSS (ru_maxrss, process lifetime)"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("cpu peak RSS (VmHWM"):
            self.peak_bytes = (_status_kb("VmHWM") or 0) * 1024
        else:
            self.peak_bytes = _ru_maxrss_bytes()
        self.delta_bytes = max(0, self.peak_bytes - self._base)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int) -> tuple[list[float], list, PeakMemory]:
    """Run fn warmup times, then iters timed (synchronized) calls inside a PeakMemory; -> (seconds, outputs, mem)."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    for _ in range(warmup):
        fn()
    _sync(device)
    seconds, outputs = [], []
    with PeakMemory(device) as mem:
        for _ in range(iters):
            t0 = time.perf_counter()
            outputs.append(fn())
            _sync(device)
            seconds.append(time.perf_counter() - t0)
    return seconds, outputs, mem


def measure_training_throughput(step_fn: Callable[[], Any], batch_size: int, *, warmup: int = 2, iters: int = 5,
                                device: torch.device | str = "cpu") -> dict[str, Any]:
    """Images/s of `step_fn` (one optimizer step on `batch_size` images), warm-up excluded, device synchronized."""
    device = torch.device(device)
    seconds, _, mem = _timed(step_fn, device, warmup, iters)
    total = sum(seconds)
    return {"train_images_per_s": batch_size * iters / total, "train_step_s": total / iters,
            "train_peak_memory_bytes": mem.peak_bytes, "train_peak_memory_delta_bytes": mem.delta_bytes,
            "memory_method": mem.method, "device": str(device), "warmup": warmup, "iters": iters}


def _nfe_of(result: Any) -> float | None:
    if result is None:
        return None
    if isinstance(result, int | float):
        return float(result)
    if isinstance(result, dict):
        return result.get("nfe")
    nfe = getattr(result, "nfe", None)
    return None if nfe is None else float(nfe)


def measure_sampling(sample_fn: Callable[[], Any], batch_size: int, *, warmup: int = 1, iters: int = 3,
                     device: torch.device | str = "cpu") -> dict[str, Any]:
    """Latency per image and images/s of `sample_fn` (draws `batch_size` samples; returns an object with `.nfe`,
    a dict with 'nfe', or the NFE itself), warm-up excluded, device synchronized; NFE is the mean over calls."""
    device = torch.device(device)
    seconds, outputs, mem = _timed(sample_fn, device, warmup, iters)
    total = sum(seconds)
    nfes = [n for n in map(_nfe_of, outputs) if n is not None]
    return {"sample_latency_per_image_s": total / (iters * batch_size),
            "sample_images_per_s": batch_size * iters / total, "sample_batch_s": total / iters,
            "nfe": sum(nfes) / len(nfes) if nfes else None,
            "sample_peak_memory_bytes": mem.peak_bytes, "sample_peak_memory_delta_bytes": mem.delta_bytes,
            "memory_method": mem.method, "device": str(device), "warmup": warmup, "iters": iters}
