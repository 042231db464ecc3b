"""Training budgets (`train.budget`): steps, images, GPU-seconds or training FLOPs; when a trial stops and evaluates.

Units. steps: optimisation steps (the budget replaces train.steps). images: training images seen. flops: training
FLOPs = images x 3 x the model's counted forward FLOPs per image (plugins.metrics.flops, 1 FLOP per multiply-add;
backward ~ 2x forward, the usual "6N per token" convention of Kaplan et al. 2020 in MAC units). gpu_seconds: seconds
inside the timed training steps as issue 15 defines them (plugins.measure.Timer; the first warm-up steps of each
segment are not timed, so not charged, as in train_images_per_s).

Stopping. images and flops stop exactly: the last step is the first whose cumulative amount reaches the value
(steps = ceil(value / per-step amount)). gpu_seconds on CPU: each step's perf_counter duration is read at once, so the
last step is the one that reaches the value. gpu_seconds on CUDA: step durations are CUDA events read only at log
points (no device sync per step), so the trial stops at the first log point at or past the value: it overshoots by
at most train.log_every - 1 steps (plus the step that crossed it). For images, flops and gpu_seconds, train.steps
is a ceiling; a trial that hits it first is recorded as bound by 'steps'.

Evaluation during training (`eval.every`, in the budget's unit): an evaluation is due after the step on which
floor(used / every) grows, i.e. the first step at or past each multiple of `every` (gpu_seconds on CUDA: the first
log point at or past it).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["BudgetConfig", "Budget", "KINDS"]

KINDS = ("steps", "images", "gpu_seconds", "flops")


class BudgetConfig(BaseModel):
    """`train.budget: {kind, value}`; absent = steps with value train.steps."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    kind: Literal["steps", "images", "gpu_seconds", "flops"] = "steps"
    value: int | float = Field(gt=0)           # in the kind's unit (steps, images, seconds, FLOPs)

    @model_validator(mode="after")
    def _whole_steps(self) -> BudgetConfig:
        if self.kind in ("steps", "images") and float(self.value) != int(self.value):
            raise ValueError(f"{self.kind} budgets are whole numbers, got {self.value}")
        return self


class Budget:
    """Counts what a trial's training used and says when it must stop and when an evaluation is due.

    Counters live in `extras['budget']` (TrainState.extras, checkpointed), so a resumed trial continues them."""

    def __init__(self, cfg: BudgetConfig | None, *, max_steps: int, flops_per_image: float | None = None,
                 every: float | None = None, exact_seconds: bool = True) -> None:
        self.kind = cfg.kind if cfg is not None else "steps"
        self.value = float(cfg.value) if cfg is not None else float(max_steps)
        self.max_steps = int(self.value) if self.kind == "steps" else max_steps
        if self.kind == "flops" and not flops_per_image:
            raise ValueError("a flops budget needs the model's forward FLOPs per image")
        self.flops_per_image = flops_per_image
        self.every, self.exact_seconds = every, exact_seconds
        self.used: dict[str, Any] = {"steps": 0, "images": 0, "seconds": 0.0, "evals": 0}
        self._pending = 0.0                    # seconds of steps timed but not yet flushed (CPU only)

    def bind(self, extras: dict[str, Any], *, step: int, batch_size: int) -> None:
        """Keep the counters in a checkpointed dict, continuing those it holds (a checkpoint from before budgets
        existed: counted from its step, full batches, no timed seconds)."""
        if "budget" not in extras:
            n = math.floor(step / self.every + 1e-9) if self.every and self.kind == "steps" else 0
            extras["budget"] = {"steps": step, "images": step * batch_size, "seconds": 0.0, "evals": n}
        self.used = extras["budget"]

    # -- counting -------------------------------------------------------------------------------------------
    def step(self, images: int, pending_seconds: float | None) -> None:
        """One step of `images` done; pending_seconds: timed seconds not yet flushed (None when unknown: CUDA)."""
        self.used["steps"] += 1
        self.used["images"] += int(images)
        self._pending = pending_seconds or 0.0

    def add_seconds(self, seconds: float) -> None:
        """Timed step seconds flushed from the timer."""
        self.used["seconds"] += seconds
        self._pending = 0.0

    @property
    def seconds(self) -> float:
        return self.used["seconds"] + self._pending

    @property
    def train_flops(self) -> float:
        """Training FLOPs so far: images x 3 x forward FLOPs per image (NaN when the count is unknown)."""
        return self.used["images"] * 3.0 * self.flops_per_image if self.flops_per_image else float("nan")

    def amount(self, kind: str | None = None) -> float:
        """What was used so far in `kind`'s unit (default: the budget's)."""
        kind = kind or self.kind
        if kind == "steps":
            return float(self.used["steps"])
        if kind == "images":
            return float(self.used["images"])
        if kind == "gpu_seconds":
            return self.seconds
        if kind == "flops":
            return self.train_flops
        raise ValueError(f"unknown budget kind {kind!r}; available: {', '.join(KINDS)}")

    # -- decisions ------------------------------------------------------------------------------------------
    def needs_flush(self, step: int, log_every: int) -> bool:
        """Whether the loop must read the step timer now to decide (gpu_seconds on CUDA, at log points)."""
        return self.kind == "gpu_seconds" and not self.exact_seconds and step % log_every == 0

    def bound(self) -> str | None:
        """The budget that binds now ('steps' when the train.steps ceiling comes first), or None to go on."""
        if self.amount() >= self.value:
            return self.kind
        if self.used["steps"] >= self.max_steps:
            return "steps"
        return None

    def eval_due(self) -> bool:
        """True once per multiple of eval.every reached (call after every step)."""
        if not self.every:
            return False
        n = math.floor(self.amount() / self.every + 1e-9)
        if n > self.used["evals"]:
            self.used["evals"] = n
            return True
        return False

    def planned_steps(self, batch_size: int) -> int | None:
        """Steps the budget allows when known in advance (steps, images, flops); None for gpu_seconds."""
        if self.kind == "steps":
            return self.max_steps
        if self.kind == "images":
            return min(self.max_steps, math.ceil(self.value / batch_size))
        if self.kind == "flops":
            return min(self.max_steps, math.ceil(self.value / (batch_size * 3.0 * self.flops_per_image)))
        return None

    def record(self) -> dict[str, Any]:
        """What the trial records: budget_kind (what bound it), budget_value, budget_used, steps_run,
        images_seen, train_seconds_timed and train_flops."""
        kind = self.bound() or self.kind
        return {"budget_kind": kind, "budget_value": self.value if kind == self.kind else float(self.max_steps),
                "budget_used": self.amount(kind), "steps_run": self.used["steps"],
                "images_seen": self.used["images"], "train_seconds_timed": self.seconds,
                "train_flops": self.train_flops}


def forward_flops_per_image(net: Any, cond: Any, shape: tuple[int, ...], device: Any, seed: int) -> float:
    """Counted forward FLOPs of one image (plugins.metrics.flops on a copy of the backbone in eval mode, so the
    trial's modules and random streams are untouched), as harness/costs.py counts `gflops`."""
    import copy

    import torch

    from plugins.metrics import flops

    labels, captions = cond.prompts(1, seed)
    c, _ = cond.pair(net, labels, captions)
    backbone = copy.deepcopy(net.backbone).eval()
    with torch.no_grad():
        x, t = torch.zeros((1, *shape), device=device), torch.full((1,), 0.5, device=device)
        return float(flops(backbone, x, t, **c)["flops"])
