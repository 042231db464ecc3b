"""The 'packed' segment layout of MambaMixer (zigma/mixer/segments.py): the same function as the batch-folded layout
on outputs and every gradient, a state that really resets at the separators, and reset steps that underflow
exactly for any decay rate. On CPU the fused branch runs with the reference scan standing in for mamba-ssm's kernel
(and torch's conv for causal-conv1d), so its packing is checked here too; the kernels themselves in the gpu tests."""

import math

import pytest
import torch

import zigma.mixer.mamba as mamba_module
from tests.zigma.test_mixer import grads_of
from zigma.mixer import MambaMixer, fused, fused_available, selective_scan_ref
from zigma.mixer.segments import SegmentPacking, segment_layout_used

PATHS = ("reference", "fused-standin")


def rel_err(a, b):
    """max |a - b| / max |b| (b the reference)."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


@pytest.fixture
def path(request, monkeypatch):
    """'reference': the pure-PyTorch branch. 'fused-standin': the fused branch (ssm_branch: torch conv, packing in
    channel-major layout) with mamba-ssm's scan replaced by the reference scan of the same signature, on CPU."""
    if request.param == "fused-standin":
        kernels = {"mamba_inner_fn": None, "selective_scan_fn": selective_scan_ref, "causal_conv1d_fn": None}
        monkeypatch.setattr(fused, "_import", lambda: (kernels, ""))
        monkeypatch.setattr(mamba_module, "choose_backend", lambda backend, x, available: "fused")
    return request.param


def mixers(dtype, *, d_model=8, d_state=4, seed=0, **kw):
    """(batch-folded, packed) mixers with the same weights; dt and A moved off their init so that decays matter
    and differ between channels and states."""
    torch.manual_seed(seed)
    batch = MambaMixer(d_model, d_state=d_state, backend="reference", segment_layout="batch", dtype=dtype, **kw)
    with torch.no_grad():
        for k in range(batch.num_directions):
            _, _, dt_proj, A_log, _ = batch.direction_parameters(k)
            dt_proj.bias.add_(1.0)
            A_log.add_(torch.randn_like(A_log))
    packed = MambaMixer(d_model, d_state=d_state, backend="reference", segment_layout="packed", dtype=dtype, **kw)
    packed.load_state_dict(batch.state_dict())
    return batch, packed


def assert_same_function(batch, packed, x, tol, **kw):
    out_b, g_b = grads_of(batch, x, **kw)
    out_p, g_p = grads_of(packed, x, **kw)
    assert rel_err(out_p, out_b) < tol
    for name, g in g_b.items():
        assert rel_err(g_p[name], g) < tol, name


@pytest.mark.parametrize("path", PATHS, indirect=True)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("segments,seg_len,d_conv", [(1, 24, 4), (8, 8, 4), (64, 8, 4), (2, 100, 4), (8, 8, 2)])
def test_packed_equals_batch_folded_on_outputs_and_all_gradients(path, dtype, tol, segments, seg_len, d_conv):
    batch, packed = mixers(dtype, d_conv=d_conv)
    x = torch.randn(2, segments * seg_len, 8, dtype=dtype)
    assert_same_function(batch, packed, x, tol, segments=segments)


@pytest.mark.parametrize("path", PATHS, indirect=True)
def test_packed_one_segment_equals_the_plain_mixer(path):
    batch, packed = mixers(torch.float64)
    x = torch.randn(3, 17, 8, dtype=torch.float64)
    assert_same_function(batch, packed, x, 1e-10)  # segments=1: the batch layout is the plain sequence


@pytest.mark.parametrize("path", PATHS, indirect=True)
@pytest.mark.parametrize("reversed_first", [True, False])
def test_packed_equals_batch_folded_with_several_permuted_directions(path, reversed_first):
    batch, packed = mixers(torch.float64, num_directions=3, combine="mean")
    length, gen = 24, torch.Generator().manual_seed(1)
    perms = [torch.randperm(length, generator=gen) for _ in range(2)]
    index = [None if reversed_first else perms[0], perms[1]]
    x = torch.randn(2, length, 8, dtype=torch.float64)
    assert_same_function(batch, packed, x, 1e-10, segments=4, branch_index=index)


def segment(y, k, seg_len):
    return y[:, k * seg_len:(k + 1) * seg_len]


@pytest.mark.parametrize("path", PATHS, indirect=True)
def test_packed_state_resets_so_no_segment_sees_another(path):
    _, packed = mixers(torch.float64, d_conv=4)
    with torch.no_grad():
        packed.A_log.fill_(math.log(1e-3))  # slow decay: a state leaking across a separator would show
    segments, seg_len, k = 5, 6, 2
    x = torch.randn(2, segments * seg_len, 8, dtype=torch.float64, requires_grad=True)
    changed = x.detach().clone()
    changed[:, k * seg_len:(k + 1) * seg_len] = torch.randn(2, seg_len, 8, dtype=torch.float64)
    out, out_changed = packed(x, segments=segments), packed(changed, segments=segments)
    for j in range(segments):
        if j == k:
            assert not torch.equal(segment(out, j, seg_len), segment(out_changed, j, seg_len))
        else:
            assert torch.equal(segment(out, j, seg_len), segment(out_changed, j, seg_len)), j
    # the segment after k, run alone from the zero state, gives the same outputs
    alone = packed(segment(x, k + 1, seg_len).detach(), segments=1)
    assert rel_err(segment(out, k + 1, seg_len), alone) < 1e-12
    # and no gradient crosses a separator: segment k+1's outputs depend on segment k+1's inputs only
    (dx,) = torch.autograd.grad(segment(out, k + 1, seg_len).sum(), x)
    for j in range(segments):
        assert (segment(dx, j, seg_len).abs().max() > 0) == (j == k + 1), j


@pytest.mark.parametrize("path", PATHS, indirect=True)
@pytest.mark.parametrize("dtype,tol,a_logs", [
    (torch.float64, 1e-10, (math.log(1e4), math.log(3e5))),  # fast decays
    (torch.float64, 1e-10, (-30.0, -80.0)),                   # |A| ~ 1e-13 and 1e-35: a near-perfect integrator
    (torch.float64, 1e-10, (-80.0, math.log(3e5))),           # both in one channel's states
    (torch.float32, 1e-5, (math.log(1e4), math.log(3e5))),
    (torch.float32, 1e-5, (-30.0, -50.0)),                    # fp32: exact down to A_log = -55.8
    (torch.float32, 1e-5, (-50.0, math.log(3e5))),
])
def test_packed_is_exact_for_large_and_tiny_decay_rates(path, dtype, tol, a_logs):
    batch, packed = mixers(dtype)
    a_log = torch.tensor(a_logs, dtype=torch.float32).repeat(batch.d_state // 2)  # (d_state,) alternating
    for m in (batch, packed):
        with torch.no_grad():
            m.A_log.copy_(a_log.expand_as(m.A_log))
    x = torch.randn(2, 8 * 6, 8, dtype=dtype)
    assert_same_function(batch, packed, x, tol, segments=8)


@pytest.mark.parametrize("path", PATHS, indirect=True)
@pytest.mark.parametrize("a_log", [-80.0, -200.0])  # |A| = 1.8e-35; 0 (exp underflows in fp32)
def test_packed_past_the_reset_bound_gives_nan_not_a_silent_leak(path, a_log):
    _, packed = mixers(torch.float32)
    with torch.no_grad():
        packed.A_log[3, 1] = a_log  # one state of one channel
    out = packed(torch.randn(2, 4 * 5, 8), segments=4)
    assert out.isnan().all()


@pytest.mark.parametrize("path", PATHS, indirect=True)
def test_packed_fp16_runs_the_scan_in_fp32_where_fp16_cannot_hold_the_reset_step(path):
    batch, packed = mixers(torch.float16)
    for m in (batch, packed):
        with torch.no_grad():
            m.A_log[:, 0] = math.log(1e-3)  # reset step ~2e5, past fp16's 65504
    x = torch.randn(2, 8 * 6, 8).half()
    out_b, out_p = batch(x, segments=8), packed(x, segments=8)
    assert out_p.dtype == torch.float16 and rel_err(out_p, out_b) < 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_reset_steps_make_every_decay_exactly_zero_and_leave_real_steps_alone(dtype):
    packing = SegmentPacking(3, 12, d_conv=4)  # 3 segments of 4, 3 separators each: period 7
    a_log = torch.linspace(-40, 14, 64).reshape(16, 4)  # |A| from 4e-18 to 1.2e6, several per channel
    A = -torch.exp(a_log)
    bias = torch.linspace(-20, 20, 16)
    delta = torch.randn(2, 16, 21).to(dtype)  # (B, D, S * (P + T)), channel-major
    stepped = packing.reset_steps(delta, A, bias, channels_last=False)
    sep = (torch.arange(21) % 7) < 3
    scan = torch.promote_types(dtype, torch.float32)
    assert stepped.dtype == (torch.float32 if dtype == torch.float16 else dtype)  # fp16 cannot hold the steps
    assert torch.equal(stepped[..., ~sep], delta[..., ~sep].to(stepped.dtype))
    dt = torch.nn.functional.softplus(stepped[..., sep].to(scan) + bias[:, None].to(scan))  # (B, D, separators)
    exponent = dt[..., None] * A[:, None, :].to(scan) * math.log2(math.e)  # as both scans compute it
    assert torch.isfinite(dt).all() and torch.equal(torch.exp2(exponent), torch.zeros_like(exponent))
    token_major = packing.reset_steps(delta.transpose(1, 2), A, bias, channels_last=True)
    assert torch.equal(token_major, stepped.transpose(1, 2))


def test_pack_puts_zeros_before_each_segment_and_unpack_inverts_it():
    packing = SegmentPacking(2, 6, d_conv=3)  # 2 separators before each of 2 segments of 3
    x = torch.arange(1.0, 13.0).reshape(1, 6, 2)
    packed = packing.pack(x)
    assert packed[0, :, 0].tolist() == [0, 0, 1, 3, 5, 0, 0, 7, 9, 11]
    assert torch.equal(packing.unpack(packed), x)
    assert SegmentPacking(2, 6, d_conv=1).pad == 1  # no conv history, still one reset position


#: benchmarks/results/segment_layout_h200.md, transcribed: (segments, tokens) -> packed / batch-folded time on the
#: fused kernels (one direction); packed below 1 is where 'auto' must pack
H200_PACKED_OVER_BATCH = {(64, 512): 0.12, (8, 512): 0.89, (1, 256): 2.11}


def test_auto_layout_packs_exactly_where_the_gpu_benchmark_measured_packing_faster():
    for (segments, length), ratio in H200_PACKED_OVER_BATCH.items():
        want = "packed" if ratio < 1 else "batch"
        assert segment_layout_used("auto", segments=segments, length=length, backend="fused") == want
    # 256 segments of 8 frames (a 16x16-token video's temporal layer) packs; 8 frames of 256 tokens (its spatial
    # layer) was never measured and keeps the batch layout; the CPU reference never packs on its own
    assert segment_layout_used("auto", segments=256, length=2048, backend="fused") == "packed"
    assert segment_layout_used("auto", segments=8, length=2048, backend="fused") == "batch"
    for segments, length in ((64, 512), (8, 512), (1, 256)):
        assert segment_layout_used("auto", segments=segments, length=length, backend="reference") == "batch"
    for layout in ("batch", "packed"):   # an explicit layout is kept
        assert segment_layout_used(layout, segments=64, length=512, backend="fused") == layout
        assert segment_layout_used(layout, segments=1, length=256, backend="reference") == layout


def test_unknown_segment_layout_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"segment_layout 'rows'; choose one of auto, batch, packed"):
        MambaMixer(8, segment_layout="rows")
    with pytest.raises(ValueError, match="do not split into 4 segments"):
        SegmentPacking(4, 6, d_conv=4)


def test_packed_mixer_builds_and_runs_on_the_meta_device():
    mixer = MambaMixer(64, num_directions=2, segment_layout="packed", device="meta")
    assert mixer(torch.empty(2, 16, 64, device="meta"), segments=4).shape == (2, 16, 64)


# ---- GPU: mamba-ssm's kernels ------------------------------------------------------------------------------------

needs_fused = pytest.mark.skipif(not (torch.cuda.is_available() and fused_available()),
                                 reason="needs CUDA and mamba-ssm + causal-conv1d")


def cuda_grads(mixer, x, weight, autocast, **kw):
    """Output and gradients (input + every parameter) of sum(out * weight), optionally under bf16 autocast."""
    mixer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        out = mixer(x, **kw)
    (out.float() * weight).sum().backward()
    return out.detach().float(), {"x": x.grad, **{n: p.grad for n, p in mixer.named_parameters()}}


@pytest.mark.gpu
@needs_fused
@pytest.mark.parametrize("num_directions", [1, 2])
def test_fused_packed_equals_fused_batch_folded_on_the_video_shape(num_directions):
    """ZigMa-XS width, a temporal layer of 64 videos: 64 segments of 8 frames. fp32: packed and batch-folded agree
    closely; bf16 autocast: packed is within bf16's tolerance of the fp32 result (2e-2, as benchmarks/gpu_mixer.py),
    or at most twice as far from it as batch-folded (the two round differently)."""
    torch.manual_seed(0)
    batch = MambaMixer(256, num_directions=num_directions, backend="fused", segment_layout="batch", device="cuda")
    packed = MambaMixer(256, num_directions=num_directions, backend="fused", segment_layout="packed", device="cuda")
    packed.load_state_dict(batch.state_dict())
    x = torch.randn(64, 64 * 8, 256, device="cuda")
    weight = torch.randn(x.shape, device="cuda")
    index = [torch.randperm(512, device="cuda")] if num_directions == 2 else None
    kw = {"segments": 64, "branch_index": index}
    out32, g32 = cuda_grads(batch, x, weight, False, **kw)
    out_p, g_p = cuda_grads(packed, x, weight, False, **kw)
    assert rel_err(out_p, out32) < 1e-4
    for name, g in g32.items():
        assert rel_err(g_p[name], g) < 1e-4, name
    out_b16, g_b16 = cuda_grads(batch, x, weight, True, **kw)
    out_p16, g_p16 = cuda_grads(packed, x, weight, True, **kw)
    assert rel_err(out_p16, out32) <= max(2 * rel_err(out_b16, out32), 2e-2)
    for name, g in g32.items():
        assert rel_err(g_p16[name], g) <= max(2 * rel_err(g_b16[name], g), 2e-2), name


@pytest.mark.gpu
@needs_fused
def test_fused_packed_state_resets_exactly_in_the_kernel():
    torch.manual_seed(0)
    mixer = MambaMixer(256, backend="fused", segment_layout="packed", device="cuda")
    with torch.no_grad():
        mixer.A_log.fill_(math.log(1e-3))  # slow decay: a leak across a separator would show
    x = torch.randn(4, 8 * 64, 256, device="cuda")
    changed = x.clone()
    changed[:, 2 * 64:3 * 64] = torch.randn(4, 64, 256, device="cuda")
    out, out_changed = mixer(x, segments=8), mixer(changed, segments=8)
    assert torch.equal(out[:, 3 * 64:], out_changed[:, 3 * 64:])
    assert torch.equal(out[:, :2 * 64], out_changed[:, :2 * 64])
    assert not torch.equal(out[:, 2 * 64:3 * 64], out_changed[:, 2 * 64:3 * 64])
