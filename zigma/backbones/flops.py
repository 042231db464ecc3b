"""Parameter counts and forward FLOPs of a backbone.

Convention (DiT, fvcore, ZigMa's helper): one multiply-accumulate = one FLOP, forward pass only.
Everything outside the Mamba mixers (patch embed, adaLN, attention, MLPs, head) is counted by
torch.utils.flop_counter.FlopCounterMode (matmuls, convolutions, SDPA; its 2-per-MAC counts halved).
The counter cannot see inside the selective scan (fused kernel or a chain of elementwise ops), so during
counting each mixer is replaced by a stub and counted with this formula, per mixer call on B x L tokens
(E = d_inner, N = d_state, R = dt_rank, K directions):

    in_proj  B*L*D*2E                      out_proj  B*L*E*D
    per direction: conv1d B*L*E*d_conv, x_proj B*L*E*(R+2N), dt_proj B*L*R*E,
                   selective scan 9*B*L*E*N + D-skip B*L*E + z-gate B*L*E
    (the scan term is `flops_selective_scan_fn`'s 9*B*L*D*N of the official fvcore helper, with_D, with_Z)

A mixer with a `flops(batch, length)` method (Mamba2Mixer: projections, conv and the chunked SSD as its fused
kernels compute it) is counted by that method instead; any other mixer by the counter, like the rest.
Elementwise ops, norms, activations and the scan-order gathers are free, as in fvcore. Counting works on the
`meta` device, so big models cost no memory. `identical_blocks=True` counts only `model.blocks[0]` and
multiplies by the depth (exact when every block has the same shapes: scan orders and segments cost nothing);
it makes counting deep models on `meta` about depth times faster.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

# torch's counter has formulas for the CUDA attention kernels only: on CPU, scaled_dot_product_attention runs
# aten._scaled_dot_product_flash_attention_for_cpu and would count 0 FLOPs (torch 2.14); count it like the others
_CPU_SDPA = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs (2 per MAC, torch's convention) of QK^T and AV, as torch counts the CUDA kernels."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_CUSTOM = {_CPU_SDPA: _cpu_sdpa_flop} if _CPU_SDPA is not None else {}   # keyed by overload packet

from ..mixer import MambaMixer

__all__ = ["count_params", "flops", "mixer_flops"]


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers, e.g. scan orders, excluded)."""
    return sum(p.numel() for p in model.parameters())


def mixer_flops(mixer: MambaMixer, batch: int, length: int) -> int:
    """MACs of one MambaMixer call on (batch, length, d_model) tokens (formula in the module docstring)."""
    bl, d, e, n = batch * length, mixer.d_model, mixer.d_inner, mixer.d_state
    r, k = mixer.dt_rank, mixer.num_directions
    per_direction = bl * e * mixer.d_conv + bl * e * (r + 2 * n) + bl * r * e + 9 * bl * e * n + 2 * bl * e
    return bl * d * 2 * e + k * per_direction + bl * e * d


def _block_signature(block: nn.Module) -> tuple:
    return tuple((n, tuple(p.shape)) for n, p in block.named_parameters())


def flops(model: nn.Module, x: torch.Tensor, t: torch.Tensor | None = None, *, identical_blocks: bool = False,
          **forward_kwargs) -> int:
    """Forward MACs of model(x, t, **forward_kwargs) on x (N, ...) (t defaults to 0.5), mixers by formula."""
    if t is None:
        t = torch.full((x.shape[0],), 0.5, device=x.device, dtype=x.dtype)
    analytic = [0]
    repeats, skipped = 1, []
    if identical_blocks:
        blocks = list(model.blocks)
        first = _block_signature(blocks[0])
        if any(_block_signature(b) != first for b in blocks[1:]):
            raise ValueError("identical_blocks=True but the model's blocks differ in shape")
        repeats, skipped = len(blocks), blocks[1:]
    counted = model.blocks[0] if skipped else model
    mixers = [m for m in counted.modules() if isinstance(m, MambaMixer) or callable(getattr(m, "flops", None))]

    def stub(mixer):
        count = mixer.flops if callable(getattr(mixer, "flops", None)) else lambda b, l: mixer_flops(mixer, b, l)

        def forward(u, *, segments=1, branch_index=None):
            analytic[0] += count(u.shape[0], u.shape[1])
            return torch.zeros_like(u)                                  # (B, L, D)
        return forward

    def identity(h, *args, **kwargs):
        return h

    for m in mixers:
        m.forward = stub(m)
    for b in skipped:
        b.forward = identity
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_CUSTOM) as counter:
            model(x, t, **forward_kwargs)
    finally:
        for m in (*mixers, *skipped):
            del m.forward
    total = counter.get_total_flops() // 2 + analytic[0]
    if skipped:
        block = sum(counter.get_flop_counts().get(f"{type(model).__name__}.blocks.0", {}).values()) // 2
        total += (repeats - 1) * (block + analytic[0])
    return total
