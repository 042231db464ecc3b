"""The parallel selective scan equals the step-by-step fp64 loop on outputs and every gradient."""

import functools

import pytest
import torch

import zigma.mixer.selective_scan as scan_module
from zigma.mixer import selective_scan_naive, selective_scan_ref


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (b the reference)."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def make_inputs(batch, width, d_state, length, *, gate, skip, dtype, seed=0, dt_shift=0.0):
    """Random scan inputs (mamba-ssm layout) with requires_grad; A < 0 like every Mamba layer."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    t = {"u": r(batch, width, length), "delta": r(batch, width, length) * 0.5 + dt_shift,
         "A": -torch.rand(width, d_state, generator=g, dtype=torch.float64) * 4 - 0.1,
         "B": r(batch, d_state, length), "C": r(batch, d_state, length), "delta_bias": r(width) * 0.5}
    if skip:
        t["D"] = r(width)
    if gate:
        t["z"] = r(batch, width, length)
    return {k: v.to(dtype).requires_grad_() for k, v in t.items()}


def run(fn, inputs, grad_out):
    """Output and gradients of every input."""
    out = fn(**inputs, delta_softplus=True)
    grads = torch.autograd.grad(out, list(inputs.values()), grad_out.to(out.dtype))
    return out, dict(zip(inputs, grads))


CASES = [  # batch, width, d_state, length, gate, skip
    (1, 3, 1, 1, False, False),
    (2, 5, 4, 7, True, True),
    (3, 8, 16, 64, True, False),
    (2, 4, 8, 100, False, True),
    (1, 16, 16, 129, True, True),
    (4, 6, 3, 250, False, False),
]


SCANS = {"steps": (scan_module._scan_steps, scan_module._scan_steps_reverse),  # CPU, large steps
         "halve-2-then-steps": (functools.partial(scan_module._scan_bk, levels=2),  # CPU, small steps
                                functools.partial(scan_module._scan_bk_reverse, levels=2)),
         "brent-kung": (scan_module._scan_bk, scan_module._scan_bk_reverse)}  # other devices


def use(monkeypatch, *, scan="steps", chunk=None, keep=None):
    """Force the within-chunk scan, the tokens per chunk and the chunk elements kept for the backward."""
    monkeypatch.setattr(scan_module, "_scans", lambda device, step: SCANS[scan])
    if chunk is not None:
        monkeypatch.setattr(scan_module, "_chunk_len", lambda *args: chunk)
    if keep is not None:
        monkeypatch.setattr(scan_module, "_keep_budget", lambda device: keep)


@pytest.mark.parametrize("keep", ["none", "half", "all"])
@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("chunk", [None, 7, 16])
@pytest.mark.parametrize("batch,width,d_state,length,gate,skip", CASES)
def test_reference_scan_matches_the_loop_in_fp64_on_outputs_and_all_gradients(monkeypatch, batch, width, d_state,
                                                                              length, gate, skip, chunk, scan, keep):
    # chunk: force several chunks (lengths 7..250 are not multiples of 7 or 16); keep: the backward recomputes
    # every chunk, the later half of them, or none
    tokens = chunk or length
    per_chunk = 2 * batch * tokens * width * d_state  # decays and states of one chunk
    budget = {"none": 0, "half": per_chunk * max(1, -(-length // tokens) // 2), "all": 2**62}[keep]
    use(monkeypatch, scan=scan, chunk=chunk, keep=budget)
    inputs = make_inputs(batch, width, d_state, length, gate=gate, skip=skip, dtype=torch.float64)
    grad_out = torch.randn(batch, width, length, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out_ref, g_ref = run(selective_scan_ref, inputs, grad_out)
    out_loop, g_loop = run(selective_scan_naive, inputs, grad_out)
    assert out_ref.dtype == torch.float64
    assert rel_err(out_ref, out_loop) < 1e-6
    for name in inputs:
        assert rel_err(g_ref[name], g_loop[name]) < 1e-6, name


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("batch,width,d_state,length,gate,skip", CASES)
def test_reference_scan_in_fp32_is_within_1e4_of_the_fp64_loop(monkeypatch, batch, width, d_state, length, gate,
                                                               skip, scan):
    use(monkeypatch, scan=scan, chunk=16)
    exact = make_inputs(batch, width, d_state, length, gate=gate, skip=skip, dtype=torch.float64)
    single = {k: v.detach().float().requires_grad_() for k, v in exact.items()}
    grad_out = torch.randn(batch, width, length, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out32, g32 = run(selective_scan_ref, single, grad_out)
    out64, g64 = run(selective_scan_naive, exact, grad_out)
    assert out32.dtype == torch.float32
    assert rel_err(out32, out64) < 1e-4
    for name in exact:
        assert rel_err(g32[name], g64[name]) < 1e-4, name


def test_reference_scan_of_2k_tokens_with_slow_decay_matches_the_loop():
    inputs = make_inputs(1, 4, 4, 2048, gate=True, skip=True, dtype=torch.float64, dt_shift=-6.0)
    grad_out = torch.randn(1, 4, 2048, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out_ref, g_ref = run(selective_scan_ref, inputs, grad_out)
    out_loop, g_loop = run(selective_scan_naive, inputs, grad_out)
    assert rel_err(out_ref, out_loop) < 1e-6
    for name in inputs:
        assert rel_err(g_ref[name], g_loop[name]) < 1e-6, name


@pytest.mark.parametrize("scan", SCANS)
def test_reference_scan_of_16k_tokens_with_large_steps_is_finite_and_exact_in_fp32(monkeypatch, scan):
    # dt ~ 20 and |A| >= 0.1: every decay exp(dt A) underflows towards 0 quickly; 1/decay would overflow.
    use(monkeypatch, scan=scan, keep=0)  # the backward recomputes the chunks' decays
    inputs = make_inputs(2, 8, 16, 16384, gate=True, skip=True, dtype=torch.float32, dt_shift=20.0)
    out, grads = run(selective_scan_ref, inputs, torch.ones(2, 8, 16384))
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads.values())
    # the state forgets within a few steps, so the last 64 tokens need only a short window of history
    window = {k: (v.detach()[..., -96:] if v.dim() == 3 else v.detach()).double() for k, v in inputs.items()}
    tail = selective_scan_naive(**window, delta_softplus=True)[..., -64:]
    assert rel_err(out.detach()[..., -64:], tail) < 1e-4


def test_reference_scan_without_autograd_equals_the_one_that_records(monkeypatch):
    inputs = make_inputs(2, 8, 4, 40, gate=True, skip=True, dtype=torch.float32)
    use(monkeypatch, chunk=16)  # keeps chunks only while autograd records
    with torch.no_grad():
        plain = selective_scan_ref(**inputs, delta_softplus=True)
    assert torch.equal(plain, selective_scan_ref(**inputs, delta_softplus=True))


def test_reference_scan_keeps_bf16_inputs_in_bf16_and_computes_in_fp32():
    inputs = make_inputs(2, 8, 4, 33, gate=True, skip=True, dtype=torch.float64)
    bf16 = {k: v.detach().bfloat16() for k, v in inputs.items()}
    out = selective_scan_ref(**bf16, delta_softplus=True)
    exact = selective_scan_naive(**{k: v.double() for k, v in bf16.items()}, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    assert rel_err(out, exact) < 1e-2
