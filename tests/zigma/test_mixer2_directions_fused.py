"""Multi-direction Mamba-2 layers on the fused kernels run each direction through mamba-ssm's split conv + SSD kernel
with its gate and without its norm (`fused.mamba2_directions_forward`), then one shared norm. On a CPU the kernel is
stood in for by a transcription of what mamba-ssm documents it to compute (`mamba_split_conv1d_scan_ref` with
rmsnorm_weight=None: silu(causal conv) of xBC, the SSD recurrence step by step here, D skip, times silu(z)); the
oracle is the reference backend's multi-direction path (token-major reversal / gather, SSD outputs summed, then
the gated norm)."""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from tests.zigma.test_mixer_directions_fused import same_function
from zigma.mixer import Mamba2Mixer, fused


def split_ref(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size, *, activation, headdim, ngroups):
    """mamba_split_conv1d_scan_combined without norm and out_proj: zxbcdt (B, L, 2E + 2GN + H) -> y * silu(z)."""
    heads = A.shape[0]
    dim = heads * headdim
    n = (conv1d_weight.shape[0] - dim) // (2 * ngroups)
    z, xbc, dt = torch.split(zxbcdt, [dim, dim + 2 * ngroups * n, heads], dim=-1)
    length = xbc.shape[1]
    width = conv1d_weight.shape[-1]
    conv = F.conv1d(xbc.transpose(1, 2), conv1d_weight[:, None], conv1d_bias, padding=width - 1,
                    groups=xbc.shape[-1])[..., :length]
    x, B, C = torch.split(F.silu(conv).transpose(1, 2), [dim, ngroups * n, ngroups * n], dim=-1)
    x = rearrange(x, "b l (h p) -> b l h p", p=headdim)
    B = rearrange(B, "b l (g n) -> b l g n", g=ngroups).repeat_interleave(heads // ngroups, dim=2)
    C = rearrange(C, "b l (g n) -> b l g n", g=ngroups).repeat_interleave(heads // ngroups, dim=2)
    dt = F.softplus(dt + dt_bias)  # (B, L, H)
    h = x.new_zeros(x.shape[0], heads, headdim, n)
    ys = []
    for t in range(length):  # h_t = exp(dt A) h_{t-1} + dt x_t B_t^T; y_t = h_t C_t + D x_t
        h = torch.exp(dt[:, t] * A)[..., None, None] * h + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None]
        ys.append((h * C[:, t, :, None]).sum(-1) + D[:, None] * x[:, t])
    y = rearrange(torch.stack(ys, dim=1), "b l h p -> b l (h p)")
    return y * F.silu(z)


@pytest.fixture
def calls(monkeypatch):
    """The SSD kernels stood in for on CPU; returns the list of split-kernel calls (one per direction)."""
    seen = []

    def split(*args, **kw):
        seen.append(kw.get("rmsnorm_weight"))
        return split_ref(*args[:5], kw["D"], kw["chunk_size"], activation=kw["activation"], headdim=kw["headdim"],
                         ngroups=kw["ngroups"])

    kernels = {"chunk_scan": None, "causal_conv1d_fn": None, "split_conv1d_scan": split}
    monkeypatch.setattr(fused, "_import_ssd", lambda: (kernels, ""))
    return seen


def _pair(num_directions, combine, ngroups):
    torch.manual_seed(0)
    kw = {"d_state": 4, "headdim": 4, "ngroups": ngroups, "chunk_size": 8, "num_directions": num_directions,
          "combine": combine, "backend": "reference"}
    ref = Mamba2Mixer(16, **kw).double()
    with torch.no_grad():  # a norm weight that is not all ones, so the shared norm's weight is checked
        ref.norm.weight.add_(torch.rand_like(ref.norm.weight))
    fast = Mamba2Mixer(16, **kw).double()
    fast.load_state_dict(ref.state_dict())
    fast.backend_used = lambda x: "fused"  # a CPU tensor on the stand-in kernels
    return ref, fast


@pytest.mark.parametrize(("num_directions", "gathered", "combine", "ngroups"),
                         [(2, False, "sum", 1), (2, False, "mean", 2), (3, True, "sum", 2), (3, True, "mean", 1)])
def test_directions_through_the_split_kernel_equal_the_reference_path(calls, num_directions, gathered, combine,
                                                                      ngroups):
    ref, fast = _pair(num_directions, combine, ngroups)
    # A = -exp(A_log) enters both paths in fp32 (as the kernels take it)
    same_function(ref, fast, length=21, width=16, gathered=gathered, rtol_out=1e-8,
                  rtol_grad=lambda name: 1e-6 if name.endswith("_log") else 1e-8)
    assert calls == [None] * num_directions  # every direction through the split kernel, none with its norm


@pytest.fixture
def per_direction_kernels(monkeypatch):
    """The per-direction path's SSD and conv on CPU: the reference chunked SSD and torch's grouped conv."""
    from zigma.mixer.ssd import ssd_chunked

    monkeypatch.setattr(fused, "ssd_scan", lambda *a, chunk_size, D, dt_bias: ssd_chunked(
        *a, chunk_size=chunk_size, D=D, dt_bias=dt_bias))
    monkeypatch.setattr(fused, "_import_causal_conv1d", lambda: None)


def test_segmented_multi_direction_layers_keep_the_per_direction_path(calls, per_direction_kernels):
    """segments > 1 (video layers) still run conv + SSD per direction: no split-kernel call."""
    ref, fast = _pair(2, "sum", 1)
    x = torch.randn(2, 24, 16, dtype=torch.float64)
    torch.testing.assert_close(fast(x, segments=3), ref(x, segments=3), rtol=1e-8, atol=1e-10)
    assert calls == []


def test_the_benchmarks_before_path_is_the_per_direction_path(calls, per_direction_kernels):
    """benchmarks/directions.py times `old_path2` as the path two-direction Mamba-2 layers took before."""
    from benchmarks.directions import old_path2

    ref, fast = _pair(2, "mean", 2)
    x = torch.randn(2, 21, 16, dtype=torch.float64)
    torch.testing.assert_close(old_path2(fast, x), ref(x), rtol=1e-8, atol=1e-10)
    assert calls == []
