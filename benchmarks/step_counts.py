"""The counting half of benchmarks/profile_step.py: the FLOPs and bytes of one training step, per kernel group.

An aten op's bytes are its tensor inputs plus outputs (`op_bytes`) as a dispatch mode sees them (`_Count`); the fused
mamba-ssm / causal-conv1d / Triton kernels it cannot see are counted from the shapes (`fused_mixer_counts`,
`gated_norm_bytes`) and merged (`merge_shape_counts`)."""

from __future__ import annotations

import re
from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from .roofline import ADALN

_KERNEL_RULES = (  # (group, regex on a CUDA kernel's name), first match wins
    ("selective scan / SSD", (r"selective_scan|_chunk_scan|_chunk_state|_state_passing|_bmm_chunk|_chunk_cumsum|ssd"
                              r"|chunk_(fwd|bwd)_kernel|chunk_local_cumsum")),  # the last two: fla's simple GLA
    ("causal conv", r"causal_conv1d"),
    ("optimizer", r"multi_tensor|adam"),
    ("GEMMs", r"gemm|cutlass|nvjet|xmma|cublas|wgmma|matmul"),
    (ADALN, r"norm"),
)
_OP_RULES = (  # (group, regex on the name of an op the kernel ran under), innermost op first
    ("optimizer", r"^Optimizer\.|_fused_adamw|adamw"),
    ("permutation gathers", r"PermuteTokens|^aten::(index|index_select|gather|take|_unsafe_index)"),
    ("causal conv", r"CausalConv|causal_conv"),
    ("selective scan / SSD", r"^_SelectiveScan|zigma::ssd|ChunkSimpleGLA"),  # the reference scans; fla's op
    ("GEMMs", r"^aten::(mm|addmm|bmm|baddbmm|_scaled_mm|convolution|_convolution|cudnn_convolution|matmul|linear)\b"),
    (ADALN, r"norm|^zigma::adaln$"),
    ("mixer (other)", r"Mamba|SelectiveScanFn|Mixer"),             # any other kernel inside mamba-ssm's functions
)


def group_of(name: str, ancestors: list[str]) -> str:
    """The group of a kernel/op `name` that ran under `ancestors` (innermost first)."""
    for group, pattern in _KERNEL_RULES:
        if re.search(pattern, name, re.IGNORECASE):
            return group
    for op in [name, *ancestors]:
        for group, pattern in _OP_RULES:
            if re.search(pattern, op):
                return group
    return "other"


_ALLOCATIONS = frozenset({"empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided"})


def _addressed_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements a tensor addresses: a broadcast (stride-0) dimension is read once."""
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        n *= size if stride else 1
    return n * t.element_size()


def op_bytes(func, args, kwargs, out) -> int:
    """Bytes an aten op moves: its tensor inputs read plus its outputs written, each tensor counted by the elements
    it addresses. Views and other aliases (`view`, `t`, `expand`, `slice`, `_unsafe_view`, ...) and bare
    allocations (`empty_like`, ...) move nothing and count 0; an in-place op reads and writes its target."""
    name = func.overloadpacket.__name__
    if name in _ALLOCATIONS:
        return 0
    ins = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    outs = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    if func.is_view or (not func._schema.is_mutable and outs and all(
            any(o.untyped_storage().data_ptr() == i.untyped_storage().data_ptr() for i in ins) for o in outs)):
        return 0
    return sum(_addressed_bytes(t) for t in ins + outs)


class _Count(TorchDispatchMode):
    """FLOPs (torch's flop formulas, 2 per MAC) and bytes (`op_bytes`) per group of every aten op."""

    def __init__(self):
        super().__init__()
        self.flops, self.bytes = defaultdict(float), defaultdict(float)
        self.force: str | None = None  # the group of every op while set (the optimizer step, an adaLN call)
        self.tags = None  # profile_step's AdaLNTags while a step is counted (the adaLN backward's group)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = f"aten::{func.overloadpacket.__name__}"
        group = self.force or (self.tags.backward_group() if self.tags is not None else None) or group_of(name, [])
        self.bytes[group] += op_bytes(func, args, kwargs, out)
        if func.overloadpacket in flop_registry:
            self.flops[group] += flop_registry[func.overloadpacket](*args, **kwargs, out_val=out)
        return out


def fused_mixer_counts(model, batch: int, act_bytes: int) -> dict[str, tuple[float, float]]:
    """(FLOPs, bytes) of the scan/SSD and causal-conv kernels of one training step (fwd + bwd = 3x fwd FLOPs),
    from the shapes; the projections around them are GEMMs and counted there."""
    scan, conv = [0.0, 0.0], [0.0, 0.0]
    for blk in model.blocks:
        m, length, k = blk.mixer, blk.orders.shape[1] // blk.segments, blk.mixer.num_directions
        bl, e, n = batch * blk.orders.shape[1], m.d_inner, m.d_state
        if hasattr(m, "nheads"):  # Mamba-2: chunked SSD (C.B^T, its product with x, chunk states in/out) + gate
            q, channels = min(m.fused_chunk, length), e + 2 * m.ngroups * n
            scores = m.nheads if m.ssd == "fla" else m.ngroups    # fla gets B and C expanded to heads
            macs = bl * (q * scores * n + q * e + 2 * e * n) + bl * e
            per_token = channels + m.nheads + e                   # x, B, C, dt in; y out (z is gated in the norm)
        else:  # Mamba-1: selective scan 9 B L E N + D skip + z gate (fvcore's formula, as zigma.backbones.flops)
            channels = e
            macs = 9 * bl * e * n + 2 * bl * e
            per_token = 4 * e + 2 * n                             # u, delta, z in; y out; B, C in
        conv[0] += k * 3 * 2 * bl * channels * m.d_conv
        conv[1] += k * 5 * bl * channels * act_bytes              # fwd: x in, y out; bwd: x, dy in, dx out
        scan[0] += k * 3 * 2 * macs
        scan[1] += k * 2 * bl * per_token * act_bytes * 2         # fwd once, bwd ~twice (inputs + dy, gradients)
    return {"selective scan / SSD": tuple(scan), "causal conv": tuple(conv)}


def _split_path(mixer) -> bool:
    """Whether a Mamba-2 mixer runs mamba-ssm's fully fused layer (conv, SSD, gated RMSNorm and out_proj in one
    autograd function), whose gated RMSNorm is a Triton kernel: zigma.mixer.mamba2's condition for that path."""
    from zigma.mixer import fused

    return (hasattr(mixer, "nheads") and mixer.backend != "reference" and mixer.num_directions == 1
            and mixer.ssd == "mamba-ssm" and fused.ssd_available() and fused.ssd_kernels()["split_conv1d_scan"]
            is not None)


def gated_norm_bytes(model, batch: int, act_bytes: int) -> float:
    """Bytes of the gated RMSNorm kernels that the byte counter cannot see (Mamba-2's fused layer, `_split_path`):
    forward reads y and z and writes the output, backward reads y, z and the output's gradient and writes dy and
    dz, i.e. 8 x d_inner values a token a layer, the least any implementation moves. Their time is in the norms
    group (the kernels' names say norm), so their bytes go there too; without them the group's ratio counted the
    time of kernels whose traffic it left out (the first Mamba-2 profile, 2026-12-05)."""
    total = 0.0
    for blk in model.blocks:
        if _split_path(blk.mixer):
            total += 8 * batch * blk.orders.shape[1] * blk.mixer.d_inner * act_bytes
    return total


def merge_shape_counts(flops: dict, bytes_: dict, shaped: dict[str, tuple[float, float]]) -> tuple[dict, dict]:
    """The dispatch mode's (FLOPs, bytes) per group, with the groups of fused kernels filled from their shapes.

    A fused kernel registered as a torch custom op (causal-conv1d's `causal_conv1d_fwd`/`_bwd`) is seen by the
    dispatch mode: its bytes are then those of the real tensors, recomputations included, and stand; a kernel it
    cannot see (mamba-ssm's selective scan, Triton SSD) gets the shape count. Custom ops have no FLOP formula, so a
    group's FLOPs come from the shapes unless the dispatch mode counted some. Never both: adding them counted the
    causal conv twice in the first H200 profile."""
    flops, bytes_ = dict(flops), dict(bytes_)
    for group, (f, b) in shaped.items():
        flops[group] = flops.get(group) or f
        bytes_[group] = bytes_.get(group) or b
    return flops, bytes_
