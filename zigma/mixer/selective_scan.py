"""Selective scan (Mamba-1 SSM) in pure PyTorch: a parallel reference and a step-by-step loop.

Both follow `mamba_ssm.selective_scan_fn`'s signature and layout:
u, delta, z: (B, D, L); A: (D, N); B, C: (B, N, L); D, delta_bias: (D,).
    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t         (per channel d, state n)
    y_t = <C_t, h_t> + D * u_t,       out = y * silu(z)

The reference runs the linear recurrence h_t = a_t h_{t-1} + b_t as a work-efficient (Brent-Kung) parallel
scan: log2(L) levels, each a handful of vectorized ops over the whole sequence, with a hand-written backward
(the adjoint is the same recurrence run in reverse). Decays a_t = exp(delta_t * A) are computed from
non-positive exponents only (delta >= 0, A < 0 for every Mamba layer), and the scan only multiplies and
adds them, so nothing can overflow at any length or step size: a decay that underflows to 0 is the
correct limit.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F

__all__ = ["selective_scan_bld", "selective_scan_naive", "selective_scan_ref"]


def _scan(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Inclusive scan h_t = a_t * h_{t-1} + b_t (h_{-1} = 0) along dim 1: a, b (M, L, F) -> h (M, L, F).

    Brent-Kung: fold pairs (2i, 2i+1) into one element, scan the half-length problem straight into the odd
    slots of `out`, then extend to the even slots. `out` may be `b` itself (an in-place scan).
    """
    n = b.shape[1]
    h = torch.empty_like(b) if out is None else out
    if n == 1:
        return h.copy_(b)
    m = n // 2
    a_odd = a[:, 1 : 2 * m : 2]
    h_odd = h[:, 1 : 2 * m : 2]
    torch.addcmul(b[:, 1 : 2 * m : 2], a_odd, b[:, 0 : 2 * m : 2], out=h_odd)  # each pair's own sum
    if m > 1:
        _scan(a_odd * a[:, 0 : 2 * m : 2], h_odd, out=h_odd)
    h[:, 0] = b[:, 0]
    if n > 2:  # even positions 2i (i >= 1) extend the prefix ending at 2i - 1
        torch.addcmul(b[:, 2::2], a[:, 2::2], h[:, 1 : n - 1 : 2], out=h[:, 2::2])
    return h


def _scan_reverse(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Reverse scan g_t = b_t + a_{t+1} * g_{t+1} (g_{L-1} = b_{L-1}) along dim 1 of (M, L, F) tensors."""
    n = b.shape[1]
    g = torch.empty_like(b) if out is None else out
    if n == 1:
        return g.copy_(b)
    m, ne = n // 2, (n + 1) // 2  # full pairs (2i, 2i+1), even positions
    g_even = g[:, 0::2]  # (M, ne, F): each pair folded onto its first element
    torch.addcmul(b[:, 0 : 2 * m : 2], a[:, 1 : 2 * m : 2], b[:, 1 : 2 * m : 2], out=g_even[:, :m])
    if ne > m:
        g_even[:, m] = b[:, n - 1]
    if ne > 1:
        a_even = torch.empty_like(g_even)  # a_even[j] = a_{2j} a_{2j-1} carries pair j into pair j-1; [0] unused
        torch.mul(a[:, 2::2], a[:, 1 : 2 * ne - 1 : 2], out=a_even[:, 1:])
        _scan_reverse(a_even, g_even, out=g_even)
    torch.addcmul(b[:, 1 : 2 * ne - 1 : 2], a[:, 2::2], g_even[:, 1:], out=g[:, 1 : 2 * ne - 1 : 2])
    if ne == m:
        g[:, n - 1] = b[:, n - 1]
    return g


def _chunk_len(n: int, length: int, d: int, s: int, device: torch.device) -> int:
    """Tokens per chunk: one chunk's (N, T, D, S) tensors stay in cache on CPU, bounded in memory on GPU."""
    target = 2**18 if device.type == "cpu" else 2**26  # elements of one (N, T, D, S) tensor
    return max(16, min(length, target // (n * d * s)))


def _chunk_states(u_dt, dt, At, B, start):
    """Decays and states of one chunk, state-major: u_dt, dt (N, T, D); At (S, D); B (N, T, S); start (N, S, D)
    -> decay, h (N, T, S, D). D is the innermost dimension so every broadcast product vectorizes over it."""
    decay = torch.mul(dt.unsqueeze(2), At).exp_()  # exponents <= 0
    h = u_dt.unsqueeze(2) * B.unsqueeze(-1)  # the drive dt u B, scanned in place into the states
    h[:, 0].addcmul_(decay[:, 0], start)  # the state carried in from the previous chunk
    n, t, s, d = h.shape
    _scan(decay.view(n, t, s * d), h.view(n, t, s * d), out=h.view(n, t, s * d))
    return decay, h


def _to_chunks(x: torch.Tensor, T: int) -> torch.Tensor:
    """(N, L, F) -> (L/T, N, T, F), contiguous, zero-padded to whole chunks (dt = 0 carries the state unchanged)."""
    length = x.shape[1]
    nc = -(-length // T)
    if nc * T != length:
        x = torch.nn.functional.pad(x, (0, 0, 0, nc * T - length))
    return x.unflatten(1, (nc, T)).transpose(0, 1).contiguous()  # one copy, whatever the input's layout


def _from_chunks(x: torch.Tensor, length: int) -> torch.Tensor:
    """(L/T, N, T, F) -> (N, L, F)."""
    nc, n, T, f = x.shape
    return x.transpose(0, 1).reshape(n, nc * T, f)[:, :length]


class _SelectiveSSM(torch.autograd.Function):
    """y_t = <C_t, h_t>, h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t, with a hand-written adjoint.

    u, dt (N, L, D); A (D, S); B, C (N, L, S) -> y (N, L, D). The sequence runs in chunks whose (N, T, S, D)
    decays and states are never stored: only each chunk's starting state is saved, and backward recomputes
    a chunk's states from it before running the adjoint scan over that chunk.
    """

    @staticmethod
    def forward(ctx, u, dt, A, B, C):
        n, length, d = u.shape
        T = _chunk_len(n, length, d, A.shape[1], u.device)
        At = A.t().contiguous()  # (S, D)
        u_dt, dt_c, B_c, C_c = (_to_chunks(x, T) for x in (u * dt, dt, B, C))  # (nc, N, T, .)
        y = torch.empty_like(u_dt)
        starts = u.new_zeros(u_dt.shape[0], n, A.shape[1], d)  # state entering each chunk
        for c in range(u_dt.shape[0]):
            _, h = _chunk_states(u_dt[c], dt_c[c], At, B_c[c], starts[c])
            torch.matmul(C_c[c].unsqueeze(-2), h, out=y[c].unsqueeze(-2))  # y_t = sum_s C_t[s] h_t[s]
            if c + 1 < starts.shape[0]:
                starts[c + 1] = h[:, -1]
        ctx.save_for_backward(u, dt, A, B, C, starts)
        ctx.chunk = T
        return _from_chunks(y, length)

    @staticmethod
    def backward(ctx, dy):
        with _no_autocast(dy.device):
            return _SelectiveSSM._backward(ctx, dy)

    @staticmethod
    def _backward(ctx, dy):
        u, dt, A, B, C, starts = ctx.saved_tensors
        n, length, d = u.shape
        T = ctx.chunk
        At = A.t().contiguous()  # (S, D)
        u_dt, dt_c, B_c, C_c, dy_c = (_to_chunks(x, T) for x in (u * dt, dt, B, C, dy))  # (nc, N, T, .)
        du_dt, ddt, dB, dC = (torch.empty_like(x) for x in (u_dt, u_dt, B_c, C_c))
        dAt = torch.zeros_like(At)
        carry = None  # a_{t+1} g_{t+1} flowing back from the chunk after this one
        for c in reversed(range(u_dt.shape[0])):
            decay, h = _chunk_states(u_dt[c], dt_c[c], At, B_c[c], starts[c])
            torch.matmul(h, dy_c[c].unsqueeze(-1), out=dC[c].unsqueeze(-1))
            g = dy_c[c].unsqueeze(2) * C_c[c].unsqueeze(-1)  # direct gradient of each state
            if carry is not None:
                g[:, -1].add_(carry)
            flat = (n, T, d * A.shape[1])
            _scan_reverse(decay.view(flat), g.view(flat), out=g.view(flat))  # total gradient of each state
            carry = decay[:, 0] * g[:, 0]
            torch.matmul(B_c[c].unsqueeze(-2), g, out=du_dt[c].unsqueeze(-2))
            torch.matmul(g, u_dt[c].unsqueeze(-1), out=dB[c].unsqueeze(-1))
            g[:, 1:].mul_(h[:, :-1])  # d(decay_t) = g_t h_{t-1}
            g[:, 0].mul_(starts[c])
            g.mul_(decay)  # d(dt_t A) = d(decay_t) decay_t
            torch.sum(g * At, dim=2, out=ddt[c])
            dAt.add_(g.mul_(dt_c[c].unsqueeze(2)).sum((0, 1)))
        du_dt, ddt, dB, dC = (_from_chunks(x, length) for x in (du_dt, ddt, dB, dC))
        return du_dt * dt, ddt.addcmul_(du_dt, u), dAt.t(), dB, dC


def _ssm(u, dt, A, B, C):
    """Parallel SSM: u, dt (N, L, D); A (D, S); B, C (N, L, S) -> y (N, L, D) with y_t = <C_t, h_t>."""
    return _SelectiveSSM.apply(u, dt, A, B, C)


def _ssm_loop(u, dt, A, B, C):
    """Step-by-step SSM, same shapes as `_ssm`: one small update per token."""
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
        u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
        if delta_bias is not None:
            delta = delta + delta_bias.to(dtype)
        if delta_softplus:
            delta = F.softplus(delta)
        y = (_ssm_loop if naive else _ssm)(u, delta, A, B, C)  # (B, L, D)
        if D is not None:
            y = y + u * D.to(dtype)
        if z is not None:
            y = y * F.silu(z.to(dtype))
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
