"""MambaMixer: mamba_ssm's parameters and init, the reference path against the loop, directions, segments."""

import math

import pytest
import torch

import zigma.mixer.mamba as mamba_module
from zigma.mixer import FusedUnavailableError, MambaMixer, fused_available
from zigma.mixer.selective_scan import selective_scan_bld

MAMBA_SHAPES = {  # mamba_ssm.Mamba(d_model=32) state dict: names and shapes
    "A_log": (64, 16), "D": (64,), "in_proj.weight": (128, 32), "conv1d.weight": (64, 1, 4), "conv1d.bias": (64,),
    "x_proj.weight": (34, 64), "dt_proj.weight": (64, 2), "dt_proj.bias": (64,), "out_proj.weight": (32, 64),
}


def rel_err(a, b):
    """max |a - b| / max |b| (b the reference)."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def loop_scan(*args, **kwargs):
    """The step-by-step loop, swapped into the mixer's reference path."""
    return selective_scan_bld(*args, **kwargs, naive=True)


def grads_of(mixer, x, *, fn=None, **kw):
    """Output, input gradient and every parameter gradient of sum(out * w) for a fixed w; fn(x) in place of
    mixer(x, **kw) computes the output some other way from the same parameters."""
    x = x.detach().requires_grad_()
    out = fn(x) if fn is not None else mixer(x, **kw)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(out)
    names, params = zip(*mixer.named_parameters())
    grads = torch.autograd.grad((out * w).sum(), (x, *params))
    return out, dict(zip(("x", *names), grads))


def test_parameter_names_and_shapes_are_mamba_ssm_s():
    mixer = MambaMixer(32)
    assert {k: tuple(v.shape) for k, v in mixer.state_dict().items()} == MAMBA_SHAPES


def test_initialisation_follows_mamba_ssm():
    mixer = MambaMixer(48, d_state=8, dt_min=1e-3, dt_max=0.1)
    assert mixer.dt_rank == 3 and mixer.A_log.dtype == torch.float32 and mixer.D.dtype == torch.float32
    torch.testing.assert_close(mixer.A_log, torch.log(torch.arange(1, 9.0)).expand(96, 8))
    torch.testing.assert_close(mixer.D, torch.ones(96))
    dt = torch.nn.functional.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert mixer.dt_proj.weight.abs().max() <= 3**-0.5
    assert mixer.dt_proj.bias._no_reinit and mixer.A_log._no_weight_decay and mixer.D._no_weight_decay


def test_same_global_seed_gives_the_same_weights_and_the_mixer_does_not_seed():
    torch.manual_seed(7)
    a = MambaMixer(16, num_directions=2)
    b = MambaMixer(16, num_directions=2)  # the global stream moved on: different weights
    torch.manual_seed(7)
    c = MambaMixer(16, num_directions=2)
    assert not torch.equal(a.in_proj.weight, b.in_proj.weight)
    for k, v in a.state_dict().items():
        assert torch.equal(v, c.state_dict()[k]), k


def test_an_explicit_generator_alone_decides_the_weights():
    make = lambda seed: MambaMixer(16, num_directions=2, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(1)
    a = make(5)
    torch.manual_seed(2)
    b, c = make(5), make(6)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(a.x_proj_b.weight, c.x_proj_b.weight)
    dt = torch.nn.functional.softplus(a.dt_proj_b.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)


def test_bidirectional_and_parallel_parameters_use_vim_names_then_p_k():
    names = set(MambaMixer(16, num_directions=4).state_dict())
    for sfx, a_name in (("_b", "A_b_log"), ("_p2", "A_p2_log"), ("_p3", "A_p3_log")):
        assert {f"conv1d{sfx}.weight", f"x_proj{sfx}.weight", f"dt_proj{sfx}.bias", a_name, f"D{sfx}"} <= names
    assert "in_proj_b.weight" not in names and "out_proj_b.weight" not in names


def _fp64_mixer(d_model: int, d_state: int, bias: bool) -> MambaMixer:
    torch.manual_seed(0)
    mixer = MambaMixer(d_model, d_state=d_state, bias=bias, backend="reference", dtype=torch.float64)
    with torch.no_grad():
        mixer.dt_proj.bias.add_(1.0)  # larger steps than at init, so decay matters
    return mixer


@pytest.mark.parametrize("batch,d_model,d_state,length,bias", [(1, 8, 4, 5, False), (2, 12, 16, 37, True),
                                                               (3, 16, 8, 64, False)])
def test_reference_mixer_matches_the_loop_on_outputs_and_all_gradients(monkeypatch, batch, d_model, d_state,
                                                                       length, bias):
    mixer = _fp64_mixer(d_model, d_state, bias)
    x = torch.randn(batch, length, d_model, dtype=torch.float64)
    out, grads = grads_of(mixer, x)
    monkeypatch.setattr(mamba_module, "_reference_scan", loop_scan)
    out_loop, grads_loop = grads_of(mixer, x)
    assert rel_err(out, out_loop) < 1e-6
    for name, g in grads.items():
        assert rel_err(g, grads_loop[name]) < 1e-6, name
    single = MambaMixer(d_model, d_state=d_state, bias=bias, backend="reference")
    single.load_state_dict(mixer.state_dict())
    monkeypatch.setattr(mamba_module, "_reference_scan", selective_scan_bld)
    out32, grads32 = grads_of(single, x.float())
    assert rel_err(out32, out_loop) < 1e-4
    for name, g in grads32.items():
        assert rel_err(g, grads_loop[name]) < 1e-4, name


def mamba1_oracle(m: MambaMixer, u: torch.Tensor) -> torch.Tensor:
    """One-direction Mamba-1 block written out from the paper (Gu & Dao 2023, Alg. 2 and Sec. 3.4) and the layout of
    mamba_ssm's `Mamba` (in_proj -> x, z; depthwise causal conv + SiLU on x; x_proj -> dt, B, C; dt_proj +
    softplus; the selective recurrence step by step; + D x; gate by SiLU(z); out_proj), with none of the mixer's
    own helpers: plain tensor ops on its weights, one time step at a time."""
    W = lambda lin, v: v @ lin.weight.T + (lin.bias if lin.bias is not None else 0)
    E, N, R, K = m.d_inner, m.d_state, m.dt_rank, m.d_conv
    xz = W(m.in_proj, u)                                                    # (B, L, 2E)
    x, z = xz[..., :E], xz[..., E:]
    L = u.shape[1]
    conv = torch.zeros_like(x)
    for t in range(L):                                                      # causal: taps on x[t-K+1 .. t]
        for k in range(K):
            if t - (K - 1 - k) >= 0:
                conv[:, t] = conv[:, t] + m.conv1d.weight[:, 0, k] * x[:, t - (K - 1 - k)]
    if m.conv1d.bias is not None:
        conv = conv + m.conv1d.bias
    x = conv * torch.sigmoid(conv)                                          # SiLU
    dbc = W(m.x_proj, x)
    dt, Bm, Cm = dbc[..., :R], dbc[..., R:R + N], dbc[..., R + N:]
    # mamba_ssm keeps A_log, D and the dt bias in fp32 (its selective_scan_fn casts them with .float()), so they
    # enter in fp32 here too, whatever u's dtype
    delta = torch.log1p(torch.exp(dt @ m.dt_proj.weight.T + m.dt_proj.bias.float()))   # softplus, (B, L, E)
    A = -torch.exp(m.A_log.float())                                         # (E, N)
    h = torch.zeros(u.shape[0], E, N, dtype=u.dtype)
    ys = []
    for t in range(L):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * x[:, t])[..., None] * Bm[:, t, None, :]
        ys.append((h * Cm[:, t, None, :]).sum(-1) + m.D * x[:, t])
    y = torch.stack(ys, 1) * (z * torch.sigmoid(z))
    return W(m.out_proj, y)


@pytest.mark.parametrize("batch,d_model,d_state,length,bias", [(1, 8, 4, 5, False), (2, 12, 16, 19, True),
                                                               (2, 16, 8, 33, False)])
def test_the_reference_mixer_equals_mamba1_written_out_on_outputs_and_all_gradients(batch, d_model, d_state, length,
                                                                                   bias):
    mixer = _fp64_mixer(d_model, d_state, bias)
    x = torch.randn(batch, length, d_model, dtype=torch.float64)
    out, grads = grads_of(mixer, x)
    ref, ref_grads = grads_of(mixer, x, fn=lambda u: mamba1_oracle(mixer, u))
    assert rel_err(out, ref) < 1e-10    # fp64; the reference's chunked scan reassociates the recurrence's sums
    for name, g in grads.items():                                   # A_log's and D's gradients are fp32 tensors
        assert rel_err(g, ref_grads[name]) < (1e-6 if name in ("A_log", "D") else 1e-10), name


@pytest.mark.parametrize("length", [1, 2, 9])
@pytest.mark.parametrize("bias", [True, False])
def test_causal_conv_equals_nn_conv1d_truncated_on_outputs_and_gradients(bias, length):
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3, bias=bias, dtype=torch.float64)
    x = torch.randn(2, length, 6, dtype=torch.float64, requires_grad=True)  # (B, L, D)
    w = torch.randn(2, length, 6, dtype=torch.float64)
    ours = mamba_module._causal_conv_silu(x, conv)
    ref = torch.nn.functional.silu(conv(x.transpose(1, 2))[..., :length]).transpose(1, 2)
    assert rel_err(ours, ref) < 1e-12
    params = (x, *conv.parameters())
    for g, g_ref in zip(torch.autograd.grad((ours * w).sum(), params), torch.autograd.grad((ref * w).sum(), params)):
        assert rel_err(g, g_ref) < 1e-12


def unidirectional_copy(mixer, k):
    """A 1-direction mixer holding direction k's SSM and the shared projections."""
    single = MambaMixer(mixer.d_model, d_state=mixer.d_state, backend="reference", dtype=torch.float64)
    conv1d, x_proj, dt_proj, A_log, D = mixer.direction_parameters(k)
    state = {"in_proj.weight": mixer.in_proj.weight, "out_proj.weight": mixer.out_proj.weight, "A_log": A_log,
             "D": D, **{f"conv1d.{n}": p for n, p in conv1d.named_parameters()},
             "x_proj.weight": x_proj.weight, **{f"dt_proj.{n}": p for n, p in dt_proj.named_parameters()}}
    single.load_state_dict(state)
    return single


@pytest.mark.parametrize("combine", ["sum", "mean"])
def test_k_directions_equal_k_unidirectional_mixers_on_permuted_inputs(combine):
    torch.manual_seed(0)
    length = 20
    mixer = MambaMixer(8, d_state=4, num_directions=3, combine=combine, backend="reference", dtype=torch.float64)
    perm = torch.randperm(length)
    x = torch.randn(2, length, 8, dtype=torch.float64)
    out = mixer(x, branch_index=[None, perm])
    flip = torch.arange(length - 1, -1, -1)
    expected = sum(unidirectional_copy(mixer, k)(x[:, order]).index_select(1, torch.argsort(order))
                   for k, order in enumerate((torch.arange(length), flip, perm)))
    expected = expected / 3 if combine == "mean" else expected
    assert rel_err(out, expected) < 1e-12


def test_branch_index_none_means_the_reversed_sequence():
    torch.manual_seed(0)
    mixer = MambaMixer(8, d_state=4, num_directions=2, backend="reference", dtype=torch.float64)
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    flip = torch.arange(10, -1, -1)
    torch.testing.assert_close(mixer(x), mixer(x, branch_index=[flip]), rtol=0, atol=0)


def test_segments_equal_running_the_reshaped_batch():
    torch.manual_seed(0)
    mixer = MambaMixer(8, d_state=4, backend="reference", dtype=torch.float64)
    x = torch.randn(2, 24, 8, dtype=torch.float64)
    expected = mixer(x.reshape(8, 6, 8)).reshape(2, 24, 8)
    torch.testing.assert_close(mixer(x, segments=4), expected, rtol=0, atol=1e-14)


def test_segments_split_each_direction_s_own_order():
    torch.manual_seed(0)
    mixer = MambaMixer(8, d_state=4, num_directions=2, backend="reference", dtype=torch.float64)
    perm = torch.randperm(12)
    x = torch.randn(2, 12, 8, dtype=torch.float64)
    out = mixer(x, segments=3, branch_index=[perm])
    first, second = unidirectional_copy(mixer, 0), unidirectional_copy(mixer, 1)
    expected = first(x.reshape(6, 4, 8)).reshape(2, 12, 8)
    expected = expected + second(x[:, perm].reshape(6, 4, 8)).reshape(2, 12, 8)[:, torch.argsort(perm)]
    assert rel_err(out, expected) < 1e-12


def test_bad_branch_index_and_segments_are_refused():
    mixer = MambaMixer(8, d_state=4, num_directions=2, backend="reference")
    x = torch.randn(1, 6, 8)
    with pytest.raises(ValueError, match="needs 1"):
        mixer(x, branch_index=[None, None])
    with pytest.raises(ValueError, match=r"\(6,\) LongTensor"):
        mixer(x, branch_index=[torch.arange(5)])
    with pytest.raises(ValueError, match="segments"):
        mixer(x, segments=4)


def test_unknown_backend_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="auto, fused, reference"):
        MambaMixer(8, backend="cuda")


@pytest.mark.skipif(fused_available(), reason="mamba-ssm is installed here")
def test_fused_backend_without_mamba_ssm_names_the_packages_and_the_install_command():
    with pytest.raises(FusedUnavailableError) as err:
        MambaMixer(8, backend="fused")
    assert "mamba-ssm" in str(err.value) and "causal-conv1d" in str(err.value)
    assert "pip install 'zigma-harness[cuda]'" in str(err.value)


def test_auto_backend_runs_the_reference_on_cpu():
    assert MambaMixer(8, backend="auto").backend_used(torch.randn(1, 4, 8)) == "reference"


def test_mixer_builds_on_the_meta_device():
    mixer = MambaMixer(64, num_directions=2, device="meta")
    assert mixer(torch.empty(2, 16, 64, device="meta")).shape == (2, 16, 64)


def test_reference_mixer_under_bf16_autocast_stays_close_to_fp32():
    torch.manual_seed(0)
    mixer = MambaMixer(32, num_directions=2, backend="reference")
    x = torch.randn(2, 50, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = mixer(x)
    assert low.dtype == torch.bfloat16
    assert rel_err(low, mixer(x)) < 3e-2


needs_fused = pytest.mark.skipif(not (torch.cuda.is_available() and fused_available()),
                                 reason="needs CUDA and mamba-ssm + causal-conv1d")


@pytest.mark.gpu
@needs_fused
@pytest.mark.parametrize(("num_directions", "segments"), [(1, 3), (2, 3), (2, 1), (3, 1)])
def test_fused_equals_reference_on_outputs_and_gradients_in_fp32(num_directions, segments):
    """segments 1 with 2+ directions: each direction through mamba_inner_fn (the third one a gathered order)."""
    torch.manual_seed(0)
    fused = MambaMixer(64, num_directions=num_directions, backend="fused", device="cuda")
    ref = MambaMixer(64, num_directions=num_directions, backend="reference", device="cuda")
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(2, 300, 64, device="cuda")
    branch = [None, torch.randperm(300, device="cuda")] if num_directions == 3 else None
    out_f, g_f = grads_of(fused, x, segments=segments, branch_index=branch)
    out_r, g_r = grads_of(ref, x, segments=segments, branch_index=branch)
    assert rel_err(out_f, out_r) < 1e-4
    for name, g in g_f.items():
        assert rel_err(g, g_r[name]) < 1e-4, name
    assert math.isfinite(out_f.sum().item())
