"""Optional fused kernels (mamba-ssm + causal-conv1d; flash-linear-attention for Mamba-2's SSD on request):
imported quietly, selected loudly."""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from zigma.scans.base import inverse as _inverse
from zigma.scans.base import permute_tokens as _permute

__all__ = ["FLA_INSTALL_HINT", "GLA_CHUNK", "INSTALL_HINT", "FusedUnavailableError", "causal_conv_silu",
           "fused_available", "fused_kernels", "gla_available", "gla_kernel", "gla_refusal", "gla_scan",
           "mamba2_directions_forward", "mamba2_forward", "mamba_directions_forward", "mamba_forward", "ssd_as_gla",
           "ssd_available", "ssd_kernels", "ssd_scan", "ssm_branch"]

INSTALL_HINT = "pip install 'zigma-harness[cuda]'"
FLA_INSTALL_HINT = "pip install 'zigma-harness[fla]'"
GLA_CHUNK = 64  # the chunk length of fla's chunk_simple_gla (its default); Mamba2Mixer.chunk_size is mamba-ssm's


class FusedUnavailableError(RuntimeError):
    """backend='fused' was asked for where mamba-ssm / causal-conv1d cannot be imported (or ssd='fla' where
    flash-linear-attention cannot)."""


@functools.cache
def _import() -> tuple[dict | None, str]:
    """Try the imports once: ({name: kernel}, '') or (None, why). causal-conv1d is optional: without it the
    short causal convolution runs as a grouped torch conv1d and the selective scan still uses mamba-ssm's kernel."""
    try:
        from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn, selective_scan_fn
    except (ImportError, OSError) as err:  # OSError: a CUDA build whose shared libraries do not load
        return None, f"{type(err).__name__}: {err}"
    try:
        from causal_conv1d import causal_conv1d_fn
    except (ImportError, OSError):
        causal_conv1d_fn = None
    kernels = {"mamba_inner_fn": mamba_inner_fn if causal_conv1d_fn is not None else None,
               "selective_scan_fn": selective_scan_fn, "causal_conv1d_fn": causal_conv1d_fn}
    return kernels, ""


def fused_available() -> bool:
    """Whether mamba-ssm's selective-scan kernel is importable here (causal-conv1d is used when present too)."""
    return _import()[0] is not None


def fused_kernels() -> dict:
    """{'mamba_inner_fn', 'selective_scan_fn', 'causal_conv1d_fn'}, or FusedUnavailableError naming the fix."""
    kernels, why = _import()
    if kernels is None:
        raise FusedUnavailableError(
            "mixer backend 'fused' needs the package mamba-ssm (CUDA build; causal-conv1d too for the fully fused "
            f"layer), which cannot be imported here ({why}). Install both with `{INSTALL_HINT}` (needs a CUDA toolchain), "
            "or use backend 'reference' (pure PyTorch, any device) or 'auto'."
        )
    return kernels


def mamba_forward(mixer, x):
    """One direction, fully fused (mamba_inner_fn), exactly as mamba_ssm.Mamba: x (B, L, D) -> (B, L, D)."""
    kernels = fused_kernels()
    if kernels["mamba_inner_fn"] is None:  # no causal-conv1d: torch conv + mamba-ssm's selective scan
        y = ssm_branch(mixer.in_proj(x), mixer.conv1d, mixer.x_proj, mixer.dt_proj, mixer.A_log, mixer.D)
        return mixer.out_proj(y)  # (B, L, D)
    return _inner(kernels, mixer, _in_proj_channels(mixer, x), 0, mixer.out_proj.bias)  # (B, L, D)


def mamba_directions_forward(mixer, x, orders, combine):
    """K >= 2 directions, each fully fused (mamba_inner_fn) on one shared in_proj output: x (B, L, D) in direction
    0's order -> (B, L, D) in that order, the same function as `over_directions` with `ssm_branch` and out_proj.

    in_proj runs once, channel-major as mamba_inner_fn wants it; direction k's copy is reversed (orders[k - 1]
    None) or gathered along the sequence; each direction applies out_proj itself (no bias: out_proj is linear, so
    the sum of the directions' projections is the projection of their sum; the bias is added once at the end).
    Against the token-major path this saves each direction's transposes and the reversal of its d_inner-wide output
    (the output reversed back is d_model wide), at the cost of one more out_proj GEMM a direction (the profile of a
    two-direction ZigMa-B step: benchmarks/results/profile_step_sweep2_h100.md). mamba_inner_fn also recomputes the
    convolution and dt in its backward instead of keeping them. Needs mamba_inner_fn (mamba-ssm + causal-conv1d)."""
    kernels = fused_kernels()
    xz = _in_proj_channels(mixer, x)  # (B, 2 * d_inner, L): the sequence in the last dimension
    out = _summed_directions(xz, orders, -1, lambda u, k: _inner(kernels, mixer, u, k, None))  # (B, L, D)
    if combine == "mean":
        out = out / (len(orders) + 1)
    bias = mixer.out_proj.bias
    return out if bias is None else out + bias.to(dtype=out.dtype)  # (B, L, D)


def _summed_directions(u, orders, dim, run):
    """sum over directions k of run(u in direction k's order, k), each result (B, L, ...) put back in order 0; u's
    sequence is its dimension `dim`. orders[k - 1]: a gather index, or None for the reversed sequence."""
    out = None
    for k in range(len(orders) + 1):
        idx = orders[k - 1] if k else None
        inv = None if idx is None else _inverse(idx)
        u_k = u if k == 0 else u.flip(dim) if idx is None else _permute(u, idx, inv, dim=dim)
        y = run(u_k, k)  # (B, L, ...) in direction k's order
        if k:
            y = y.flip(1) if idx is None else _permute(y, inv, idx)  # back to order 0
        out = y if out is None else out + y
    return out


def _in_proj_channels(mixer, x):
    """in_proj(x) channel-major, (B, L, D) -> (B, 2 * d_inner, L) (a view of one GEMM's output, as mamba_ssm.Mamba)."""
    length = x.shape[1]
    xz = rearrange(mixer.in_proj.weight @ rearrange(x, "b l d -> d (b l)"), "d (b l) -> b d l", l=length)
    if mixer.in_proj.bias is not None:
        xz = xz + rearrange(mixer.in_proj.bias.to(dtype=xz.dtype), "d -> d 1")
    return xz


def _inner(kernels, mixer, xz, k, out_bias):
    """mamba_inner_fn with direction k's parameters: xz (B, 2 * d_inner, L) -> out_proj(y) (B, L, D)."""
    conv1d, x_proj, dt_proj, A_log, D = mixer.direction_parameters(k)
    return kernels["mamba_inner_fn"](
        xz, conv1d.weight, conv1d.bias, x_proj.weight, dt_proj.weight, mixer.out_proj.weight, out_bias,
        -torch.exp(A_log.float()), None, None, D.float(), delta_bias=dt_proj.bias.float(), delta_softplus=True,
    )


def ssm_branch(xz, conv1d, x_proj, dt_proj, A_log, D, *, packing=None):
    """One direction with causal_conv1d_fn + selective_scan_fn: xz (B, L, 2 * d_inner) -> (B, L, d_inner).

    packing: a `SegmentPacking`: xz's segments then run as one packed row a sample (see zigma/mixer/segments.py)."""
    kernels = fused_kernels()
    if packing is not None:
        xz = packing.pack(xz)  # (B, L', 2 * d_inner), L' = S * (P + T)
    length = xz.shape[1]
    x, z = rearrange(xz, "b l d -> b d l").chunk(2, dim=1)  # (B, d_inner, L) each
    if kernels["causal_conv1d_fn"] is not None:
        x = kernels["causal_conv1d_fn"](x.contiguous(), rearrange(conv1d.weight, "d 1 w -> d w"), conv1d.bias,
                                        activation="silu")  # (B, d_inner, L)
    else:
        width = conv1d.weight.shape[-1]
        x = F.silu(F.conv1d(x, conv1d.weight, conv1d.bias, padding=width - 1, groups=x.shape[1])[..., :length])
    if packing is not None:
        x = packing.zero_separators(x, channels_last=False)  # u = 0 there, so B = C = 0 there too
    d_state = A_log.shape[1]
    A = -torch.exp(A_log.float())  # (d_inner, d_state)
    x_dbl = F.linear(rearrange(x, "b d l -> (b l) d"), x_proj.weight)  # (B*L, dt_rank + 2 * d_state)
    dt, B, C = torch.split(x_dbl, [dt_proj.in_features, d_state, d_state], dim=-1)
    dt = rearrange(dt_proj.weight @ dt.t(), "d (b l) -> b d l", l=length)
    B = rearrange(B, "(b l) n -> b n l", l=length).contiguous()
    C = rearrange(C, "(b l) n -> b n l", l=length).contiguous()
    if packing is not None:
        dt = packing.reset_steps(dt, A, dt_proj.bias, channels_last=False)  # (B, d_inner, L)
        if dt.dtype != x.dtype:  # fp16: the reset step needs fp32's range, and the kernel one dtype for all
            x, z, B, C = (t.to(dt.dtype) for t in (x, z, B, C))
    y = kernels["selective_scan_fn"](x, dt, A, B, C, D.float(), z=z,
                                     delta_bias=dt_proj.bias.float(), delta_softplus=True)  # (B, d_inner, L)
    y = rearrange(y, "b d l -> b l d")
    return y if packing is None else packing.unpack(y).to(xz.dtype)  # (B, L, d_inner) real tokens


# ---- Mamba-2 (SSD): mamba-ssm's Triton kernels ------------------------------------------------------------------


@functools.cache
def _import_ssd() -> tuple[dict | None, str]:
    """Try once: ({name: kernel}, '') or (None, why). The fully fused layer needs causal-conv1d too."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import (
            mamba_chunk_scan_combined,
            mamba_split_conv1d_scan_combined,
        )
    except (ImportError, OSError) as err:  # OSError: a CUDA build whose shared libraries do not load
        return None, f"{type(err).__name__}: {err}"
    conv = _import()[0]
    causal = conv["causal_conv1d_fn"] if conv is not None else None
    return {"chunk_scan": mamba_chunk_scan_combined, "causal_conv1d_fn": causal,
            "split_conv1d_scan": mamba_split_conv1d_scan_combined if causal is not None else None}, ""


def ssd_available() -> bool:
    """Whether mamba-ssm's Triton SSD kernels are importable here."""
    return _import_ssd()[0] is not None


def ssd_kernels() -> dict:
    """{'chunk_scan', 'split_conv1d_scan', 'causal_conv1d_fn'}, or FusedUnavailableError naming the fix."""
    kernels, why = _import_ssd()
    if kernels is None:
        raise FusedUnavailableError(
            "mixer 'mamba2' backend 'fused' needs mamba-ssm's Triton SSD kernels (mamba_ssm.ops.triton.ssd_combined; "
            f"causal-conv1d too for the fully fused layer), which cannot be imported here ({why}). Install them with "
            f"`{INSTALL_HINT}` (needs a CUDA toolchain), or use backend 'reference' (pure PyTorch) or 'auto'."
        )
    return kernels


def ssd_scan(x, dt, A, B, C, *, chunk_size, D, dt_bias, dt_softplus=True):
    """mamba_chunk_scan_combined: x (B, L, H, P), dt (B, L, H), B/C (B, L, G, N) -> (B, L, H, P)."""
    return ssd_kernels()["chunk_scan"](x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=dt_softplus)


@functools.cache
def _import_causal_conv1d():
    """causal-conv1d's causal_conv1d_fn, or None (a grouped torch conv1d then runs instead)."""
    try:
        from causal_conv1d import causal_conv1d_fn
    except (ImportError, OSError):
        return None
    return causal_conv1d_fn


def causal_conv_silu(x, conv1d):
    """silu(causal depthwise conv1d) token-major: (B, L, C) -> (B, L, C); causal_conv1d_fn when present."""
    fn = _import_causal_conv1d()
    weight = rearrange(conv1d.weight, "d 1 w -> d w")
    if fn is None:
        width, length = weight.shape[-1], x.shape[1]
        out = F.conv1d(x.transpose(1, 2), conv1d.weight, conv1d.bias, padding=width - 1, groups=x.shape[-1])
        return F.silu(out[..., :length]).transpose(1, 2)
    return fn(x.transpose(1, 2), weight, conv1d.bias, activation="silu").transpose(1, 2)


def mamba2_forward(mixer, x):
    """One direction, fully fused, exactly as mamba_ssm.Mamba2's mem-efficient path: x (B, L, D) -> (B, L, D)."""
    kernels = ssd_kernels()
    if kernels["split_conv1d_scan"] is None:  # no causal-conv1d: torch conv + the Triton SSD, norm in torch
        z, xbcdt = mixer.in_proj(x).split([mixer.d_inner, mixer.in_proj.out_features - mixer.d_inner], dim=-1)
        return mixer.out_proj(mixer.norm(mixer._ssm(xbcdt, 0, True), z))
    return kernels["split_conv1d_scan"](
        mixer.in_proj(x), rearrange(mixer.conv1d.weight, "d 1 w -> d w"), mixer.conv1d.bias, mixer.dt_bias,
        -torch.exp(mixer.A_log.float()), D=mixer.D, chunk_size=mixer.chunk_size, activation="silu",
        rmsnorm_weight=mixer.norm.weight, rmsnorm_eps=mixer.norm.eps, outproj_weight=mixer.out_proj.weight,
        outproj_bias=mixer.out_proj.bias, headdim=mixer.headdim, ngroups=mixer.ngroups, norm_before_gate=False,
    )  # (B, L, D)


def mamba2_directions_forward(mixer, x, orders, combine):
    """K >= 2 directions of a Mamba2Mixer, each through mamba-ssm's split conv + SSD kernel (its memory-efficient
    layer: keeps its input and recomputes the convolution in the backward) with the gate and without the norm:
    x (B, L, D) in direction 0's order -> (B, L, D), the same function as `over_directions` with `Mamba2Mixer._ssm`.

    The kernel returns y_k * silu(z_k) in direction k's order (z_k: z in that order); back in order 0 the gate is
    z's for every direction, so their sum is (sum_k y_k) * silu(z): the gated input of the shared norm, applied once
    in torch, then out_proj. Needs the split kernel (mamba-ssm + causal-conv1d)."""
    split = ssd_kernels()["split_conv1d_scan"]

    def run(u, k):  # (B, L, E): y_k * silu(z_k) in direction k's order
        conv1d, dt_bias, A_log, D = mixer.direction_parameters(k)
        return split(u, rearrange(conv1d.weight, "d 1 w -> d w"), conv1d.bias, dt_bias, -torch.exp(A_log.float()),
                     D=D, chunk_size=mixer.chunk_size, activation="silu", headdim=mixer.headdim, ngroups=mixer.ngroups)

    # in_proj's output (B, L, 2E + 2GN + H) token-major, as the kernel wants it
    gated = _summed_directions(mixer.in_proj(x), orders, 1, run)  # (B, L, E)
    if combine == "mean":
        gated = gated / (len(orders) + 1)
    return mixer.out_proj(mixer.norm(gated, None))  # (B, L, D)


# ---- Mamba-2's SSD as scalar-gated linear attention: flash-linear-attention's Triton kernels (ssd 'fla') ----------


@functools.cache
def _import_gla() -> tuple[object | None, str]:
    """Try once: (fla's chunk_simple_gla, '') or (None, why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fla warns at import where Triton sees no GPU
            from fla.ops.simple_gla import chunk_simple_gla
    except (ImportError, OSError) as err:
        return None, f"{type(err).__name__}: {err}"
    return chunk_simple_gla, ""


def gla_available() -> bool:
    """Whether flash-linear-attention's chunk_simple_gla is importable here (package fla-core)."""
    return _import_gla()[0] is not None


def gla_kernel():
    """fla's chunk_simple_gla, or FusedUnavailableError naming the package and the install command."""
    kernel, why = _import_gla()
    if kernel is None:
        raise FusedUnavailableError(
            "mixer 'mamba2' option ssd 'fla' needs flash-linear-attention's Triton kernels (the package fla-core, "
            f"module fla.ops.simple_gla), which cannot be imported here ({why}). Install it with "
            f"`{FLA_INSTALL_HINT}` (fla-core 0.6, pure Python + Triton), or use ssd 'mamba-ssm' (the default)."
        )
    return kernel


def ssd_as_gla(x, dt, A, B, C, *, D, dt_bias, gla):
    """Mamba-2's SSD through a simple-GLA kernel `gla(q, k, v, g, scale=) -> (o, final_state)`: x (B, L, H, P),
    dt (B, L, H) before dt_bias and softplus, A (H,), B/C (B, L, G, N) -> y (B, L, H, P), D skip included.

    h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t^T, y_t = C_t^T h_t + D x_t is simple GLA's S_t = exp(g_t) S_{t-1} +
    k_t v_t^T, o_t = scale q_t^T S_t with q = C, k = B (head h reading group h // (H / G)), v = dt x,
    g = dt A in fp32 and scale 1; dt, g and the D skip are computed here in PyTorch, so autograd reaches them."""
    heads, groups = x.shape[2], B.shape[2]
    work = torch.promote_types(x.dtype, torch.float32)
    dt = F.softplus(dt.to(work) + dt_bias.to(work))  # (B, L, H)
    g = dt * A.to(work)  # (B, L, H): the log decay, <= 0
    v = (x.to(work) * dt[..., None]).to(x.dtype)  # (B, L, H, P)
    q, k = (repeat(t.to(x.dtype), "b l g n -> b l (g r) n", r=heads // groups) for t in (C, B))  # (B, L, H, N)
    o, _ = gla(q, k, v, g, scale=1.0)  # (B, L, H, P)
    return (o.to(work) + x.to(work) * D.to(work)[:, None]).to(x.dtype)  # (B, L, H, P)


def _triton_version() -> tuple[int, ...] | None:
    """The installed Triton's version as numbers (None without Triton)."""
    import importlib.metadata

    try:
        text = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(part) for part in text.split("+")[0].split(".")[:3] if part.isdigit())


def _has_tilelang() -> bool:
    import importlib.util

    return importlib.util.find_spec("tilelang") is not None


@functools.cache
def gla_refusal(device: torch.device) -> str | None:
    """Why fla-core refuses to train on `device`, or None. fla-core 0.6 raises in the backward of its gated kernels
    on Hopper GPUs (compute capability 9.x) under Triton >= 3.4.0 and < 3.7.1, which computes them wrong there
    (flash-linear-attention issue #640), unless tilelang is installed; found at the first backward otherwise."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] != 9:
        return None
    version = _triton_version()
    if version is None or not (3, 4, 0) <= version < (3, 7, 1) or _has_tilelang():
        return None
    return (f"mixer 'mamba2' option ssd 'fla': fla-core refuses to train on this Hopper GPU "
            f"({torch.cuda.get_device_name(device)}) with Triton {'.'.join(map(str, version))}, whose gated "
            "backward is wrong there (flash-linear-attention issue #640). Use Triton >= 3.7.1 or install tilelang "
            "(`pip install tilelang`), or use ssd 'mamba-ssm' (the default).")


def gla_scan(x, dt, A, B, C, *, D, dt_bias):
    """ssd_as_gla with fla's chunk_simple_gla: the same layout and result as ssd_scan (FusedUnavailableError
    without fla-core, or where fla-core refuses to train: `gla_refusal`)."""
    why = gla_refusal(x.device)
    if why is not None:
        raise FusedUnavailableError(why)
    return ssd_as_gla(x, dt, A, B, C, D=D, dt_bias=dt_bias, gla=gla_kernel())
