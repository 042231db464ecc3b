"""Built-in plugin: metrics. Maths in zigma.metrics; extractors, caching and metric classes in plugins/_metrics."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from ._metrics.cond_accuracy import CondAccuracy, CondAccuracyOptions
from ._metrics.cost import count_params, flops  # noqa: F401 - public: harness costs use them
from ._metrics.features import EffNetLite0
from ._metrics.frechet import (
    EffNetOptions,
    FeatureMetricOptions,
    FrechetMetric,
    KIDMetric,
    KIDOptions,
    TemporalFrechetMetric,
)
from ._metrics.inception import DEFAULT_DEST as INCEPTION_DEST  # noqa: F401 - public: `harness fid prefetch`
from ._metrics.inception import ENV_VAR as INCEPTION_ENV_VAR  # noqa: F401
from ._metrics.inception import WEIGHTS_NAME as INCEPTION_WEIGHTS_NAME  # noqa: F401
from ._metrics.inception import WEIGHTS_URL as INCEPTION_WEIGHTS_URL  # noqa: F401
from .errors import MissingDependencyError
from .hookspecs import hookimpl
from .specs import MetricEntry


class FIDOptions(FeatureMetricOptions):
    weights_path: str | None = None    # inception-2015-12-05.pt (else $ZIGMA_HARNESS_INCEPTION_WEIGHTS)
    batch_size: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _weights_exist(self) -> FIDOptions:
        """Missing weights fail at `harness validate`, before any training (no network, clean-fid untouched)."""
        from ._metrics.inception import resolve_weights

        try:
            resolve_weights(self.weights_path)
        except MissingDependencyError as exc:
            raise ValueError(str(exc)) from None
        return self


def build_fd_effnet(**options) -> FrechetMetric:
    o = EffNetOptions(**options)
    return FrechetMetric("fd-effnet", EffNetLite0(o.input_size), o, label="FD-EffNetLite0")


def build_kid(**options) -> KIDMetric:
    o = KIDOptions(**options)
    return KIDMetric("kid", EffNetLite0(o.input_size), o, label="KID-EffNetLite0")


def build_frame_fd(**options) -> FrechetMetric:
    o = EffNetOptions(**options)
    return FrechetMetric("frame-fd", EffNetLite0(o.input_size), o, label="FD-EffNetLite0 per frame", per_frame=True)


def build_temporal_fd(**options) -> TemporalFrechetMetric:
    o = EffNetOptions(**options)
    return TemporalFrechetMetric("temporal-fd", EffNetLite0(o.input_size), o,
                                 label="FD-EffNetLite0 of frame changes", per_frame=True)


def build_fid(**options) -> FrechetMetric:
    """Fails here — at validation, before clean-fid or the network is touched — when the weights are absent."""
    from ._metrics.inception import CleanInception, resolve_weights

    weights = resolve_weights(options.get("weights_path"))     # MissingDependencyError, one line
    o = FIDOptions(**options)
    return FrechetMetric("fid", CleanInception(weights), o, label="FID (clean-fid)")


def build_cond_accuracy(**options) -> CondAccuracy:
    return CondAccuracy(CondAccuracyOptions(**options))


@hookimpl
def register_metrics(register):
    """fd-effnet, kid, fid, frame-fd, temporal-fd, cond-accuracy."""
    register(MetricEntry(
        name="fd-effnet", min_samples=2, bounds=(0.0, None), label="FD-EffNetLite0", modality="image",
        build=build_fd_effnet, options=EffNetOptions,
        description="Fréchet distance on ImageNet EfficientNet-Lite0 pooled features (offline; not FID)"))
    register(MetricEntry(
        name="kid", min_samples=2, bounds=(0.0, None), label="KID-EffNetLite0", modality="image", build=build_kid,
        options=KIDOptions,
        description="kernel (poly-3 MMD^2) distance on the same EfficientNet-Lite0 features"))
    register(MetricEntry(
        name="fid", min_samples=2, bounds=(0.0, None), label="FID", modality="image", build=build_fid,
        options=FIDOptions,
        description="clean-fid Inception FID; needs inception-2015-12-05.pt (weights_path or "
                    "ZIGMA_HARNESS_INCEPTION_WEIGHTS)"))
    register(MetricEntry(
        name="frame-fd", min_samples=2, bounds=(0.0, None), label="FD-EffNetLite0 per frame", modality="video",
        build=build_frame_fd, options=EffNetOptions, description="fd-effnet over all frames of generated vs real videos"))
    register(MetricEntry(
        name="temporal-fd", min_samples=2, min_frames=2, bounds=(0.0, None), label="FD-EffNetLite0 of frame changes",
        modality="video", build=build_temporal_fd, options=EffNetOptions,
        description="fd-effnet of the frame-to-frame feature changes f(t+1) - f(t) of generated vs real videos: "
                    "sees a video that does not hold its content across frames, which frame-fd cannot (not FVD)"))
    register(MetricEntry(
        name="cond-accuracy", label="cond. accuracy", modality="image", higher_is_better=True,
        bounds=(0.0, 1.0), build=build_cond_accuracy, options=CondAccuracyOptions,
        description="fraction of samples whose colour, shape and position (classifier on real data) match "
                    "their conditioning"))


def download_inception_weights(dest: Path) -> Path:
    """Fetch clean-fid's Inception weights to `dest` (`harness fid prefetch`); one clear line when it fails."""
    from ._metrics import inception

    return inception.download_weights(dest)


def feature_modules() -> tuple:
    """The modules whose global `extract_features` every feature metric calls (a profiler may wrap it there)."""
    from ._metrics import frechet, reference

    return frechet, reference


def clear_fake_feature_cache() -> None:
    """Forget the features of generated samples kept between metrics of one trial (benchmarks repeat samples)."""
    from ._metrics import frechet

    frechet._FAKE_FEATURES.clear()
