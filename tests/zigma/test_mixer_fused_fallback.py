"""The fused path without causal-conv1d (torch conv + the scan kernel) computes the same function."""

import pytest
import torch

from zigma.mixer import MambaMixer, fused, selective_scan_ref


@pytest.fixture
def no_causal_conv1d(monkeypatch):
    """Stand in for mamba-ssm's selective_scan_fn with the reference scan (same signature) on CPU."""
    kernels = {"mamba_inner_fn": None, "selective_scan_fn": selective_scan_ref, "causal_conv1d_fn": None}
    monkeypatch.setattr(fused, "_import", lambda: (kernels, ""))


@pytest.mark.parametrize("directions", [1, 2])
def test_fused_path_without_causal_conv1d_matches_the_reference_mixer(no_causal_conv1d, directions):
    torch.manual_seed(0)
    mixer = MambaMixer(32, d_state=8, num_directions=directions, backend="reference").double()
    x = torch.randn(2, 37, 32, dtype=torch.float64)
    ref = mixer(x)
    y_unidir = fused.mamba_forward(mixer, x) if directions == 1 else None
    xz = mixer.in_proj(x)
    y_branch = fused.ssm_branch(xz, mixer.conv1d, mixer.x_proj, mixer.dt_proj, mixer.A_log, mixer.D)
    ref_branch = __import__("zigma.mixer.mamba", fromlist=["_reference_branch"])._reference_branch(
        xz, mixer.conv1d, mixer.x_proj, mixer.dt_proj, mixer.A_log, mixer.D)
    torch.testing.assert_close(y_branch, ref_branch, rtol=1e-9, atol=1e-10)
    if y_unidir is not None:
        torch.testing.assert_close(y_unidir, ref, rtol=1e-9, atol=1e-10)
