"""Where a trial's wall time goes: exclusive per-phase clocks patched around the harness's own functions, GPU busy
time from the profiler's kernel intervals (windows) and from NVML utilisation samples (every phase).

Phases (exclusive: a nested phase pauses its parent): startup (plugin resolution, dataset, model and metric
construction), data (next batch), step (forward/backward/optimizer, host side), ema_ckpt (EMA update and checkpoint
writes), train_loop (the loop's own work: loss read-back, logging, progress; the device catches up here), sampling,
features (feature extraction), metrics (the rest of metric computation), cost (the side cost probe), tracking
(MLflow calls), other (the rest of run_trial). Coarse phases synchronise the device at their edges; data, step and
ema_ckpt are host-side times (the device runs ahead of them), so their GPU time shows up in train_loop.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any, Self

import torch

__all__ = ["PhaseClock", "instrument", "kernel_busy_us", "UtilSampler", "PHASES"]

PHASES = ("startup", "data", "step", "ema_ckpt", "train_loop", "sampling", "features", "metrics", "cost",
          "tracking", "other", "profiler")
_SYNCED = {"startup", "train_loop", "sampling", "features", "metrics", "cost", "tracking", "other"}


class PhaseClock:
    """Exclusive wall time per phase: entering a phase pauses the one below it on the stack."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, defaultdict(float)
        self.stack: list[str] = []
        self._t = 0.0

    @property
    def current(self) -> str:
        return self.stack[-1] if self.stack else "other"

    def _sync(self, name: str) -> None:
        if name in _SYNCED and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._sync(name)
        now = time.perf_counter()
        self.seconds[self.current] += now - self._t
        self.stack.append(name)
        self._t = now
        try:
            yield
        finally:
            self._sync(name)
            now = time.perf_counter()
            self.seconds[self.stack.pop()] += now - self._t
            self._t = now

    def start(self) -> None:
        self.seconds.clear()
        self.stack, self._t = [], time.perf_counter()

    def stop(self) -> dict[str, float]:
        self.seconds[self.current] += time.perf_counter() - self._t
        return {p: self.seconds.get(p, 0.0) for p in PHASES}


def _wrap(clock: PhaseClock, name: str, fn: Callable) -> Callable:
    @functools.wraps(fn)
    def inner(*args, **kwargs):
        with clock.phase(name):
            return fn(*args, **kwargs)
    return inner


class _TimedIter:
    def __init__(self, clock: PhaseClock, it: Iterator) -> None:
        self.clock, self.it = clock, it

    def __iter__(self):
        return self

    def __next__(self):
        with self.clock.phase("data"):
            return next(self.it)


@contextlib.contextmanager
def instrument(clock: PhaseClock, *, on_step: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Patch the harness's phase functions (module globals) to run under `clock`; on_step() runs before every
    training step (the profiler window hooks in there). Everything is restored on exit."""
    from harness import metric_buffer, tracking, training, trial
    from plugins.metrics import feature_modules

    saved: list[tuple[Any, str, Any]] = []

    def patch(obj: Any, attr: str, name: str) -> None:
        saved.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, _wrap(clock, name, getattr(obj, attr)))

    for attr in ("_load_data", "build_model", "_build_metrics", "resolve_trial"):
        patch(trial, attr, "startup")
    patch(trial, "train", "train_loop")
    patch(trial, "sample_images", "sampling")
    patch(trial, "_metrics", "metrics")
    patch(trial, "trial_costs", "cost")
    patch(training, "update_ema", "ema_ckpt")
    patch(training, "save_checkpoint", "ema_ckpt")
    for mod in feature_modules():
        if hasattr(mod, "extract_features"):
            patch(mod, "extract_features", "features")
    for attr in ("start_trial", "log_metrics", "log_artifacts", "end_trial"):
        patch(tracking.Tracker, attr, "tracking")
    patch(metric_buffer.MetricBuffer, "flush", "tracking")
    step_call = training.Stepper.__call__

    def step(self, *args, **kwargs):
        on_step()
        with clock.phase("step"):
            return step_call(self, *args, **kwargs)

    saved.append((training.Stepper, "__call__", step_call))
    training.Stepper.__call__ = step
    source = trial.batch_source

    def timed_source(*args, **kwargs):
        loader_for, kind = source(*args, **kwargs)
        return (lambda epoch, batch: _TimedIter(clock, iter(loader_for(epoch, batch)))), kind

    saved.append((trial, "batch_source", source))
    trial.batch_source = _wrap(clock, "startup", timed_source)
    try:
        yield
    finally:
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)


def kernel_busy_us(prof: Any) -> tuple[float, int]:
    """(union of the device-side event intervals in microseconds, number of events) of a finished profiler."""
    from torch.autograd import DeviceType
    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                   if e.device_type == DeviceType.CUDA)
    if not spans:   # a profiler build that files kernels only under their ops: their summed self time
        return float(sum(e.self_device_time_total for e in prof.key_averages())), 0
    busy, end = 0.0, float("-inf")
    for lo, hi in spans:
        if hi <= end:
            continue
        busy += hi - max(lo, end)
        end = hi
    return busy, len(spans)


class UtilSampler:
    """NVML GPU utilisation (percent of time a kernel ran, the driver's own averaging window) sampled every
    `period` s in a thread and filed under the clock's current phase; None figures where no GPU or no NVML."""

    def __init__(self, clock: PhaseClock, device: torch.device, period: float = 0.1) -> None:
        self.clock, self.device, self.period = clock, device, period
        self.samples: dict[str, list[float]] = defaultdict(list)
        self._stop = threading.Event()
        self._read = self._reader()
        self._thread = threading.Thread(target=self._run, daemon=True) if self._read else None

    def _reader(self) -> Callable[[], float] | None:
        if self.device.type != "cuda":
            return None
        index = self.device.index or 0
        try:
            torch.cuda.utilization(index)
            return lambda: float(torch.cuda.utilization(index))
        except Exception:  # noqa: BLE001, S110 - pynvml missing: fall back to nvidia-smi
            pass
        if shutil.which("nvidia-smi") is None:
            return None
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        physical = visible[index] if index < len(visible) else str(index)
        self.period = max(self.period, 0.2)

        def smi() -> float:
            out = subprocess.run(["nvidia-smi", "-i", physical, "--query-gpu=utilization.gpu",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5,
                                 check=True)
            return float(out.stdout.strip().splitlines()[0])
        return smi

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                value = self._read()
            except Exception:  # noqa: BLE001, S112 - a failed read loses one sample, nothing else
                continue
            self.samples[self.clock.current].append(value)

    def __enter__(self) -> Self:
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def take(self) -> dict[str, float | None]:
        """Mean utilisation (0..1) per phase since the last take, then reset."""
        out = {p: (sum(v) / len(v) / 100.0 if (v := self.samples.get(p)) else None) for p in PHASES}
        self.samples = defaultdict(list)
        return out
