"""Clocks and memory meters: median of N timed calls after warm-up, device-synchronized; peak memory per point.

CUDA: each call is bracketed by CUDA events (no host sync inside the loop), the device is synchronized before the
events are read. CPU: `time.perf_counter` around each call. Peak memory: CUDA `max_memory_allocated` since a reset
(weights, gradients, optimizer state and activations: everything this process allocated through torch); CPU: the
process's peak resident set (VmHWM) since a reset, minus the resident set at the reset (freed heap pages are
handed back to the OS first, so a point does not reuse the previous point's pages unseen).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["Timing", "time_calls", "synchronize", "PeakMemory", "is_oom"]

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


class Timing(tuple):
    """Per-call milliseconds, with their median and quartiles."""

    @property
    def median(self) -> float:
        return statistics.median(self)

    @property
    def quartiles(self) -> tuple[float, float]:
        """(25th, 75th) percentile; both the single value when there is one call."""
        if len(self) < 2:
            return self[0], self[0]
        q = statistics.quantiles(self, n=4, method="inclusive")
        return q[0], q[2]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], *, device: torch.device, warmup: int, iters: int) -> Timing:
    """Run fn `warmup` times untimed, then `iters` times timed; -> per-call ms (device time on CUDA)."""
    assert iters >= 1, f"need at least one timed call, got iters={iters}"
    for _ in range(warmup):
        fn()
    synchronize(device)
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        synchronize(device)
        return Timing(start.elapsed_time(end) for start, end in events)
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(1000.0 * (time.perf_counter() - t0))
    return Timing(out)


def _malloc_trim() -> None:
    """Hand freed heap pages back to the OS (glibc), so the next point's RSS growth is its own."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kb(key: str) -> int | None:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM), or None where there is none."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory since `reset()`, in GB (1e9 bytes): CUDA allocator peak, or CPU peak RSS above the reset level."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.method = "torch.cuda.max_memory_allocated" if device.type == "cuda" else self._cpu_method()
        self._base_kb = 0

    @staticmethod
    def _cpu_method() -> str:
        try:
            _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            return "VmHWM-since-reset" if _status_kb("VmHWM") is not None else "ru_maxrss"
        except OSError:
            return "ru_maxrss"  # process-lifetime peak: an upper bound

    def reset(self) -> None:
        """Start a new peak (frees cached CUDA blocks first so the baseline is what is really held)."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        if self.method == "VmHWM-since-reset":
            _malloc_trim()
            _CLEAR_REFS.write_text("5")
            self._base_kb = _status_kb("VmRSS") or 0

    def read(self) -> float:
        """Peak GB since the last reset."""
        if self.device.type == "cuda":
            synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 1e9
        if self.method == "VmHWM-since-reset":
            return max(0, (_status_kb("VmHWM") or 0) - self._base_kb) * 1024 / 1e9
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def is_oom(err: BaseException) -> bool:
    """Whether an exception is an out-of-memory failure (CUDA allocator, or a failed CPU allocation)."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, (RuntimeError, MemoryError)) and (
        isinstance(err, MemoryError) or "out of memory" in text or "can't allocate memory" in text)
