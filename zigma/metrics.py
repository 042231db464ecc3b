"""Metric maths on feature vectors: Gaussian statistics, Fréchet distance, kernel (KID) distance.

Pure numpy in float64; no I/O and no global RNG (subsets are drawn from an explicit seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["FeatureStats", "feature_stats", "frechet_distance", "frechet_distance_features", "kernel_distance",
           "polynomial_mmd2"]


@dataclass(frozen=True)
class FeatureStats:
    """Mean (D,) and covariance (D, D) of N feature vectors, in float64."""

    mu: np.ndarray
    sigma: np.ndarray
    num_samples: int


def _as_array(feats: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().cpu().numpy()
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {feats.shape}")
    return feats


def feature_stats(feats: np.ndarray | torch.Tensor) -> FeatureStats:
    """(N, D) features -> mean (D,) and unbiased covariance (D, D); N >= 2."""
    x = _as_array(feats)
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {x.shape[0]}")
    mu = x.mean(axis=0)
    sigma = np.cov(x, rowvar=False)
    return FeatureStats(mu=mu, sigma=np.atleast_2d(sigma), num_samples=x.shape[0])


def _psd_eigvals(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with round-off (|w| below D * eps * max w) set to exactly 0."""
    tol = w.size * np.finfo(np.float64).eps * max(float(np.abs(w).max(initial=0.0)), 1e-300)
    return np.where(w > tol, w, 0.0)


def _sym_sqrt(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix (D, D) via eigh (round-off eigenvalues zeroed)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(_psd_eigvals(w))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}) for Gaussians with means (D,) and covariances (D, D).

    tr (S1 S2)^{1/2} is computed as the sum of sqrt-eigenvalues of the symmetric PSD matrix
    S1^{1/2} S2 S1^{1/2} (same spectrum as S1 S2), which is exact for rank-deficient covariances
    (N < D) where scipy's sqrtm needs an epsilon offset.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    assert mu1.shape == mu2.shape and s1.shape == s2.shape == (mu1.size, mu1.size), \
        f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}"
    r1 = _sym_sqrt(s1)
    m = r1 @ s2 @ r1
    tr_covmean = np.sqrt(_psd_eigvals(np.linalg.eigvalsh((m + m.T) / 2))).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def frechet_distance_features(feats1: np.ndarray | torch.Tensor, feats2: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between the Gaussian fits of feats1 (N1, D) and feats2 (N2, D); equals
    frechet_distance(feature_stats(...)) but, when both sets are smaller than D, works on N1 x N2 matrices:
    with centred data A, B, tr (S1 S2)^{1/2} is the nuclear norm of A B^T / sqrt((N1 - 1)(N2 - 1))."""
    f1, f2 = _as_array(feats1), _as_array(feats2)
    (n1, d), n2 = f1.shape, f2.shape[0]
    if max(n1, n2) >= d:
        a, b = feature_stats(f1), feature_stats(f2)
        return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a, b = f1 - mu1, f2 - mu2                                                              # (N1, D), (N2, D)
    c1, c2 = n1 - 1, n2 - 1
    sv = np.linalg.svd(a @ b.T, compute_uv=False)                                          # (min(N1, N2),)
    tr_covmean = sv.sum() / np.sqrt(c1 * c2)
    diff = mu1 - mu2
    return float(diff @ diff + (a * a).sum() / c1 + (b * b).sum() / c2 - 2.0 * tr_covmean)


def _poly_kernel(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef: float) -> np.ndarray:
    return (gamma * (x @ y.T) + coef) ** degree


def polynomial_mmd2(x: np.ndarray, y: np.ndarray, *, degree: int = 3, gamma: float | None = None,
                    coef: float = 1.0) -> float:
    """Unbiased MMD^2 between x (m, D) and y (n, D) with k(a, b) = (gamma a.b + coef)^degree, gamma = 1/D."""
    x, y = _as_array(x), _as_array(y)
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    m, n = x.shape[0], y.shape[0]
    kxx = _poly_kernel(x, x, degree, gamma, coef)
    kyy = _poly_kernel(y, y, degree, gamma, coef)
    kxy = _poly_kernel(x, y, degree, gamma, coef)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kernel_distance(feats1: np.ndarray | torch.Tensor, feats2: np.ndarray | torch.Tensor, *,
                    num_subsets: int = 100, subset_size: int = 1000, seed: int = 0,
                    degree: int = 3, gamma: float | None = None, coef: float = 1.0) -> tuple[float, float, int]:
    """KID: mean and std over `num_subsets` random subsets of the unbiased polynomial MMD^2.

    feats1 (N1, D), feats2 (N2, D). The subset size is clipped to min(N1, N2, subset_size) (>= 2).
    Subsets are drawn without replacement from numpy's Generator seeded by `seed`.
    Returns (mean, std, subset size used).
    """
    f1, f2 = _as_array(feats1), _as_array(feats2)
    m = min(f1.shape[0], f2.shape[0], subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {f1.shape[0]} and {f2.shape[0]}")
    rng = np.random.default_rng(seed)
    vals = np.array([
        polynomial_mmd2(f1[rng.choice(f1.shape[0], m, replace=False)],
                        f2[rng.choice(f2.shape[0], m, replace=False)], degree=degree, gamma=gamma, coef=coef)
        for _ in range(num_subsets)])
    return float(vals.mean()), float(vals.std()), m
