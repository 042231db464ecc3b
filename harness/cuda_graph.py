"""`train.cuda_graph`: the whole training step (forward, backward, clipping, AdamW) replayed as one CUDA graph.

At the small sizes of an ablation (ZigMa-XS, 256 tokens) a step is a few thousand short kernels and the host cannot
launch them as fast as the GPU runs them (benchmarks/results/study_throughput_h200.md: 54 % of the step busy).
`torch.cuda.graph` records the step's kernels once and replays them with one launch; mamba-ssm's fused kernels are
recorded like any other (they run on the current stream and do not synchronise), which `torch.compile` cannot do
(Dynamo graph-breaks at them). The recipe is PyTorch's "whole network capture" (CUDA semantics notes): warm-up steps on
a side stream, gradients set to None before capture so backward allocates them in the graph's pool, a `capturable`
optimizer whose step count and learning rate live on the device, autocast without its weight cache.

Random draws stay outside the graph: the step's noise and times are drawn eagerly from the trial's generator in the
same order as `Transport.loss` draws them, then copied into the graph's inputs, so a seed gives the same batches of
noise with or without the graph. EMA, the loss bookkeeping and checkpoints also stay outside.

With `train.compile` too (and `train.cuda_graph: true`), the compiled model runs in the warm-up steps, where Dynamo
and Inductor compile and autotune, and the capture then records its Triton kernels beside mamba-ssm's (graph breaks
do not matter: Python does not run during a replay). Only modes without CUDA graphs of their own can be recorded
("default", "max-autotune-no-cudagraphs"); "reduce-overhead" and "max-autotune" replay Inductor's own graphs.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["WARMUP_STEPS", "CAPTURABLE_COMPILE", "CaptureFailed", "StepGraph", "compile_blocker", "flatten_kwargs",
           "graph_blocker", "release_cuda_memory", "side_stream"]

WARMUP_STEPS = 3        # eager (real) steps on a side stream before capture: lazy init, cuBLAS workspaces, autotuning
CAPTURABLE_COMPILE = ("default", "max-autotune-no-cudagraphs")   # torch.compile modes without CUDA graphs of their own


_SIDE: dict[int, torch.cuda.Stream] = {}


def side_stream(device: torch.device | None = None) -> torch.cuda.Stream:
    """The one side stream of this process on `device` (default: the current one) on which every graph warms up and
    is captured. One for the process, not one per graph: cuBLAS keeps a workspace for each (handle, stream) pair it
    has seen until the process ends, so a new stream per warm-up left about 0.24 GB a trial allocated in a worker
    that ran trial after trial (seen on an H200 as peak memory rising by that much per trial until torch's pool of
    32 streams per device came round again). Warming up on the capture stream itself also means its workspace exists
    before the capture, so it is not allocated inside (and does not pin) a graph's private memory pool."""
    index = torch.cuda.current_device() if device is None or device.index is None else device.index
    if index not in _SIDE:
        _SIDE[index] = torch.cuda.Stream(index)
    return _SIDE[index]


def release_cuda_memory() -> None:
    """Between trials: free what the finished trial left behind (cycles, cuBLAS workspaces, cached blocks), so each
    trial's peak memory starts from the same state. Only call it when no CUDA graph will be replayed again: a
    captured graph keeps pointers into the workspaces it was recorded with."""
    gc.collect()
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    torch.cuda.synchronize()
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)   # torch's own teardown hook (no public API)
    if clear is not None:
        clear()
    torch.cuda.empty_cache()


def compile_blocker(setting: bool | str, compile: bool | str) -> str | None:
    """Why a step compiled with train.compile=`compile` is not captured under train.cuda_graph=`setting` (None: it
    may be). Inductor's own CUDA graphs cannot be recorded again; "auto" captures eager models only (a compiled
    capture is asked for with true until a benchmark shows it wins)."""
    from harness.compile import compile_mode
    mode = compile_mode(compile)
    if mode is None:
        return None
    if mode not in CAPTURABLE_COMPILE:
        return (f"train.compile {mode!r} replays Inductor's own CUDA graphs, which a captured step cannot record "
                f"(use one of {', '.join(CAPTURABLE_COMPILE)} with train.cuda_graph)")
    if setting == "auto":
        return "train.compile is on and train.cuda_graph is auto (a compiled step is captured only with true)"
    return None


def graph_blocker(setting: bool | str, device: torch.device, net: nn.Module, *, fp16: bool,
                  compile: bool | str = False) -> str | None:
    """Why the step cannot be captured here (None: it can). `setting` is train.cuda_graph (true / false / "auto"),
    `compile` is train.compile."""
    if setting is False:
        return "train.cuda_graph is false"
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device (this trial runs on {device.type})"
    if fp16:
        return "fp16 needs a GradScaler, whose inf checks synchronise the host (use bf16)"
    from zigma.backbones.layers import DropPath
    for name, module in net.named_modules():
        if isinstance(module, DropPath) and module.p > 0:
            return f"{name} draws random numbers inside the forward (stochastic depth, drop_path > 0)"
        if isinstance(reason := getattr(module, "graph_blocker", None), str):
            return f"{name}: {reason}"
    return compile_blocker(setting, compile)


class CaptureFailed(RuntimeError):
    """The function could not be recorded as a CUDA graph (nothing of it ran: a capture only records)."""


class StepGraph:
    """Calls `fn(*inputs)` eagerly for WARMUP_STEPS calls, then captures it and replays it.

    fn must be capturable: tensors in, tensors out, no host synchronisation, no CPU tensors, the same shapes every
    call. `prepare()` runs before the capture (e.g. optimizer.zero_grad(set_to_none=True)). Inputs are copied into
    static buffers each call; the returned tensor is a copy of the graph's output (valid after the next replay too).
    """

    def __init__(self, fn: Callable[..., torch.Tensor], prepare: Callable[[], None] = lambda: None,
                 warmup: int = WARMUP_STEPS) -> None:
        self.fn, self.prepare, self.warmup = fn, prepare, warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: list[torch.Tensor] = []
        self.out: torch.Tensor | None = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.graph is None and self.calls < self.warmup:
            self.calls += 1
            side = side_stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.fn(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            self._capture(inputs)
        else:
            self._check(inputs)
            for dst, src in zip(self.static, inputs):
                dst.copy_(src, non_blocking=True)
        assert self.graph is not None and self.out is not None
        self.graph.replay()
        return self.out.clone()

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> None:
        torch.cuda.synchronize()
        self.static = [x.detach().clone() for x in inputs]
        self.prepare()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=side_stream()):
                self.out = self.fn(*self.static)
        except Exception as err:  # any op that cannot be recorded (a host sync, a CPU tensor, ...)
            self.static, self.out = [], None
            torch.cuda.synchronize()
            raise CaptureFailed(f"{type(err).__name__}: {err}"[:500]) from err
        self.graph = graph

    def _check(self, inputs: tuple[torch.Tensor, ...]) -> None:
        if len(inputs) != len(self.static) or any(a.shape != b.shape or a.dtype != b.dtype
                                                   for a, b in zip(inputs, self.static)):
            got = [tuple(x.shape) for x in inputs]
            want = [tuple(x.shape) for x in self.static]
            raise ValueError(f"a captured training step needs the same input shapes every step (captured {want}, "
                             f"got {got}); a ragged last batch cannot be replayed")


def flatten_kwargs(kwargs: dict[str, Any]) -> tuple[list[str], list[torch.Tensor]]:
    """(names, tensors) of a step's model kwargs; anything but tensors (or None) cannot enter a graph."""
    names, tensors = [], []
    for name, value in kwargs.items():
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            # ValueError, not TypeError: the callers catch ValueError to leave the step eager
            raise ValueError(  # noqa: TRY004
                f"model argument {name!r} is a {type(value).__name__}, not a tensor: the training step "
                "cannot be captured as a CUDA graph (set train.cuda_graph: false)")
        names.append(name)
        tensors.append(value)
    return names, tensors
