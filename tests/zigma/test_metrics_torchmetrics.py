"""Our FD and KID maths against torchmetrics' FrechetInceptionDistance / KernelInceptionDistance, an independent
implementation, fed the same features through an identity feature extractor."""

from __future__ import annotations

import pytest
import torch

from zigma.metrics import frechet_distance_features, kernel_distance

pytest.importorskip("torchmetrics")


class _Features(torch.nn.Module):
    """Identity 'extractor': the update() inputs are already features (N, D)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.num_features = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _features(n1: int, n2: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    real = torch.randn(n1, d, generator=g, dtype=torch.float64) @ mix
    fake = torch.randn(n2, d, generator=g, dtype=torch.float64) @ mix * 1.3 + 0.4
    return real, fake


@pytest.mark.parametrize(("n1", "n2", "d"), [(400, 300, 16), (40, 30, 64)])
def test_frechet_distance_equals_torchmetrics_fid_on_the_same_features(n1, n2, d):
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = _features(n1, n2, d)
    fid = FrechetInceptionDistance(feature=_Features(d), normalize=True)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    ours = frechet_distance_features(real.numpy(), fake.numpy())
    assert ours == pytest.approx(fid.compute().item(), rel=1e-6)


def test_kernel_distance_on_full_subsets_equals_torchmetrics_kid():
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = _features(60, 60, 16)
    kid = KernelInceptionDistance(feature=_Features(16), subsets=1, subset_size=60, normalize=True)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    mean, _ = kid.compute()            # degree 3, gamma 1/D, coef 1: the KID paper's kernel, as ours
    ours, _, m = kernel_distance(real.numpy(), fake.numpy(), num_subsets=1, subset_size=60)
    assert m == 60 and ours == pytest.approx(mean.item(), rel=1e-9)
