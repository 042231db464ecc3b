"""Mamba2Mixer's opt-in SSD kernel `ssd='fla'` (flash-linear-attention's chunk_simple_gla): the SSD -> simple-GLA
mapping against the step-by-step fp64 SSD recurrence with a naive GLA recurrence injected, the mixer's wiring on
every kind of layer, the error without fla-core, and (on CUDA with fla-core) the real kernel against the reference."""

import functools
import sys

import pytest
import torch

from tests.zigma.test_mixer2 import (
    MAMBA2_SHAPES,
    loop_ssd,
    mixer_oracle,
    rel_err,
    ssd_inputs,
    value_and_grads,
)
from zigma.backbones import build_zigma
from zigma.mixer import FusedUnavailableError, Mamba2Mixer, fused
from zigma.scans import LayerCycle, zigzag_paths

ON_GPU = torch.cuda.is_available() and fused.gla_available() and fused.gla_refusal(torch.device("cuda")) is None


def naive_gla(q, k, v, g, *, scale):
    """Simple GLA one token at a time: S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = scale * q_t^T S_t.
    q/k (B, L, H, K), v (B, L, H, V), g (B, L, H) -> (o (B, L, H, V), S_L (B, H, K, V))."""
    state = q.new_zeros(q.shape[0], q.shape[2], q.shape[3], v.shape[3])
    outs = []
    for t in range(q.shape[1]):
        state = torch.exp(g[:, t, :, None, None]) * state + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], state))
    return torch.stack(outs, dim=1), state


def via_naive_gla(x, dt, A, B, C, D, dt_bias):
    return fused.ssd_as_gla(x, dt, A, B, C, D=D, dt_bias=dt_bias, gla=naive_gla)


@pytest.fixture
def naive_fla(monkeypatch):
    """fla 'importable' with the naive recurrence as its kernel, torch's conv, and on CPU the fused path taken by
    the ssd 'fla' mixers, the reference path by the others."""
    monkeypatch.setattr(fused, "_import_gla", lambda: (naive_gla, ""))
    monkeypatch.setattr(fused, "_import_causal_conv1d", lambda: None)
    monkeypatch.setattr(Mamba2Mixer, "backend_used", lambda self, x: "fused" if self.ssd == "fla" else "reference")


@pytest.fixture
def no_fla(monkeypatch):
    """`import fla...` fails (None in sys.modules), with the cached import attempt cleared before and after."""
    for name in ("fla", "fla.ops", "fla.ops.simple_gla"):
        monkeypatch.setitem(sys.modules, name, None)
    fused._import_gla.cache_clear()
    yield
    fused._import_gla.cache_clear()


@pytest.mark.parametrize("length", [1, 7, 67])
@pytest.mark.parametrize("groups", [1, 2])
def test_ssd_through_simple_gla_equals_the_fp64_ssd_recurrence_on_outputs_and_all_gradients(length, groups):
    out, grads = value_and_grads(via_naive_gla, ssd_inputs(length, groups=groups))
    ref, ref_grads = value_and_grads(loop_ssd, ssd_inputs(length, groups=groups))
    assert rel_err(out, ref) < 1e-10
    for name, g in grads.items():
        assert rel_err(g, ref_grads[name]) < 1e-10, name


def test_the_gla_kernel_gets_fp32_log_decays_and_scale_1_under_low_precision_inputs():
    seen = {}

    def spy(q, k, v, g, *, scale):
        seen.update(q=q.dtype, k=k.dtype, v=v.dtype, g=g.dtype, scale=scale)
        return torch.zeros_like(v), None

    inputs = {k: v.detach() for k, v in ssd_inputs(5, groups=2, dtype=torch.bfloat16).items()}
    y = fused.ssd_as_gla(**{k: v for k, v in inputs.items() if k not in ("D", "dt_bias")}, D=inputs["D"],
                         dt_bias=inputs["dt_bias"], gla=spy)
    assert seen == {"q": torch.bfloat16, "k": torch.bfloat16, "v": torch.bfloat16, "g": torch.float32, "scale": 1.0}
    assert y.dtype == torch.bfloat16


@pytest.mark.parametrize("ngroups", [1, 2])
def test_one_direction_fla_mixer_equals_mamba2_computed_step_by_step(naive_fla, ngroups):
    m = Mamba2Mixer(32, d_state=8, headdim=16, ngroups=ngroups, ssd="fla", generator=torch.Generator().manual_seed(0))
    m = m.double()
    with torch.no_grad():
        m.norm.weight.uniform_(0.5, 1.5)
        m.D.uniform_(-1, 1)
    u = torch.randn(2, 37, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert rel_err(m(u), mixer_oracle(m, u)) < 1e-8  # would raise without mamba-ssm if routed to mamba2_forward


def test_two_direction_segmented_fla_mixer_equals_the_reference_mixer_on_outputs_and_gradients(naive_fla):
    fla = Mamba2Mixer(32, d_state=8, headdim=16, ngroups=2, num_directions=2, ssd="fla",
                      generator=torch.Generator().manual_seed(0)).double()
    ref = Mamba2Mixer(32, d_state=8, headdim=16, ngroups=2, num_directions=2, chunk_size=4,
                      backend="reference").double()
    ref.load_state_dict(fla.state_dict())
    u = torch.randn(2, 18, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    idx = torch.randperm(18, generator=torch.Generator().manual_seed(2))
    outs = []
    for m in (fla, ref):
        out = m(u, segments=3, branch_index=[idx])
        outs.append((out, torch.autograd.grad(out.square().sum(), (u, *m.parameters()))))
    assert rel_err(outs[0][0], outs[1][0]) < 1e-10
    for (name, _), gf, gr in zip(fla.named_parameters(), outs[0][1][1:], outs[1][1][1:]):
        assert rel_err(gf, gr) < 1e-10, name
    assert rel_err(outs[0][1][0], outs[1][1][0]) < 1e-10


def test_fla_mixer_has_mamba2_s_state_dict_and_the_same_weights_from_one_seed(naive_fla):
    a = Mamba2Mixer(64, d_state=16, headdim=16, ngroups=2, ssd="fla", generator=torch.Generator().manual_seed(0))
    b = Mamba2Mixer(64, d_state=16, headdim=16, ngroups=2, generator=torch.Generator().manual_seed(0))
    assert {k: tuple(v.shape) for k, v in a.state_dict().items()} == MAMBA2_SHAPES
    assert list(a.state_dict()) == list(b.state_dict())
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_the_reference_backend_ignores_ssd(naive_fla, monkeypatch):
    monkeypatch.setattr(Mamba2Mixer, "backend_used", lambda self, x: "reference")
    monkeypatch.setattr(fused, "gla_scan", lambda *a, **k: pytest.fail("the reference path called fla"))
    a = Mamba2Mixer(32, d_state=8, headdim=16, ssd="fla", generator=torch.Generator().manual_seed(0))
    b = Mamba2Mixer(32, d_state=8, headdim=16, generator=torch.Generator().manual_seed(0))
    u = torch.randn(1, 9, 32)
    assert torch.equal(a(u), b(u))


def test_ssd_fla_without_fla_core_is_refused_naming_the_package_and_the_install_command(no_fla):
    assert not fused.gla_available()
    for backend in ("auto", "fused", "reference"):
        with pytest.raises(FusedUnavailableError, match=r"ssd 'fla'.*fla-core.*zigma-harness\[fla\]"):
            Mamba2Mixer(32, headdim=16, ssd="fla", backend=backend)


def test_unknown_ssd_kernel_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown ssd 'flash'; choose one of mamba-ssm, fla"):
        Mamba2Mixer(32, headdim=16, ssd="flash")


# ---- on CUDA with fla-core: the real chunk_simple_gla ----------------------------------------------------------
# Tolerances (max |diff| / max |ref|, the worst of the output and every gradient): fp32 5e-3, not the reference's
# 1e-4: fla's fp32 tl.dot runs in TF32 on Hopper, and mamba-ssm's Triton SSD, in TF32 too, measured 1.4e-3 to 2.7e-3
# on the same check (benchmarks/results/gpu_mixer2_h200.md). bf16 5e-2: these tests run on CPU with an exact fp32
# GLA fed the bf16 q, k, v that fla's kernel gets already reach 2.4e-2 (A_log) and 2.6e-2 (a block's dt_bias);
# per-head gradients sum many tokens and amplify the inputs' rounding. A wrong mapping is off by O(1).
BF16_TOL, FP32_TOL = 5e-2, 5e-3


def cuda_pair(num_directions, ngroups=1):
    """(fla mixer, reference mixer) with the same weights, ZigMa-B-like heads (headdim 64, d_state 64)."""
    fla = Mamba2Mixer(256, ngroups=ngroups, num_directions=num_directions, backend="fused", ssd="fla",
                      device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    ref = Mamba2Mixer(256, ngroups=ngroups, num_directions=num_directions, backend="reference", device="cuda")
    ref.load_state_dict(fla.state_dict())
    return fla, ref


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs CUDA and fla-core (flash-linear-attention) that trains there (fused.gla_refusal)")
@pytest.mark.parametrize("num_directions,ngroups", [(1, 1), (2, 2)])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, FP32_TOL), (torch.bfloat16, BF16_TOL)])
def test_fla_kernel_equals_the_reference_on_outputs_and_gradients(num_directions, ngroups, dtype, tol):
    torch.manual_seed(0)
    fla, ref = cuda_pair(num_directions, ngroups)
    x = torch.randn(2, 300, 256, device="cuda", requires_grad=True)  # segments of 100 tokens: off fla's chunk 64
    outs = []
    for m in (fla, ref):
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            out = m(x, segments=3)
        outs.append((out.float(), torch.autograd.grad(out.float().square().sum(), (x, *m.parameters()))))
    assert rel_err(outs[0][0], outs[1][0]) < tol
    for (name, _), gf, gr in zip([("x", None), *fla.named_parameters()], outs[0][1], outs[1][1]):
        assert rel_err(gf, gr) < tol, name


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs CUDA and fla-core (flash-linear-attention) that trains there (fused.gla_refusal)")
def test_a_zigma_block_with_the_fla_kernel_trains_like_the_reference_block_in_bf16():
    torch.manual_seed(0)
    blocks = []
    for backend, ssd in (("fused", "fla"), ("reference", "mamba-ssm")):
        model = build_zigma(size="tiny", input_shape=(4, 32, 32), patch_size=2, mixer_backend=backend,
                            scan=LayerCycle(zigzag_paths, 8, name="zigzag-8"), d_state=64,
                            mixer=functools.partial(Mamba2Mixer, headdim=32, ssd=ssd), device="cuda",
                            generator=torch.Generator("cuda").manual_seed(0))
        blocks.append(model.blocks[0])  # (B, L, width), c (B, width) -> (B, L, width); 256 tokens: off chunk 64
    torch.nn.init.normal_(blocks[0].adaLN_modulation[-1].bias, std=0.5)  # open the adaLN-Zero gates
    blocks[1].load_state_dict(blocks[0].state_dict())
    g = torch.Generator("cuda").manual_seed(1)
    width = blocks[0].mixer.d_model
    x = torch.randn(2, 256, width, device="cuda", generator=g, requires_grad=True)
    c = torch.randn(2, width, device="cuda", generator=g, requires_grad=True)
    results = []
    for blk in blocks:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = blk(x, c).float()
        names, params = zip(*blk.named_parameters())
        results.append((out, dict(zip(("x", "c", *names), torch.autograd.grad(out.square().mean(), (x, c, *params))))))
    assert blocks[0].mixer.backend_used(x) == "fused" and blocks[0].mixer.ssd == "fla"
    assert rel_err(results[0][0], results[1][0]) < BF16_TOL
    for name, grad in results[0][1].items():
        assert torch.isfinite(grad).all() and rel_err(grad, results[1][1][name]) < BF16_TOL, name


# ---- where fla-core refuses to train: Hopper + Triton [3.4.0, 3.7.1) without tilelang -----------------------------
# The range is transcribed from fla-core 0.6.0's own refusal (fla/ops/common/chunk_o.py, chunk_bwd_dqkwg: "Triton >=
# 3.4.0 and < 3.7.1 on Hopper GPUs produces incorrect results for gated chunk_bwd_dqkwg (see #640)"), which an H200
# with Triton 3.6.0 hit at the first backward (benchmarks/results/fla_hopper_h200.md).
@pytest.fixture
def fake_gpu(monkeypatch):
    def setup(capability, triton, tilelang=False):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
        monkeypatch.setattr(fused, "_triton_version", lambda: triton)
        monkeypatch.setattr(fused, "_has_tilelang", lambda: tilelang)
        fused.gla_refusal.cache_clear()
    yield setup
    fused.gla_refusal.cache_clear()


@pytest.mark.parametrize("capability,triton,tilelang,refused", [
    ((9, 0), (3, 6, 0), False, True), ((9, 0), (3, 4, 0), False, True), ((9, 0), (3, 7, 0), False, True),
    ((9, 0), (3, 7, 1), False, False), ((9, 0), (3, 3, 1), False, False), ((9, 0), (3, 6, 0), True, False),
    ((8, 0), (3, 6, 0), False, False), ((10, 0), (3, 6, 0), False, False), ((9, 0), None, False, False)])
def test_fla_is_refused_exactly_on_hopper_with_the_triton_versions_fla_core_refuses(fake_gpu, capability, triton,
                                                                                      tilelang, refused):
    fake_gpu(capability, triton, tilelang)
    why = fused.gla_refusal(torch.device("cuda", 0))
    assert (why is not None) == refused
    if refused:
        assert all(s in why for s in ("ssd 'fla'", "NVIDIA H200", f"Triton {'.'.join(map(str, triton))}", "#640",
                                      "3.7.1", "tilelang", "ssd 'mamba-ssm'"))


def test_the_refusal_is_raised_before_any_kernel_runs_and_never_on_the_cpu(fake_gpu, monkeypatch):
    import types

    fake_gpu((9, 0), (3, 6, 0))
    assert fused.gla_refusal(torch.device("cpu")) is None
    monkeypatch.setattr(fused, "gla_kernel", lambda: pytest.fail("the kernel was reached"))
    on_gpu = types.SimpleNamespace(device=torch.device("cuda", 0))   # only its device is read before the refusal
    with pytest.raises(FusedUnavailableError, match=r"Triton 3\.6\.0.*#640"):
        fused.gla_scan(on_gpu, None, None, None, None, D=None, dt_bias=None)
