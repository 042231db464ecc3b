"""Multi-direction Mamba-1 layers on the fused kernels run each direction through mamba_inner_fn on one shared
in_proj output (`fused.mamba_directions_forward`). On a CPU, mamba_inner_fn is stood in for by a transcription of
mamba-ssm's documented reference (`mamba_inner_ref`: conv + SiLU, x_proj, dt_proj, selective scan, out_proj); the
oracle is the reference backend's own multi-direction path (token-major reversal / gather, summed, then out_proj).
The GPU run of the real kernels is in test_mixer.py (fused vs reference, fp32)."""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from tests.zigma.test_mixer import grads_of
from zigma.mixer import MambaMixer, fused, selective_scan_ref


def inner_ref(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight, out_proj_bias,
              A, B=None, C=None, D=None, delta_bias=None, delta_softplus=True):
    """mamba-ssm's mamba_inner_ref, transcribed: xz (B, 2E, L) channel-major -> (B, L, D)."""
    length, rank, n = xz.shape[-1], delta_proj_weight.shape[1], A.shape[-1]
    x, z = xz.chunk(2, dim=1)
    width = conv1d_weight.shape[-1]
    x = F.silu(F.conv1d(x, conv1d_weight, conv1d_bias, padding=width - 1, groups=x.shape[1])[..., :length])
    x_dbl = F.linear(rearrange(x, "b d l -> (b l) d"), x_proj_weight)
    delta = rearrange(delta_proj_weight @ x_dbl[:, :rank].t(), "d (b l) -> b d l", l=length)
    B = rearrange(x_dbl[:, rank:rank + n], "(b l) n -> b n l", l=length)
    C = rearrange(x_dbl[:, -n:], "(b l) n -> b n l", l=length)
    y = selective_scan_ref(x, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)
    return F.linear(rearrange(y, "b d l -> b l d"), out_proj_weight, out_proj_bias)


@pytest.fixture
def calls(monkeypatch):
    """The fused kernels stood in for on CPU; returns the list of mamba_inner_fn calls (one per direction)."""
    seen = []

    def inner(*args, **kw):
        seen.append(args[6])  # out_proj_bias
        return inner_ref(*args, **kw)

    kernels = {"mamba_inner_fn": inner, "selective_scan_fn": selective_scan_ref, "causal_conv1d_fn": None}
    monkeypatch.setattr(fused, "_import", lambda: (kernels, ""))
    return seen


def _pair(num_directions, combine, bias):
    torch.manual_seed(0)
    ref = MambaMixer(24, d_state=6, num_directions=num_directions, combine=combine, bias=bias,
                     backend="reference").double()
    with torch.no_grad():  # nonzero biases so that adding the bias once (not once a direction) is checked
        for p in ref.parameters():
            if p.dim() == 1:
                p.add_(torch.rand_like(p))
    fast = MambaMixer(24, d_state=6, num_directions=num_directions, combine=combine, bias=bias,
                      backend="reference").double()
    fast.load_state_dict(ref.state_dict())
    fast.backend_used = lambda x: "fused"  # a CPU tensor on the stand-in kernels
    return ref, fast


def same_function(ref, fast, *, length, width, gathered, rtol_out, rtol_grad):
    """Outputs and every gradient of `fast` against `ref` on one input, directions k >= 2 (if any) a gathered
    order and direction 1 the reversed sequence; rtol_grad(name) -> the tolerance of that parameter's gradient."""
    num_directions = ref.num_directions
    order = torch.randperm(length, generator=torch.Generator().manual_seed(1))
    branch = [None] + [order] * (num_directions - 2) if gathered else None
    x = torch.randn(2, length, width, dtype=torch.float64)
    out_r, g_r = grads_of(ref, x, branch_index=branch)
    out_f, g_f = grads_of(fast, x, branch_index=branch)
    torch.testing.assert_close(out_f, out_r, rtol=rtol_out, atol=1e-10)
    assert g_f.keys() == g_r.keys()
    for name, g in g_f.items():
        torch.testing.assert_close(g, g_r[name], rtol=rtol_grad(name), atol=1e-10, msg=name)


@pytest.mark.parametrize(("num_directions", "gathered", "combine", "bias"),
                         [(2, False, "sum", False), (2, False, "mean", True), (3, True, "sum", True),
                          (3, True, "mean", False)])
def test_directions_through_mamba_inner_fn_equal_the_reference_path(calls, num_directions, gathered, combine, bias):
    ref, fast = _pair(num_directions, combine, bias)
    same_function(ref, fast, length=29, width=24, gathered=gathered, rtol_out=1e-9, rtol_grad=lambda name: 1e-8)
    assert len(calls) == num_directions and all(b is None for b in calls)  # every direction fused, bias added once


def test_segmented_multi_direction_layers_keep_the_branch_path(calls):
    """segments > 1 (video layers) still run the token-major branch path: no mamba_inner_fn call."""
    ref, fast = _pair(2, "sum", False)
    fast.segment_layout = "batch"
    x = torch.randn(2, 24, 24, dtype=torch.float64)
    torch.testing.assert_close(fast(x, segments=3), ref(x, segments=3), rtol=1e-9, atol=1e-10)
    assert calls == []


def test_the_benchmarks_before_path_is_the_token_major_branch_path(calls):
    """benchmarks/directions.py times `old_path` as the path two-direction layers took before: the same function."""
    from benchmarks.directions import old_path

    ref, fast = _pair(2, "sum", True)
    x = torch.randn(2, 21, 24, dtype=torch.float64)
    torch.testing.assert_close(old_path(fast, x), ref(x), rtol=1e-9, atol=1e-10)
    assert calls == []  # no mamba_inner_fn: the branch path


def test_the_benchmarks_table_shows_each_path_and_the_ratios_and_a_cut_mixers_error():
    from benchmarks.directions import markdown

    doc = {"device": "GPU", "args": {"batch": 2, "tokens": 8, "d_model": 4, "reps": 3},
           "rows": {"mamba1: one direction": {"ms": 1.0, "peak_gib": 0.5},
                    "mamba1: two directions, now": {"ms": 1.5, "peak_gib": 0.75},
                    "mamba1: two directions, before": {"ms": 3.0, "peak_gib": 1.25},
                    "mamba2: one direction": {"ms": 0.8, "peak_gib": 0.25}},
           "mamba1": {"before_over_now": 2.0, "now_over_one": 1.5, "before_over_one": 3.0, "grads_max_rel_err": 0.004},
           "mamba2_error": "OutOfMemoryError: CUDA out of memory"}
    text = markdown(doc)
    assert "| mamba1: two directions, before | 3.000 | 1.25 |" in text
    assert "mamba1: before / now 2.00x; two directions now / one 1.50x (before: 3.00x)" in text
    assert "relative L2 error of 4.0e-03" in text
    assert "| mamba2: one direction | 0.800 | 0.25 |" in text and "mamba2: before / now" not in text
    assert "mamba2: not finished: OutOfMemoryError: CUDA out of memory" in text
