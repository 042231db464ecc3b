"""The training loop of one trial: AdamW, autocast, EMA, clipping before the step (checkpoints: harness/checkpoint.py)."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.budget import Budget
from harness.checkpoint import TrainState, load_checkpoint, save_checkpoint
from harness.checkpoint_async import wait_pending
from harness.compile import maybe_compile
from harness.cuda_graph import CaptureFailed, StepGraph, flatten_kwargs, graph_blocker
from harness.distributed import Ranks
from harness.errors import TrialFailed
from harness.seeds import seed_for
from harness.study import TrainConfig
from plugins.measure import PeakMemory, Timer, WallSplit

__all__ = ["BatchStream", "ema_decay", "update_ema", "autocast_dtype", "lr_at", "TrainState", "train", "Stepper"]

_log = logging.getLogger("harness.training")


class BatchStream:
    """Endless batches of dataset indices, shuffled per epoch from (seed, epoch); resumable anywhere."""

    def __init__(self, n: int, batch_size: int, seed: int, *, epoch: int = 0, batch: int = 0) -> None:
        if n < 1:
            raise ValueError("the training set is empty")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.batch = epoch, batch
        self.per_epoch = max(1, n // batch_size)

    def _order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed_for(self.seed, 1, epoch))
        perm = torch.randperm(self.n, generator=g)
        if self.n < self.batch_size:  # tiny sets: repeat the permutation to fill one batch
            perm = perm.repeat(math.ceil(self.batch_size / self.n))
        return perm

    def __iter__(self) -> Iterator[list[int]]:
        epoch, batch = self.epoch, self.batch
        while True:
            order = self._order(epoch)
            for b in range(batch, self.per_epoch):
                yield order[b * self.batch_size:(b + 1) * self.batch_size].tolist()
            epoch, batch = epoch + 1, 0

    @staticmethod
    def advance(epoch: int, batch: int, per_epoch: int) -> tuple[int, int]:
        """The position after consuming one batch at (epoch, batch)."""
        return (epoch + 1, 0) if batch + 1 >= per_epoch else (epoch, batch + 1)


def ema_decay(decay: float, n: int, warmup: bool) -> float:
    """EMA decay for update n (0-based): min(decay, (1 + n) / (10 + n)) with warm-up, else `decay`."""
    return min(decay, (1 + n) / (10 + n)) if warmup else decay


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers are copied.

    One multi-tensor lerp and one multi-tensor copy (a ZigMa keeps a scan-order index buffer per layer: copying
    them one by one was a kernel launch each, every step)."""
    e_params = list(ema.parameters())
    m_params = [p if p.dtype == p_e.dtype else p.to(p_e.dtype) for p, p_e in zip(model.parameters(), e_params)]
    if e_params:
        torch._foreach_lerp_(e_params, m_params, 1.0 - decay)
    e_bufs, m_bufs = list(ema.buffers()), list(model.buffers())
    if e_bufs:
        torch._foreach_copy_(e_bufs, m_bufs)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """None for fp32; 'auto' is bf16 on CUDA and fp32 on CPU. Every string switch ends in a raise."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("train.precision fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
        return torch.float16
    raise ValueError(f"unknown precision {precision!r}")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over `warmup_steps`, then constant (the official schedule is constant)."""
    if cfg.warmup_steps <= 0:
        return cfg.lr
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)


class Stepper:
    """One optimisation step: autocast forward, backward (fp16 scaled), clip BEFORE the step, AdamW, EMA."""

    def __init__(self, net: nn.Module, ema: nn.Module, transport: Any, cfg: TrainConfig,
                 device: torch.device) -> None:
        self.net, self.ema, self.transport, self.cfg = net, ema, transport, cfg
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.amp = autocast_dtype(device, cfg.precision)
        self.device = device
        # train.cuda_graph (harness/cuda_graph.py): "auto" captures where it can, true insists, false never
        # with train.compile, the warm-up steps run (and compile) the compiled model; the capture records its kernels
        self.graph_blocker = graph_blocker(cfg.cuda_graph, device, net, fp16=self.amp == torch.float16,
                                           compile=cfg.compile)
        if self.graph_blocker is not None and cfg.cuda_graph is True:
            raise ValueError(f"train.cuda_graph is true but the step cannot be captured: {self.graph_blocker}")
        self.graph = StepGraph(self._step, lambda: self.opt.zero_grad(set_to_none=True)) \
            if self.graph_blocker is None else None
        # a captured step reads the learning rate and step count from the device (capturable AdamW)
        lr0: float | torch.Tensor = torch.tensor(cfg.lr, device=device) if self.graph is not None else cfg.lr
        self.opt = torch.optim.AdamW(self.params, lr=lr0, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                     capturable=self.graph is not None)
        self._lr: float | None = None
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.model = maybe_compile(net, cfg.compile)
        self._names: list[str] = []

    def _set_lr(self, lr: float) -> None:
        """The learning rate of this step. A captured step reads it from a device tensor filled in place; a
        checkpoint's optimizer state brings a float or a CPU tensor back, which is replaced by a device tensor
        before the capture (else the graph would keep the value it was captured with)."""
        if lr == self._lr:
            return
        for group in self.opt.param_groups:
            current = group["lr"]
            if self.graph is not None and not (isinstance(current, torch.Tensor)
                                               and current.device.type == self.device.type):
                if self.graph.captured:
                    raise RuntimeError("the learning rate tensor of a captured step was replaced")
                group["lr"] = torch.tensor(lr, dtype=torch.float32, device=self.device)
            elif isinstance(current, torch.Tensor):
                current.fill_(lr)
            else:
                group["lr"] = lr
        self._lr = lr

    def __call__(self, x1: torch.Tensor, kwargs: dict[str, Any], step: int, generator: torch.Generator
                 ) -> torch.Tensor:
        """x1 (N, *shape) data -> the batch's mean loss (detached); parameters and EMA updated."""
        self._set_lr(lr_at(step, self.cfg))
        if self.graph is not None:
            # the draws Transport.loss would make, in its order, outside the graph (harness/cuda_graph.py)
            x0, t = self.draws(x1, generator)
            try:
                names, tensors = flatten_kwargs(kwargs)
            except ValueError as err:
                if self.cfg.cuda_graph is True or self.graph.captured:
                    raise
                self.graph, self.graph_blocker = None, str(err)       # auto: this model's step stays eager
                _log.info("training step not captured: %s", err)
                return self.__call__(x1, kwargs, step, generator)
            if self.graph.captured and names != self._names:
                raise ValueError(f"the captured training step took model arguments {self._names}, now {names}")
            self._names = names
            try:
                loss = self.graph(x1, x0, t, *tensors)
            except CaptureFailed as err:
                if self.cfg.cuda_graph is True:
                    raise ValueError(f"train.cuda_graph is true but the step could not be captured: {err}") from err
                # auto: the capture only recorded, so nothing of this step ran; it runs eagerly, now and from now on
                self.graph, self.graph_blocker = None, f"the capture failed ({err})"
                _log.warning("training step not captured, it runs eagerly: %s", err)
                loss = self._step(x1, x0, t, *tensors)
        else:
            loss = self._eager(x1, kwargs, generator)
        update_ema(self.ema, self.net, ema_decay(self.cfg.ema_decay, step, self.cfg.ema_warmup))
        return loss

    def draws(self, x1: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, t): the noise and times Transport.loss would draw from `generator`, in its order."""
        return self.transport.draw(tuple(x1.shape), generator=generator, device=x1.device, dtype=x1.dtype)

    def _step(self, x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
        """The captured step: forward, backward, clip, AdamW; no host synchronisation, no random draws."""
        kwargs = dict(zip(self._names, tensors))
        amp = self.amp
        with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None,
                            cache_enabled=False):
            loss = self.transport.loss(lambda xt, tt: self.model(xt, tt, **kwargs), x1, x0=x0, t=t).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)   # foreach on CUDA, as eager
        self.opt.step()
        return loss.detach()

    def _eager(self, x1: torch.Tensor, kwargs: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        amp = self.amp
        with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = self.transport.loss(lambda xt, t: self.model(xt, t, **kwargs), x1, generator=generator)
            loss = loss.mean()
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
        else:
            loss.backward()
        if self.cfg.grad_clip is not None:  # before the step (the official code clips after it: no effect)
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        return loss.detach()


def warmup_steps(steps: int) -> int:
    """Steps at the start of each segment left out of the timing: min(5, max(steps // 10, 1))."""
    return min(5, max(steps // 10, 1))


def train(*, net: nn.Module, transport: Any, loader_for: Callable[[int, int], Iterator[dict]],
          per_epoch: int, condition: Callable[[dict, torch.Generator], dict], cfg: TrainConfig, seed: int,
          device: torch.device, ckpt: Path, config_hash: str,
          log: Callable[[dict[str, float], int], None] = lambda m, s: None,
          history: Callable[[str, list[tuple[int, float]]], None] = lambda name, points: None,
          evaluate: Callable[[nn.Module, int], None] | None = None, eval_every: int | None = None,
          progress: Callable[[int, float], None] = lambda step, loss: None,
          extra_generators: dict[str, torch.Generator] | None = None,
          budget: Budget | None = None, ranks: Ranks | None = None) -> tuple[nn.Module, TrainState]:
    """Train `net` for cfg.steps from its last checkpoint. Returns (EMA copy, state).

    loader_for(epoch, batch) yields batches from that data position; condition(batch, gen) -> model kwargs
    (label dropout drawn from gen). extra_generators (e.g. stochastic depth) are checkpointed too.
    Every step after the segment's warm-up is timed (plugins.measure.Timer: CUDA events read at log points, no
    extra sync); history('train_step_s', [(step, seconds), ...]) receives them in batches at each log point.
    budget (harness/budget.py) decides when training stops and when `evaluate` is due (eval_every is then
    ignored); without one, cfg.steps steps and an evaluation every eval_every steps.
    Raises TrialFailed on non-finite loss or when the memory limit is exceeded.
    ranks (harness/distributed.py): one of several processes; the net is wrapped in DDP, each rank trains its
    rows of the global batch, the loss logged is the mean over ranks and rank 0 alone writes checkpoints.
    """
    net.to(device).train()
    ema = copy.deepcopy(net).requires_grad_(False).eval()
    stepper = Stepper(net, ema, transport, cfg, device)
    if ranks is not None:
        ranks.wrap(stepper)
    gens = {"noise": torch.Generator(device=device).manual_seed(seed_for(seed, 2)),
            "dropout": torch.Generator().manual_seed(seed_for(seed, 3)), **(extra_generators or {})}
    load = lambda: load_checkpoint(ckpt, net=net, ema=ema, opt=stepper.opt, scaler=stepper.scaler,
                                   gens=gens, config_hash=config_hash)
    state = (ranks.lead_first(load) if ranks is not None else load()) or TrainState()
    # this segment's cost figures start afresh (a resumed trial reports the segment that finished it)
    state.timed_images, state.timed_seconds, state.timed_steps, state.peak_memory_gb = 0, 0.0, 0, 0.0
    peak, timer, split = PeakMemory(device), Timer(device), WallSplit()
    peak.reset()
    warmup, first = warmup_steps(cfg.steps), state.step
    batches = loader_for(state.epoch, state.batch)
    loss_sum = torch.zeros((), device=device)
    bad_step = torch.full((), -1, device=device, dtype=torch.long)
    window, timed = 0, []                       # timed: step numbers whose durations the timer holds
    budget = budget or Budget(None, max_steps=cfg.steps, every=eval_every)
    budget.bind(state.extras, step=state.step, batch_size=cfg.batch_size)
    t_start = time.perf_counter()

    def check(step: int) -> None:
        if (b := int((ranks.earliest(bad_step) if ranks is not None else bad_step).item())) >= 0:
            raise TrialFailed(f"non-finite training loss at step {b}", step=b)
        state.peak_memory_gb = max(state.peak_memory_gb, peak.read_total())
        if cfg.max_memory_gb is not None and state.peak_memory_gb > cfg.max_memory_gb:
            raise TrialFailed(f"peak memory {state.peak_memory_gb:.3f} GB exceeded train.max_memory_gb="
                              f"{cfg.max_memory_gb} at step {step}", step=step)

    def flush() -> None:
        seconds = timer.take()
        assert len(seconds) == len(timed), f"{len(seconds)} timed regions for {len(timed)} timed steps"
        state.timed_seconds += sum(seconds)
        state.timed_steps += len(seconds)
        budget.add_seconds(sum(seconds))
        if seconds:
            history("train_step_s", list(zip(timed, seconds)))
        timed.clear()

    while budget.bound() is None:
        step = state.step
        with split("data"):
            batch = next(batches)
            x1, n = batch["x"], batch["x"].shape[0]                  # n: the global batch
            kwargs = condition(batch, gens["dropout"])
            if ranks is not None:
                x1, kwargs = ranks.shard(x1, kwargs)
            x1 = x1.to(device, non_blocking=True)
        with split("step"):
            if step - first >= warmup:
                with timer.region():
                    loss = stepper(x1, kwargs, step, gens["noise"])
                timed.append(step + 1)
                state.timed_images += n
            else:
                loss = stepper(x1, kwargs, step, gens["noise"])
            bad_step = torch.where((~torch.isfinite(loss)) & (bad_step < 0), step, bad_step)
            loss_sum += loss.float()
        window += 1
        state.step = step + 1
        state.epoch, state.batch = BatchStream.advance(state.epoch, state.batch, per_epoch)
        budget.step(n, timer.peek())
        if budget.needs_flush(state.step, cfg.log_every):
            flush()
        last = budget.bound() is not None
        if state.step % cfg.log_every == 0 or last:
            with split("log"):
                check(step)
                flush()
                state.last_loss = (ranks.mean(loss_sum) if ranks is not None else loss_sum).item() / window
                log({"train_loss": state.last_loss, "lr": lr_at(step, cfg)}, state.step)
                loss_sum.zero_()
                window = 0
        progress(state.step, state.last_loss)
        if budget.eval_due() and evaluate is not None:
            with split("eval"):
                check(step)
                flush()                             # evaluation waits for the device anyway: seconds up to here
                evaluate(ema, state.step)
        if state.step % cfg.checkpoint_every == 0 or last:
            with split("checkpoint"):
                check(step)
                flush()
                state.wall = dict(split.seconds)
                state.train_seconds += time.perf_counter() - t_start
                t_start = time.perf_counter()
                if ranks is None or ranks.lead:
                    save_checkpoint(ckpt, net=net, ema=ema, opt=stepper.opt, scaler=stepper.scaler, state=state,
                                    gens=gens, config_hash=config_hash, background=cfg.checkpoint_async)
    wait_pending(ckpt)
    flush()
    state.wall = dict(split.seconds)
    state.peak_memory_gb = max(state.peak_memory_gb, peak.read_total())
    return ema, state
