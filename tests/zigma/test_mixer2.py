"""Mamba2Mixer and the chunked SSD: against a step-by-step fp64 recurrence, mamba_ssm.Mamba2's state dict,
directions and segments, and the fused path on CUDA."""

import pytest
import torch
import torch.nn.functional as F

from zigma.mixer import FusedUnavailableError, Mamba2Mixer, ssd_chunked
from zigma.mixer.fused import ssd_available

# mamba_ssm.Mamba2(d_model=64, d_state=16, headdim=16, ngroups=2, expand=2, d_conv=4) state dict, transcribed
# from mamba_ssm/modules/mamba2.py: in_proj 2E + 2GN + H = 256 + 64 + 8, conv over E + 2GN = 192 channels.
MAMBA2_SHAPES = {
    "dt_bias": (8,), "A_log": (8,), "D": (8,), "in_proj.weight": (328, 64), "conv1d.weight": (192, 1, 4),
    "conv1d.bias": (192,), "norm.weight": (128,), "out_proj.weight": (64, 128),
}


def rel_err(a, b):
    """max |a - b| / max |b| (b the reference)."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def loop_ssd(x, dt, A, B, C, D, dt_bias):
    """The recurrence, one token at a time: h_t = exp(dt A) h_{t-1} + dt B_t x_t, y_t = C_t h_t + D x_t."""
    batch, length, heads, p = x.shape
    group = torch.arange(heads) // (heads // B.shape[2])  # head h reads group h // (H / G)
    dt = F.softplus(dt + dt_bias)
    h = x.new_zeros(batch, heads, p, B.shape[-1])
    ys = []
    for t in range(length):
        Bt, Ct, dtt = B[:, t, group], C[:, t, group], dt[:, t, :, None, None]  # (b, h, n), (b, h, n), (b, h, 1, 1)
        h = torch.exp(dtt * A[:, None, None]) * h + dtt * x[:, t, :, :, None] * Bt[:, :, None, :]
        ys.append((h * Ct[:, :, None, :]).sum(-1) + D[:, None] * x[:, t])
    return torch.stack(ys, dim=1)


def ssd_inputs(length, heads=4, p=3, groups=1, n=5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    def r(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()
    return {"x": r(2, length, heads, p), "dt": r(2, length, heads), "A": (-torch.rand(heads, generator=g,
            dtype=torch.float64) * 3 - 0.1).to(dtype).requires_grad_(), "B": r(2, length, groups, n),
            "C": r(2, length, groups, n), "D": r(heads), "dt_bias": r(heads, scale=0.5)}


def value_and_grads(fn, inputs):
    out = fn(**inputs)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(out.dtype)
    names = list(inputs)
    return out, dict(zip(names, torch.autograd.grad((out * w).sum(), [inputs[k] for k in names])))


def chunked(chunk):
    return lambda x, dt, A, B, C, D, dt_bias: ssd_chunked(x, dt, A, B, C, chunk_size=chunk, D=D, dt_bias=dt_bias)


@pytest.mark.parametrize("length", [1, 7, 64, 257])
@pytest.mark.parametrize("groups", [1, 2])
def test_chunked_ssd_equals_the_fp64_recurrence_on_outputs_and_all_gradients(length, groups):
    out, grads = value_and_grads(chunked(64), ssd_inputs(length, groups=groups))
    ref, ref_grads = value_and_grads(loop_ssd, ssd_inputs(length, groups=groups))
    assert rel_err(out, ref) < 1e-6
    for name, g in grads.items():
        assert rel_err(g, ref_grads[name]) < 1e-6, name


@pytest.mark.parametrize("length", [7, 257])
def test_chunked_ssd_in_fp32_is_within_1e4_of_the_fp64_recurrence(length):
    out, grads = value_and_grads(chunked(64), ssd_inputs(length, groups=2, dtype=torch.float32))
    ref, ref_grads = value_and_grads(loop_ssd, ssd_inputs(length, groups=2))
    assert out.dtype == torch.float32 and rel_err(out, ref) < 1e-4
    for name, g in grads.items():
        assert rel_err(g, ref_grads[name]) < 1e-4, name


def test_chunked_ssd_of_long_sequences_with_strong_decay_is_finite_and_exact():
    inputs = ssd_inputs(300, dtype=torch.float32)
    with torch.no_grad():
        inputs["dt_bias"].add_(4.0)  # dt ~ 4: decays down to exp(-13) per token, exp(-3000) per chunk
        out = ssd_chunked(**{k: v for k, v in inputs.items() if k not in ("D", "dt_bias")}, chunk_size=128,
                          D=inputs["D"], dt_bias=inputs["dt_bias"])
        ref = loop_ssd(**{k: v.double() for k, v in inputs.items()})
    assert torch.isfinite(out).all() and rel_err(out, ref) < 1e-4


def mixer_oracle(m, u):
    """Mamba2 as mamba_ssm's unfused path computes it, step by step in fp64: u (B, L, D) -> (B, L, D)."""
    e, gn, h = m.d_inner, m.ngroups * m.d_state, m.nheads
    z, xbc, dt = torch.split(F.linear(u, m.in_proj.weight.double()), [e, e + 2 * gn, h], dim=-1)
    conv = F.conv1d(xbc.transpose(1, 2), m.conv1d.weight.double(), m.conv1d.bias.double(), padding=m.d_conv - 1,
                    groups=xbc.shape[-1])[..., : u.shape[1]]
    x, B, C = torch.split(F.silu(conv).transpose(1, 2), [e, gn, gn], dim=-1)
    y = loop_ssd(x.unflatten(-1, (h, m.headdim)), dt, -torch.exp(m.A_log.double()), B.unflatten(-1, (m.ngroups, -1)),
                 C.unflatten(-1, (m.ngroups, -1)), m.D.double(), m.dt_bias.double()).flatten(2)
    y = (y * F.silu(z)).unflatten(-1, (m.ngroups, -1))  # rms_norm_ref, norm_before_gate=False, group_size E/G
    y = (y * torch.rsqrt(y.square().mean(-1, keepdim=True) + 1e-5)).flatten(2) * m.norm.weight.double()
    return F.linear(y, m.out_proj.weight.double())


@pytest.mark.parametrize("ngroups", [1, 2])
def test_reference_mixer_equals_mamba2_computed_step_by_step(ngroups):
    m = Mamba2Mixer(32, d_state=8, headdim=16, ngroups=ngroups, chunk_size=16, backend="reference",
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        m.norm.weight.uniform_(0.5, 1.5)
        m.D.uniform_(-1, 1)
    u = torch.randn(2, 37, 32, generator=torch.Generator().manual_seed(1))
    assert rel_err(m(u), mixer_oracle(m, u.double())) < 1e-4


def test_state_dict_has_mamba2_s_names_and_shapes_and_loads_back_bit_exactly():
    a = Mamba2Mixer(64, d_state=16, headdim=16, ngroups=2, generator=torch.Generator().manual_seed(0))
    assert {k: tuple(v.shape) for k, v in a.state_dict().items()} == MAMBA2_SHAPES
    assert list(a.state_dict()) == list(MAMBA2_SHAPES)  # Mamba2's registration order too
    b = Mamba2Mixer(64, d_state=16, headdim=16, ngroups=2, generator=torch.Generator().manual_seed(1))
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    u = torch.randn(1, 9, 64)
    assert torch.equal(a(u), b(u))


def test_initialisation_follows_mamba2():
    m = Mamba2Mixer(64, headdim=16, dt_min=1e-3, dt_max=0.1, generator=torch.Generator().manual_seed(0))
    assert m.d_state == 64 and m.chunk_size == 256 and m.nheads == 8 and m.D.dtype == torch.float32
    dt = F.softplus(m.dt_bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    A = torch.exp(m.A_log)
    assert A.min() >= 1 and A.max() <= 16 and A.std() > 1  # U(1, 16), one per head
    assert torch.equal(m.D, torch.ones(8)) and torch.equal(m.norm.weight, torch.ones(128))
    assert m.dt_bias._no_weight_decay and m.A_log._no_weight_decay and m.D._no_weight_decay


def test_an_explicit_generator_alone_decides_the_weights():
    torch.manual_seed(0)
    a = Mamba2Mixer(32, d_state=8, headdim=16, num_directions=2, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(1)
    b = Mamba2Mixer(32, d_state=8, headdim=16, num_directions=2, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_second_and_third_directions_own_conv_dt_a_and_d_with_vim_style_names():
    names = set(Mamba2Mixer(32, d_state=8, headdim=16, num_directions=3).state_dict())
    assert {"conv1d_b.weight", "dt_bias_b", "A_b_log", "D_b", "conv1d_p2.weight", "dt_bias_p2", "A_p2_log",
            "D_p2"} <= names
    assert not any(n.startswith(("in_proj_", "out_proj_", "norm_")) for n in names)


def test_two_directions_sum_the_ssm_outputs_in_direction_0_s_order_before_one_gated_norm():
    torch.manual_seed(0)
    m = Mamba2Mixer(32, d_state=8, headdim=16, num_directions=2, chunk_size=8, backend="reference").double()
    u = torch.randn(2, 12, 32, dtype=torch.float64)
    idx = torch.randperm(12)
    e, gn = m.d_inner, m.d_state
    z, xbcdt = m.in_proj(u).split([e, xbcdt_width := m.in_proj.out_features - e], dim=-1)
    y0 = m._ssm(xbcdt, 0, False)
    y1 = m._ssm(xbcdt[:, idx], 1, False)[:, torch.argsort(idx)]  # direction 1 on its order, then back
    expected = m.out_proj(m.norm(y0 + y1, z))
    assert xbcdt_width == e + 2 * gn + m.nheads
    torch.testing.assert_close(m(u, branch_index=[idx]), expected)


def test_branch_index_none_means_the_reversed_sequence():
    m = Mamba2Mixer(32, d_state=8, headdim=16, num_directions=2)
    u = torch.randn(1, 10, 32)
    torch.testing.assert_close(m(u), m(u, branch_index=[torch.arange(9, -1, -1)]))


def test_segments_equal_running_the_reshaped_batch():
    m = Mamba2Mixer(32, d_state=8, headdim=16, chunk_size=4)
    u = torch.randn(2, 12, 32)
    torch.testing.assert_close(m(u, segments=3), m(u.reshape(6, 4, 32)).reshape(2, 12, 32))


def test_segments_of_a_two_direction_layer_do_not_see_each_other():
    m = Mamba2Mixer(32, d_state=8, headdim=16, num_directions=2, chunk_size=4)
    u = torch.randn(2, 12, 32)
    v = u.clone()
    v[:, :4] += 1.0  # change segment 0 only
    out, out_v = m(u, segments=3), m(v, segments=3)
    assert torch.equal(out[:, 4:], out_v[:, 4:]) and not torch.allclose(out[:, :4], out_v[:, :4])


def test_bad_shapes_and_options_are_refused():
    with pytest.raises(ValueError, match="headdim"):
        Mamba2Mixer(40, headdim=64)
    with pytest.raises(ValueError, match="ngroups"):
        Mamba2Mixer(32, headdim=16, ngroups=3)
    with pytest.raises(ValueError, match="segments"):
        Mamba2Mixer(32, d_state=8, headdim=16)(torch.randn(1, 10, 32), segments=3)


@pytest.mark.skipif(ssd_available(), reason="mamba-ssm's Triton SSD is importable here")
def test_fused_backend_without_mamba_ssm_is_refused_naming_the_install_command():
    with pytest.raises(FusedUnavailableError, match=r"mamba2.*zigma-harness\[cuda\]"):
        Mamba2Mixer(32, headdim=16, backend="fused")


def test_mixer_builds_on_the_meta_device_from_a_generator():
    m = Mamba2Mixer(64, headdim=16, num_directions=2, device="meta", generator=torch.Generator().manual_seed(0))
    assert m.in_proj.weight.is_meta and m.A_b_log.is_meta


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and ssd_available()), reason="needs CUDA and mamba-ssm")
@pytest.mark.parametrize(("num_directions", "segments"), [(1, 3), (2, 3), (2, 1), (3, 1)])
def test_fused_equals_reference_on_outputs_and_gradients_in_fp32(num_directions, segments):
    """segments 1 with 2+ directions: each direction through the split kernel (the third one a gathered order)."""
    torch.manual_seed(0)
    fused = Mamba2Mixer(128, num_directions=num_directions, backend="fused", device="cuda")
    ref = Mamba2Mixer(128, num_directions=num_directions, backend="reference", device="cuda")
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(2, 300, 128, device="cuda", requires_grad=True)
    branch = [None, torch.randperm(300, device="cuda")] if num_directions == 3 else None
    outs = []
    for m in (fused, ref):
        out = m(x, segments=segments, branch_index=branch)
        outs.append((out, torch.autograd.grad(out.square().sum(), (x, *m.parameters()))))
    assert rel_err(outs[0][0], outs[1][0]) < 1e-4
    for gf, gr in zip(outs[0][1], outs[1][1]):
        assert rel_err(gf, gr) < 1e-4


def test_reference_mixer_under_bf16_autocast_stays_close_to_fp32():
    m = Mamba2Mixer(64, d_state=16, headdim=32, chunk_size=16, generator=torch.Generator().manual_seed(0))
    u = torch.randn(2, 40, 64, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(u)
    assert low.dtype == torch.bfloat16 and rel_err(low, m(u)) < 3e-2
