"""The scan interface: a scheme gives, for a token grid and a depth, the token order(s) of every layer.

Tokens are indexed frame-major, row-major: token (f, r, c) <-> f*H*W + r*W + c.
An *order* is a LongTensor `order` of length L = T*H*W where `order[s]` is the token visited at step s.
Its inverse `inv` satisfies inv[order[s]] = s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Grid", "LayerScan", "ScanScheme", "inverse", "relative_order", "frame_major", "permute_tokens"]


@dataclass(frozen=True)
class Grid:
    """Token grid: `t` frames (1 for images) of `h` x `w` tokens."""

    h: int
    w: int
    t: int = 1

    def __post_init__(self) -> None:
        if min(self.h, self.w, self.t) < 1:
            raise ValueError(f"grid sizes must be >= 1, got t={self.t}, h={self.h}, w={self.w}")

    @property
    def num_tokens(self) -> int:
        return self.t * self.h * self.w

    @property
    def is_video(self) -> bool:
        return self.t > 1


def inverse(order: torch.Tensor) -> torch.Tensor:
    """Inverse permutation: inverse(order)[order[s]] = s."""
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), dtype=order.dtype, device=order.device)
    return inv


#: how `permute_tokens` gathers: "index_select" along dim 1, "rows" (one index_select over the flattened
#: (N * L, ...) rows of a contiguous tensor), "advanced" (x[:, idx]) or "auto": rows on CUDA, index_select elsewhere.
#: On an H100 (benchmarks/results/permute_probe_h100.log, ZigMa-B, 64K tokens a step, 2 interleaved rounds) zigzag-8's
#: overhead over no permutation was 1.88-1.99 % with rows, 2.37-2.49 % with index_select, 3.45-3.55 % advanced.
_GATHER = "auto"


def _gather(x: torch.Tensor, idx: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """x[:, idx] by the `_GATHER` method (another `dim`: index_select along it)."""
    if dim not in (1, 1 - x.dim()):
        return x.index_select(dim, idx)
    method = ("rows" if x.is_cuda else "index_select") if _GATHER == "auto" else _GATHER
    if method == "rows" and x.is_contiguous():
        n, length = x.shape[0], x.shape[1]
        rows = (torch.arange(n, device=idx.device, dtype=idx.dtype) * length).unsqueeze(1) + idx  # (N, L)
        return x.reshape(n * length, *x.shape[2:]).index_select(0, rows.reshape(-1)).view(x.shape)
    if method == "advanced":
        return x[:, idx]
    return x.index_select(1, idx)


class _PermuteTokens(torch.autograd.Function):
    """x[:, idx] whose backward is the gather grad[:, inv] (index_select's own backward is a zero-fill plus an
    index_add_ scatter: about twice the time on an H100, benchmarks/results/bench_h100.log)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, idx: torch.Tensor, inv: torch.Tensor, dim: int) -> torch.Tensor:
        ctx.save_for_backward(idx, inv)
        ctx.dim = dim
        return _gather(x, idx, dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        idx, inv = ctx.saved_tensors
        return _PermuteTokens.apply(grad, inv, idx, ctx.dim), None, None, None  # differentiable (double backward)


def permute_tokens(x: torch.Tensor, idx: torch.Tensor, inv: torch.Tensor | None = None, dim: int = 1) -> torch.Tensor:
    """x (N, L, ...) -> x[:, idx] for a permutation idx (L,); `inv` = inverse(idx), computed when not given.
    Same values and gradients as x.index_select(dim, idx); the backward is a gather instead of a scatter. `dim`:
    the sequence's dimension (e.g. -1 for a channel-major (N, C, L) tensor)."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return _gather(x, idx, dim)
    return _PermuteTokens.apply(x, idx, inverse(idx) if inv is None else inv, dim)


def relative_order(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """(L,) index taking a sequence in `src` order to `dst` order: x_dst = x_src[:, index]."""
    return inverse(src)[dst]


def frame_major(path: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(H*W,) per-frame path -> (T*H*W,) order scanning frame 0 with it, then frame 1, ..."""
    hw = grid.h * grid.w
    assert path.numel() == hw, f"path of {path.numel()} tokens for a {grid.h}x{grid.w} frame"
    return (torch.arange(grid.t, dtype=torch.int64)[:, None] * hw + path[None]).reshape(-1)


@dataclass(frozen=True)
class LayerScan:
    """What one layer scans.

    orders: one (L,) order per scan *direction* run inside the layer: 1 for a unidirectional layer,
        2 for a bidirectional (Vim v2) layer, K for a parallel-K layer. Each direction has its own
        SSM parameters in the mixer; outputs are combined (sum) in token space.
    segments: the ordered sequence is split into `segments` equal, independent sequences
        (e.g. a factorized video spatial layer: segments = T, one per frame; temporal layer: segments = H*W).
    kind: a short label for pictures and tables ('s' spatial, 't' temporal, 'st' whole sequence).
    """

    orders: tuple[torch.Tensor, ...]
    segments: int = 1
    kind: str = "st"
    inverses: tuple[torch.Tensor, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.orders:
            raise ValueError("a LayerScan needs at least one order")
        n = self.orders[0].numel()
        for k, o in enumerate(self.orders):   # checked once, here: every later gather trusts the orders
            if o.dim() != 1 or o.is_floating_point() or o.numel() != n or not torch.equal(
                    o.sort().values, torch.arange(n, dtype=o.dtype, device=o.device)):
                raise ValueError(f"scan direction {k}: the order is not a permutation of 0..{n - 1} "
                                 f"(shape {tuple(o.shape)}, dtype {o.dtype})")
        if n % self.segments:
            raise ValueError(f"{n} tokens do not split into {self.segments} segments")
        if not self.inverses:
            object.__setattr__(self, "inverses", tuple(inverse(o) for o in self.orders))

    @property
    def num_directions(self) -> int:
        return len(self.orders)


class ScanScheme:
    """Base class of scan schemes. Subclasses set `name` and implement `layer_scans`."""

    name: str = "scan"
    #: number of scan directions every layer runs (1 unidirectional, 2 bidirectional, K parallel): a declaration
    #: the tests hold each LayerScan to
    directions: int = 1
    #: "image" (any grid, frames scanned frame-major), "video" (needs t > 1) or "any"; the harness's registry
    #: takes it as the scan's modality unless its ScanEntry names one
    modality: str = "any"

    def layer_scans(self, grid: Grid, depth: int) -> list[LayerScan]:
        """Return `depth` LayerScans, one per layer."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
