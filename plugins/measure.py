"""The one measurement module: clocks, peak memory and units, used by trials, cost metrics and `harness bench`.

Units: seconds internally, milliseconds where a figure says `_ms`, and GB = 1e9 bytes everywhere (printed "GB").

Clocks. On CUDA a timed region is bracketed by CUDA events recorded on the current stream: no host sync inside
the loop, the events are read lazily (one wait for the last event when the durations are collected), so timing
every training step costs no GPU throughput. On CPU `time.perf_counter` around the region (CPU work is
synchronous). Warm-up is excluded by the caller (`time_calls(warmup=...)`, or by not timing the first steps).

Peak memory: CUDA `torch.cuda.max_memory_allocated` since a reset (everything this process allocated through
torch); CPU: the peak resident set (/proc/self/status VmHWM) since a reset through /proc/self/clear_refs (freed
heap pages are handed back to the OS first with glibc's malloc_trim), minus the resident set at the reset, or
`resource.getrusage().ru_maxrss` (the process-lifetime peak, an upper bound) where that reset is unavailable.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import torch

__all__ = ["GB", "synchronize", "Timing", "Timer", "time_calls", "PeakMemory", "WallSplit", "is_oom"]

GB = 1e9  #: bytes per GB, the one memory unit of the project

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timing(tuple):
    """Per-call milliseconds, with their median, mean, sample std and quartiles."""

    @property
    def median(self) -> float:
        return statistics.median(self)

    @property
    def mean(self) -> float:
        return statistics.fmean(self)

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); NaN for one call."""
        return statistics.stdev(self) if len(self) > 1 else float("nan")

    @property
    def quartiles(self) -> tuple[float, float]:
        """(25th, 75th) percentile; both the single value when there is one call."""
        if len(self) < 2:
            return self[0], self[0]
        q = statistics.quantiles(self, n=4, method="inclusive")
        return q[0], q[2]


class Timer:
    """Durations of timed regions: CUDA events read lazily, or perf_counter on CPU.

    `with timer.region(): ...` times one region; `take()` returns the seconds of every region finished since the
    last take (on CUDA it waits for the last end event only, not for later work)."""

    def __init__(self, device: torch.device | str) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self._pending: list[Any] = []

    @contextlib.contextmanager
    def region(self) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._pending.append((start, end))
            return
        t0 = time.perf_counter()
        yield
        self._pending.append(time.perf_counter() - t0)

    def peek(self) -> float | None:
        """Seconds of the regions not yet taken when known without waiting (CPU), else None (CUDA)."""
        return None if self.cuda else sum(self._pending)

    def take(self) -> list[float]:
        """Seconds of the regions finished since the last take, in order."""
        pending, self._pending = self._pending, []
        if not self.cuda:
            return pending
        if pending:
            pending[-1][1].synchronize()
        return [start.elapsed_time(end) / 1000.0 for start, end in pending]


def time_calls(fn: Callable[[], object], *, device: torch.device | str, warmup: int, iters: int) -> Timing:
    """Run fn `warmup` times untimed, then `iters` times timed; -> per-call ms (device time on CUDA)."""
    if iters < 1:
        raise ValueError(f"need at least one timed call, got iters={iters}")
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    timer = Timer(device)
    for _ in range(iters):
        with timer.region():
            fn()
    return Timing(1000.0 * s for s in timer.take())


class WallSplit:
    """Host wall-clock seconds per named phase (data, step, eval, checkpoint, log, ...): `with split('data'):`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0


def _malloc_trim() -> None:
    """Hand freed heap pages back to the OS (glibc), so the next peak's growth above the reset level is its own."""
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


def _ru_maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024    # bytes on macOS, kB on Linux


class PeakMemory:
    """Peak memory since `reset()` (or since entering `with`), in GB (1e9 bytes); `method` says how.

    `read()`: the peak (CUDA: allocator peak, whole process; CPU: peak RSS above the reset level).
    As a context manager it also keeps `peak_gb` and `delta_gb` (the peak minus the level at entry) after exit."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.peak_gb = self.delta_gb = 0.0
        self._base = 0
        if self.device.type == "cuda":
            self.method = "torch.cuda.max_memory_allocated"
            return
        try:
            _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            ok = _status_kb("VmHWM") is not None
        except OSError:
            ok = False
        self.method = "cpu peak RSS (VmHWM since reset)" if ok else "cpu peak RSS (ru_maxrss, process lifetime)"

    def reset(self) -> None:
        """Start a new peak (CUDA: cached blocks are freed first so the baseline is what is really held)."""
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif self.method.startswith("cpu peak RSS (VmHWM"):
            _malloc_trim()
            _CLEAR_REFS.write_text("5")
            self._base = (_status_kb("VmRSS") or 0) * 1024
        else:
            self._base = 0

    def read(self) -> float:
        """Peak GB since the last reset (CPU: above the resident set at the reset)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / GB
        if self.method.startswith("cpu peak RSS (VmHWM"):
            return max(0, (_status_kb("VmHWM") or 0) * 1024 - self._base) / GB
        return _ru_maxrss_bytes() / GB

    def read_total(self) -> float:
        """Peak GB of the whole process since the last reset (CPU: the peak resident set itself, not its growth)."""
        if self.device.type == "cuda":
            return self.read()
        if self.method.startswith("cpu peak RSS (VmHWM"):
            return (_status_kb("VmHWM") or 0) * 1024 / GB
        return _ru_maxrss_bytes() / GB

    def __enter__(self) -> Self:
        self.reset()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        if self.device.type == "cuda":     # read() is the absolute allocator peak
            self.peak_gb = self.read()
            self.delta_gb = max(0.0, self.peak_gb - self._base / GB)
        else:                              # read() is the growth above the reset level
            self.delta_gb = self.read()
            self.peak_gb = self.delta_gb + self._base / GB


def is_oom(err: BaseException) -> bool:
    """Whether an exception is an out-of-memory failure (CUDA allocator, or a failed CPU allocation)."""
    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
