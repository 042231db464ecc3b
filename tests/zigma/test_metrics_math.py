"""zigma.metrics: Fréchet distance and KID against independent references (scipy sqrtm, pairwise sums)."""

import numpy as np
import pytest
import torch
from scipy import linalg

from zigma.metrics import (
    feature_stats,
    frechet_distance,
    frechet_distance_features,
    kernel_distance,
    polynomial_mmd2,
)


def _scipy_frechet(mu1, s1, mu2, s2):
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _pairwise_mmd2(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / D + 1)^3, summed pair by pair (KID, Binkowski et al. 2018)."""
    def k(a, b):
        return (a @ b / x.shape[1] + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return xx + yy - 2 * sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)


def test_frechet_distance_matches_the_scipy_sqrtm_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 16))
    b = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16)) * 0.5 + 0.3
    sa, sb = feature_stats(a), feature_stats(b)
    ours = frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    assert ours == pytest.approx(_scipy_frechet(sa.mu, sa.sigma, sb.mu, sb.sigma), rel=1e-9)


def test_frechet_distance_of_identical_statistics_is_zero():
    rng = np.random.default_rng(1)
    s = feature_stats(rng.normal(size=(100, 64)))   # rank-deficient: N < D
    assert abs(frechet_distance(s.mu, s.sigma, s.mu, s.sigma)) < 1e-9 * np.trace(s.sigma)


def test_frechet_distance_is_exact_for_rank_deficient_commuting_covariances():
    a, b = np.array([4.0, 0.0, 1.0, 0.0]), np.array([1.0, 9.0, 0.0, 0.0])
    mu1, mu2 = np.zeros(4), np.array([1.0, 0.0, 2.0, 0.0])
    expected = 1.0 + 4.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n1, n2", [(20, 30), (30, 20), (50, 80)])
def test_frechet_distance_from_features_equals_the_covariance_route(n1, n2):
    rng = np.random.default_rng(n1)
    a, b = rng.normal(size=(n1, 40)), rng.normal(size=(n2, 40)) * 1.5 + 0.2       # N < D: SVD route; else eigh
    sa, sb = feature_stats(a), feature_stats(b)
    assert frechet_distance_features(a, b) == pytest.approx(frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma),
                                                            rel=1e-10)
    assert abs(frechet_distance_features(a, a)) < 1e-10


def test_feature_stats_accept_torch_tensors_and_match_numpy():
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    s = feature_stats(x)
    np.testing.assert_allclose(s.mu, x.double().mean(0).numpy(), atol=1e-12)
    np.testing.assert_allclose(s.sigma, np.cov(x.double().numpy(), rowvar=False), atol=1e-12)
    assert s.num_samples == 50


def test_polynomial_mmd2_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(9, 5)) + 0.2
    assert polynomial_mmd2(x, y) == pytest.approx(_pairwise_mmd2(x, y), rel=1e-10)


def test_kernel_distance_clips_the_subset_size_to_the_sample_count():
    # 30 samples vs 50 identical ones: a clipped subset of 30 is all of x (in some order) and 30 copies of y's
    # row, so every subset's MMD^2 is the pairwise value below and the spread is 0; any other size is not
    rng = np.random.default_rng(0)
    x, row = rng.normal(size=(30, 8)), rng.normal(size=8) + 0.5
    mean, std, m = kernel_distance(x, np.tile(row, (50, 1)), num_subsets=5, subset_size=1000)
    assert m == 30
    assert mean == pytest.approx(_pairwise_mmd2(x, np.tile(row, (30, 1))), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_between_two_gaussians_equals_the_value_worked_out_by_hand():
    # S1 = [[2, 1], [1, 2]] (eigenvalues 3, 1), S2 = 4 I: tr (S1 S2)^(1/2) = 2 (sqrt 3 + 1);
    # ||mu1 - mu2||^2 = 1 + 4; FD = 5 + 4 + 8 - 4 (sqrt 3 + 1)
    s1, s2 = np.array([[2.0, 1.0], [1.0, 2.0]]), 4.0 * np.eye(2)
    fd = frechet_distance(np.array([0.0, 0.0]), s1, np.array([1.0, -2.0]), s2)
    assert fd == pytest.approx(17.0 - 4.0 * (np.sqrt(3.0) + 1.0), abs=1e-12)


def test_kernel_distance_with_full_subsets_equals_one_unbiased_mmd():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 8)), rng.normal(size=(20, 8)) + 1.0
    mean, std, _ = kernel_distance(x, y, num_subsets=3, subset_size=20)
    assert mean == pytest.approx(polynomial_mmd2(x, y), rel=1e-12)   # subsets are permutations of all samples
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kernel_distance_is_reproducible_from_its_seed():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 8)), rng.normal(size=(60, 8))
    assert kernel_distance(x, y, num_subsets=4, subset_size=10, seed=3) == \
        kernel_distance(x, y, num_subsets=4, subset_size=10, seed=3)
    assert kernel_distance(x, y, num_subsets=4, subset_size=10, seed=3) != \
        kernel_distance(x, y, num_subsets=4, subset_size=10, seed=4)


def test_kernel_distance_is_the_mean_and_population_std_over_the_documented_subsets():
    """Oracle: the subsets drawn as the docstring says (numpy default_rng(seed), without replacement, the first set's
    then the second's), each scored by the pairwise MMD^2 written out above; std over subsets with ddof 0, as
    clean-fid's KID and torchmetrics (unbiased=False) report it."""
    g = np.random.default_rng(7)
    x, y = g.normal(size=(12, 4)), g.normal(0.5, 1.0, size=(9, 4))
    rng = np.random.default_rng(3)
    vals = []
    for _ in range(6):
        ix, iy = rng.choice(12, 5, replace=False), rng.choice(9, 5, replace=False)
        vals.append(_pairwise_mmd2(x[ix], y[iy]))
    mean, std, m = kernel_distance(x, y, num_subsets=6, subset_size=5, seed=3)
    assert m == 5 and mean == pytest.approx(np.mean(vals), rel=1e-10)
    assert std == pytest.approx(np.std(vals, ddof=0), rel=1e-10) and std != pytest.approx(np.std(vals, ddof=1))
