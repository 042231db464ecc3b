"""Selective scan (Mamba-1 SSM) in pure PyTorch: a parallel reference and a step-by-step loop.

Both follow `mamba_ssm.selective_scan_fn`'s signature and layout:
u, delta, z: (B, D, L); A: (D, N); B, C: (B, N, L); D, delta_bias: (D,).
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t         (per channel d, state n)
    y_t = <C_t, h_t> + D * u_t,       out = y * silu(z)

The reference is one autograd Function (softplus, skip and gate included) with a hand-written backward: the
adjoint is the same recurrence run in reverse. It works on chunks of time-major (T, N, S, D) tensors, so every
broadcast product vectorizes over D and every time step is one contiguous slice. Within a chunk the linear
recurrence h_t = a_t h_{t-1} + b_t runs on CPU as T in-place steps (one pass over the states), after a few
Brent-Kung halvings when a step is small (batch x width x states under 2^15), and elsewhere as a work-efficient
Brent-Kung parallel scan (log2(T) levels of a few large ops, for accelerators where a step's launch costs more
than its work).
Decays a_t = exp(delta_t * A) are computed from non-positive exponents only (delta >= 0, A < 0 for every Mamba
layer), and the scan only multiplies and adds them, so nothing can overflow at any length or step size: a decay
that underflows to 0 is the correct limit.

Memory: on CPU, while autograd records, the forward keeps each chunk's decays and states (2 * B * L * D * N
elements) for the backward up to `_KEEP_CPU` elements (256 MiB in fp32, e.g. batch 4 x 4096 tokens x width 128
x 16 states); chunks beyond that, and every chunk on other devices, keep only their starting state, and the
backward recomputes their decays and states from it (one more exp, product and scan per state element).
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F

__all__ = ["selective_scan_bld", "selective_scan_naive", "selective_scan_ref"]

_CHUNK_CPU = 2**20  # elements of one (T, N, S, D) chunk tensor on CPU (the fastest of 2^17..2^22 on 2 cores)
_CHUNK_OTHER = 2**26  # elsewhere: bounds the memory of the forward and of the backward's recomputation
_KEEP_CPU = 2**26  # CPU: decays and states kept for the backward, at most (256 MiB of fp32)
_STEP_CPU = 2**15  # CPU: elements a time step below which halvings cut the number of steps (see `_scans`)
_LOG2_E = 1.4426950408889634  # exp(x) = exp2(x log2 e); exp2 is ~1.4x faster than exp on CPU


def _scan_bk(a: torch.Tensor, h: torch.Tensor, levels: int = -1) -> None:
    """In-place inclusive scan h_t <- a_t * h_{t-1} + h_t (h_{-1} = 0) along dim 0 of (T, ...) tensors.

    Brent-Kung: fold pairs (2i, 2i+1) into the odd slot, scan the half-length problem there, then extend to
    the even slots. After `levels` halvings (all of them if negative) the rest runs step by step.
    """
    n = h.shape[0]
    if levels == 0 or n < 4:
        return _scan_steps(a, h)
    m = n // 2
    a_odd, h_odd = a[1 : 2 * m : 2], h[1 : 2 * m : 2]
    h_odd.addcmul_(a_odd, h[0 : 2 * m : 2])  # each pair's own sum
    _scan_bk(a_odd * a[0 : 2 * m : 2], h_odd, levels - 1)
    h[2::2].addcmul_(a[2::2], h[1 : n - 1 : 2])  # even positions 2i (i >= 1) extend the prefix ending at 2i - 1


def _scan_bk_reverse(a: torch.Tensor, g: torch.Tensor, levels: int = -1) -> None:
    """In-place reverse scan g_t <- g_t + a_{t+1} * g_{t+1} along dim 0 of (T, ...) tensors (Brent-Kung, then
    step by step after `levels` halvings)."""
    n = g.shape[0]
    if levels == 0 or n < 4:
        return _scan_steps_reverse(a, g)
    m, ne = n // 2, (n + 1) // 2  # full pairs (2i, 2i+1), even positions
    g_even = g[0::2]  # each pair folded onto its first element
    g_even[:m].addcmul_(a[1 : 2 * m : 2], g[1 : 2 * m : 2])
    a_even = torch.empty_like(g_even)  # a_even[j] = a_{2j} a_{2j-1} carries pair j into pair j-1; [0] unused
    torch.mul(a[2::2], a[1 : 2 * ne - 1 : 2], out=a_even[1:])
    _scan_bk_reverse(a_even, g_even, levels - 1)
    g[1 : 2 * ne - 1 : 2].addcmul_(a[2::2], g_even[1:])


def _scan_steps(a: torch.Tensor, h: torch.Tensor) -> None:
    """The same scan as `_scan_bk`, one in-place step per t (each element read and written once)."""
    hs, as_ = h.unbind(0), a.unbind(0)
    for t in range(1, len(hs)):
        hs[t].addcmul_(as_[t], hs[t - 1])


def _scan_steps_reverse(a: torch.Tensor, g: torch.Tensor) -> None:
    """The same scan as `_scan_bk_reverse`, one in-place step per t."""
    gs, as_ = g.unbind(0), a.unbind(0)
    for t in range(len(gs) - 2, -1, -1):
        gs[t].addcmul_(as_[t + 1], gs[t + 1])


def _scans(device: torch.device, step: int):
    """(forward, reverse) in-place scans for time steps of `step` elements.

    CPU: sequential steps, after up to 4 Brent-Kung halvings while a step is under `_STEP_CPU` elements (a
    halving costs ~3 passes over half the chunk but saves half the steps, whose fixed cost is a few us).
    Elsewhere: all Brent-Kung.
    """
    if device.type != "cpu":
        return _scan_bk, _scan_bk_reverse
    levels = max(0, min(4, (_STEP_CPU // step).bit_length() - 1))
    return functools.partial(_scan_bk, levels=levels), functools.partial(_scan_bk_reverse, levels=levels)


def _chunk_len(n: int, length: int, d: int, s: int, device: torch.device) -> int:
    """Tokens per chunk: one chunk's (T, N, S, D) tensors stay in cache on CPU, bounded in memory elsewhere."""
    target = _CHUNK_CPU if device.type == "cpu" else _CHUNK_OTHER
    return max(1, min(length, target // (n * d * s)))


def _keep_budget(device: torch.device) -> int:
    """Elements of decays and states the forward may keep for the backward instead of recomputing them.

    On CPU keeping is faster (it saves the backward an exp and a scan per state element; ~25% of forward +
    backward at batch 4, width 128, 1024 tokens); elsewhere the reference stays memory-bounded by chunks.
    """
    return _KEEP_CPU if device.type == "cpu" else 0


def _chunk_states(u_dt, dt, At2, B, start, scan):
    """Decays and states of one chunk: u_dt, dt (T, N, D); At2 = A^T log2(e) (S, D); B (T, N, S); start (N, S, D)
    -> decay, h (T, N, S, D)."""
    shape = (*dt.shape[:2], *At2.shape)  # (T, N, S, D), laid out so whatever the inputs' strides
    decay = torch.mul(dt.unsqueeze(2), At2, out=dt.new_empty(shape)).exp2_()  # exp(dt A), exponents <= 0
    h = torch.mul(u_dt.unsqueeze(2), B.unsqueeze(-1), out=dt.new_empty(shape))  # the drive dt u B, scanned in place
    h[0].addcmul_(decay[0], start)  # the state carried in from the previous chunk
    scan(decay, h)
    return decay, h


def _time_major(x: torch.Tensor) -> torch.Tensor:
    """(N, L, F) in any layout -> (L, N, F) contiguous (one copy)."""
    return x.transpose(0, 1).contiguous()


class _SelectiveScan(torch.autograd.Function):
    """out = (<C_t, h_t> + D u_t) * silu(z_t), h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t, dt = softplus(delta + bias).

    u, delta, z (N, L, D); A (D, S); B, C (N, L, S); D, delta_bias (D,) or None -> out (N, L, D).
    `keep`: the backward will run, so chunks may be kept for it (see `_keep_budget`).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, keep):
        n, length, d = u.shape
        s = A.shape[1]
        T = _chunk_len(n, length, d, s, u.device)
        scan = _scans(u.device, n * s * d)[0]
        At2 = A.t().contiguous() * _LOG2_E  # (S, D); contiguous, so that the decays come out (T, N, S, D)
        u_t, B_t, C_t = (_time_major(x) for x in (u, B, C))  # (L, N, D), (L, N, S), (L, N, S)
        dt_in = _time_major(delta) if delta_bias is None else torch.add(delta.transpose(0, 1), delta_bias,
                                                                          out=torch.empty_like(u_t))  # (L, N, D)
        dt = F.softplus(dt_in) if softplus else dt_in  # (L, N, D)
        u_dt = u_t * dt  # (L, N, D)
        y = torch.empty_like(u_t)  # (L, N, D)
        budget = _keep_budget(u.device) if keep else 0
        start = u.new_zeros(n, s, d)  # (N, S, D): the state entering each chunk
        starts, kept = [], []
        for t0 in range(0, length, T):
            sl = slice(t0, t0 + T)
            decay, h = _chunk_states(u_dt[sl], dt[sl], At2, B_t[sl], start, scan)
            torch.matmul(C_t[sl].unsqueeze(-2), h, out=y[sl].unsqueeze(-2))  # y_t = sum_s C_t[s] h_t[s]
            starts.append(start)
            if 2 * h.numel() <= budget:
                budget -= 2 * h.numel()
                kept += [decay, h]
                start = h[-1]
            else:
                start = h[-1].clone()  # not a view, which would keep the whole chunk alive
        if D is not None:
            y.addcmul_(u_t, D)
        out = y.new_empty(n, length, d)  # written token-major, the layout callers use next
        if z is not None:
            z_t = _time_major(z)  # (L, N, D)
            gate = F.silu(z_t)  # (L, N, D)
            torch.mul(y.transpose(0, 1), gate.transpose(0, 1), out=out)
        else:
            out.copy_(y.transpose(0, 1))
            z_t = gate = y = None
        ctx.save_for_backward(u_t, dt, dt_in if softplus else None, A, B_t, C_t, D, z_t, gate, y, *starts, *kept)
        ctx.chunk, ctx.nchunks, ctx.softplus, ctx.has_bias = T, len(starts), softplus, delta_bias is not None
        return out

    @staticmethod
    def backward(ctx, dout):
        with _no_autocast(dout.device):
            return _SelectiveScan._backward(ctx, dout)

    @staticmethod
    def _backward(ctx, dout):
        u_t, dt, dt_in, A, B_t, C_t, D, z_t, gate, y, *rest = ctx.saved_tensors
        starts, kept = rest[: ctx.nchunks], rest[ctx.nchunks :]
        _length, n, d = u_t.shape
        T = ctx.chunk
        scan, scan_reverse = _scans(u_t.device, n * A.shape[1] * d)
        At = A.t().contiguous()  # (S, D)
        At2 = At * _LOG2_E
        dy = _time_major(dout)  # (L, N, D): first the gradient of out, then of <C, h> + D u
        dz = None
        if z_t is not None:
            dz = torch.ops.aten.silu_backward(dy * y, z_t)  # (L, N, D)
            dy.mul_(gate)
        dD = None if D is None else (dy * u_t).sum((0, 1))  # (D,)
        u_dt = u_t * dt  # (L, N, D)
        du_dt, ddt = torch.empty_like(u_t), torch.empty_like(u_t)
        dB, dC = torch.empty_like(B_t), torch.empty_like(C_t)
        dAt = torch.zeros_like(At)
        carry = None  # a_{t+1} g_{t+1} flowing back from the chunk after this one
        g = tmp = None
        for c in reversed(range(ctx.nchunks)):
            sl = slice(c * T, (c + 1) * T)
            if 2 * c + 1 < len(kept):
                decay, h = kept[2 * c], kept[2 * c + 1]
            else:
                decay, h = _chunk_states(u_dt[sl], dt[sl], At2, B_t[sl], starts[c], scan)
            if g is None or g.shape != h.shape:
                g, tmp = torch.empty_like(h), torch.empty_like(h)  # (T, N, S, D)
            torch.matmul(dy[sl].unsqueeze(-2), h.transpose(-1, -2), out=dC[sl].unsqueeze(-2))  # sum_d h dy
            torch.mul(dy[sl].unsqueeze(2), C_t[sl].unsqueeze(-1), out=g)  # direct gradient of each state
            if carry is not None:
                g[-1].add_(carry)
            scan_reverse(decay, g)  # total gradient of each state
            carry = decay[0] * g[0]
            torch.matmul(B_t[sl].unsqueeze(-2), g, out=du_dt[sl].unsqueeze(-2))
            torch.matmul(u_dt[sl].unsqueeze(-2), g.transpose(-1, -2), out=dB[sl].unsqueeze(-2))
            g[1:].mul_(h[:-1])  # d(decay_t) = g_t h_{t-1}
            g[0].mul_(starts[c])
            g.mul_(decay)  # d(dt_t A) = d(decay_t) decay_t
            torch.sum(torch.mul(g, At, out=tmp), 2, out=ddt[sl])
            dAt.add_(torch.mul(g, dt[sl].unsqueeze(2), out=tmp).sum((0, 1)))
        du = du_dt * dt  # (L, N, D)
        if D is not None:
            du.addcmul_(dy, D)
        ddt.addcmul_(du_dt, u_t)  # (L, N, D): through the decays and through the drive dt u B
        if ctx.softplus:
            ddt = torch.ops.aten.softplus_backward(ddt, dt_in, 1.0, 20.0)
        dbias = ddt.sum((0, 1)) if ctx.has_bias else None
        bld = (lambda x: None if x is None else x.transpose(0, 1))
        return bld(du), bld(ddt), dAt.t(), bld(dB), bld(dC), dD, bld(dz), dbias, None, None


def _ssm_loop(u, dt, A, B, C):
    """Step-by-step SSM: u, dt (N, L, D); A (D, S); B, C (N, L, S) -> y (N, L, D), one small update per token."""
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])  # (N, D, S)
    ys = []
    for t in range(u.shape[1]):
        step = dt[:, t].unsqueeze(-1)  # (N, D, 1)
        h = torch.exp(step * A) * h + step * u[:, t].unsqueeze(-1) * B[:, t].unsqueeze(1)
        ys.append((h * C[:, t].unsqueeze(1)).sum(-1))  # (N, D)
    return torch.stack(ys, dim=1)  # (N, L, D)


def selective_scan_bld(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, *, naive=False):
    """Selective scan in token-major layout: u, delta, z (B, L, D); A (D, N); B, C (B, L, N) -> (B, L, D)."""
    assert A.dim() == 2 and B.dim() == 3 and C.dim() == 3, "A (D, N) and input-dependent B, C (B, L, N) only"
    dtype_in = u.dtype
    with _no_autocast(u.device):
        dtype = torch.promote_types(u.dtype, torch.float32)  # fp32 state, fp64 stays fp64
        u, delta, A, B, C, D, z, delta_bias = (None if t is None else t.to(dtype)
                                               for t in (u, delta, A, B, C, D, z, delta_bias))
        if not naive:
            keep = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                                   for t in (u, delta, A, B, C, D, z, delta_bias))
            return _SelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, keep).to(dtype_in)
        if delta_bias is not None:
            delta = delta + delta_bias
        if delta_softplus:
            delta = F.softplus(delta)
        y = _ssm_loop(u, delta, A, B, C)  # (B, L, D)
        if D is not None:
            y = y + u * D
        if z is not None:
            y = y * F.silu(z)
        return y.to(dtype_in)


def _no_autocast(device: torch.device):
    """Autocast off for the scan's own arithmetic (the meta device has no autocast)."""
    return contextlib.nullcontext() if device.type == "meta" else torch.autocast(device.type, enabled=False)


def _channel_major(fn, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Run a token-major scan on mamba-ssm's channel-major (B, D, L) tensors."""
    t = (lambda x: None if x is None else x.transpose(1, 2))
    return t(fn(t(u), t(delta), A, t(B), t(C), D, t(z), delta_bias, delta_softplus))


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Parallel selective scan: u, delta, z (B, D, L); A (D, N); B, C (B, N, L); D, delta_bias (D,) -> (B, D, L)."""
    return _channel_major(selective_scan_bld, u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def selective_scan_naive(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Step-by-step loop over L (the textbook recurrence), same shapes as `selective_scan_ref`."""
    fn = functools.partial(selective_scan_bld, naive=True)
    return _channel_major(fn, u, delta, A, B, C, D, z, delta_bias, delta_softplus)
