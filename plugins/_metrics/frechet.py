"""Distribution metrics on extractor features: Fréchet distance (fd-effnet, frame-fd, temporal-fd, fid) and KID."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from zigma.metrics import frechet_distance_features, kernel_distance

from .._data.common import fingerprint
from ..specs import MetricContext
from .features import extract_features
from .reference import num_reference, reference_features

__all__ = ["EffNetOptions", "FeatureMetricOptions", "FrechetMetric", "KIDMetric", "KIDOptions",
           "TemporalFrechetMetric", "frame_changes"]


class FeatureMetricOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    num_reference: int | None = Field(None, ge=2)   # real samples (None: as many as fakes, capped by the data)
    reference_seed: int = 0                          # which real samples
    batch_size: int = Field(64, ge=1)                # feature-extraction batch


class EffNetOptions(FeatureMetricOptions):
    input_size: int = Field(112, ge=32, le=512)      # images are resized to this before EfficientNet-Lite0


class KIDOptions(EffNetOptions):
    num_subsets: int = Field(100, ge=1)
    subset_size: int | None = Field(None, ge=2)      # None: min(1000, samples // 2), so subsets differ
    seed: int = 0                                    # subset draws


def _check_fake(fake: torch.Tensor, per_frame: bool, name: str) -> None:
    ndim = 5 if per_frame else 4
    if fake.dtype != torch.uint8 or fake.ndim != ndim:
        want = "(N, T, C, H, W)" if per_frame else "(N, C, H, W)"
        raise ValueError(f"{name}: expected uint8 samples {want}, got {fake.dtype} {tuple(fake.shape)}")


#: (extractor name, fingerprint of the samples) -> features; lets fd-effnet and kid share one extraction
_FAKE_FEATURES: OrderedDict[tuple[str, str], object] = OrderedDict()
_FAKE_FEATURES_MAX = 4


def _fake_features(extractor, images: torch.Tensor, ctx: MetricContext, batch_size: int, name: str):
    key = (extractor.name, fingerprint(images))
    if key not in _FAKE_FEATURES:
        _FAKE_FEATURES[key] = extract_features(extractor, images, device=ctx.device, batch_size=batch_size,
                                               progress=ctx.progress, description=f"{name} features")
        while len(_FAKE_FEATURES) > _FAKE_FEATURES_MAX:
            _FAKE_FEATURES.popitem(last=False)
    return _FAKE_FEATURES[key]


class _FeatureMetric:
    """Shared plumbing: extract fake features, fetch (cached) reference features, attach provenance."""

    implementation = ""

    def __init__(self, name: str, extractor, options: FeatureMetricOptions, *, label: str,
                 per_frame: bool = False) -> None:
        self.name, self.extractor, self.options = name, extractor, options
        self.label, self.per_frame = label, per_frame

    def _features(self, fake: torch.Tensor, ctx: MetricContext):
        _check_fake(fake, self.per_frame, self.name)
        n = num_reference(ctx, self.options.num_reference, fake.shape[0])
        ref = reference_features(ctx, self.extractor, n=n, seed=self.options.reference_seed,
                                 per_frame=self.per_frame, batch_size=self.options.batch_size)
        if list(fake.shape[1:]) != ref.key["shape"]:
            raise ValueError(f"{self.name}: samples have shape {tuple(fake.shape[1:])}, "
                             f"the reference data {tuple(ref.key['shape'])}")
        images = fake.flatten(0, 1) if self.per_frame else fake
        feats = _fake_features(self.extractor, images, ctx, self.options.batch_size, self.name)
        meta = {
            "meta.implementation": self.implementation,
            "meta.extractor": self.extractor.name,
            "meta.label": self.label,
            "meta.num_samples": int(fake.shape[0]),
            "meta.num_reference": n,
            "meta.reference_hash": ref.hash,
            "meta.reference_split": ref.key["split"],
        }
        if self.per_frame:
            meta["meta.num_frames"] = int(fake.shape[1])
        return feats, ref.feats, meta


class FrechetMetric(_FeatureMetric):
    """Fréchet distance between Gaussian fits of fake and real features."""

    implementation = "zigma.metrics.frechet_distance_features (float64; exact trace sqrt via eigh or SVD)"

    def compute(self, fake: torch.Tensor, ctx: MetricContext) -> dict[str, Any]:
        feats, ref, meta = self._features(fake, ctx)
        return {self.name: frechet_distance_features(feats, ref), **meta}


def frame_changes(feats: np.ndarray, frames: int) -> np.ndarray:
    """Per-frame features of videos in video-major order (N * T, D) -> their frame-to-frame changes
    f(x_{t+1}) - f(x_t), (N * (T - 1), D)."""
    x = np.asarray(feats).reshape(-1, frames, feats.shape[-1])                      # (N, T, D)
    return (x[:, 1:] - x[:, :-1]).reshape(-1, x.shape[-1])                           # (N * (T - 1), D)


class TemporalFrechetMetric(_FeatureMetric):
    """Fréchet distance between the frame-to-frame feature changes of fake and real videos. Frame FD scores
    frames one by one and cannot tell a video that keeps its digit from one whose every frame shows another;
    here a video that changes content between frames (or freezes while the real ones move) is far from the real
    changes. Our proxy for the temporal half of FVD, not FVD (whose I3D weights cannot be had offline)."""

    implementation = ("zigma.metrics.frechet_distance_features on per-frame feature changes f(x_{t+1}) - f(x_t) "
                      "(float64)")

    def compute(self, fake: torch.Tensor, ctx: MetricContext) -> dict[str, Any]:
        if fake.ndim == 5 and fake.shape[1] < 2:
            raise ValueError(f"{self.name}: needs videos of 2 frames or more, got {tuple(fake.shape)}")
        feats, ref, meta = self._features(fake, ctx)
        frames = fake.shape[1]
        distance = frechet_distance_features(frame_changes(feats, frames), frame_changes(ref, frames))
        return {self.name: distance, **meta}


class KIDMetric(_FeatureMetric):
    """Kernel distance: unbiased cubic-polynomial MMD^2 averaged over random subsets (std reported too)."""

    implementation = "zigma.metrics.kernel_distance (unbiased poly-3 MMD^2, subsets)"

    def compute(self, fake: torch.Tensor, ctx: MetricContext) -> dict[str, Any]:
        feats, ref, meta = self._features(fake, ctx)
        o: KIDOptions = self.options  # type: ignore[assignment]
        size = o.subset_size if o.subset_size is not None else max(2, min(1000, feats.shape[0] // 2))
        mean, std, m = kernel_distance(feats, ref, num_subsets=o.num_subsets, subset_size=size, seed=o.seed)
        return {self.name: mean, f"{self.name}.std": std, **meta, "meta.subset_size": m,
                "meta.num_subsets": o.num_subsets}
