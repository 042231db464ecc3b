"""What each `register_*` hook accepts: one frozen entry type per component kind.

Every entry carries a kebab-case `name` (its registry key, spelled once) and a one-line `description`.
`options` (a pydantic model with extra="forbid", or None) validates the keyword options a study file may
give for that component; the harness validates them with the dotted key path before any work starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from pydantic import BaseModel

__all__ = [
    "ScanEntry", "MixerEntry", "BackboneEntry", "InterpolantEntry", "SamplerEntry", "DatasetEntry", "MetricEntry",
    "TextEncoderEntry", "DataInfo", "DataBundle", "Metric", "MetricContext", "Sampler", "KINDS",
    "option_values", "validated_options",
]

_KEBAB = re.compile(r"^[a-z0-9]+(?:[-.][a-z0-9]+)*$")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _KEBAB.match(name):
        raise ValueError(f"component names are kebab-case (e.g. 'zigzag-8'), got {name!r}")


@dataclass(frozen=True)
class _Entry:
    name: str
    description: str

    def __post_init__(self) -> None:
        _check_name(self.name)


@dataclass(frozen=True)
class ScanEntry(_Entry):
    """build(seed=int) -> zigma.scans.ScanScheme. `modality`: 'image', 'video' or 'any'; left at 'any', it is the
    built scheme's own `modality` (zigma.scans.ScanScheme.modality), so a scheme that says 'video' is one."""

    build: Callable[..., Any] = None  # type: ignore[assignment]
    modality: str = "any"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.modality not in ("image", "video", "any"):
            raise ValueError(f"scan {self.name!r}: modality is 'image', 'video' or 'any', got {self.modality!r}")
        if self.modality == "any" and callable(self.build):
            try:
                own = getattr(self.build(seed=0), "modality", "any")
            except Exception:  # noqa: BLE001 - a scheme that cannot be built here fails later, named, in validate
                own = "any"
            object.__setattr__(self, "modality", own if own in ("image", "video") else "any")


@dataclass(frozen=True)
class MixerEntry(_Entry):
    """build(d_model, *, num_directions, backend, layer_idx, generator, d_conv, expand, [d_state], device, dtype,
    **options) -> nn.Module, a token mixer (B, L, D) -> (B, L, D) with `forward(x, *, segments=1,
    branch_index=None)`: `segments` equal independent sequences; for directions k >= 1 of a multi-direction layer
    (num_directions = K), branch_index[k-1] is a (L,) LongTensor (direction k reads x[:, idx]) or None for the
    reversed sequence, and the output is in x's order. `backend` is 'auto', 'fused' or 'reference'; asking for
    'fused' where its kernels are missing raises zigma.mixer.FusedUnavailableError. d_state is passed only when
    the study sets it. An optional `flops(batch, length) -> int` method (MACs) is used by zigma's FLOP count.
    """

    build: Callable[..., torch.nn.Module] = None  # type: ignore[assignment]
    options: type[BaseModel] | None = None


@dataclass(frozen=True)
class BackboneEntry(_Entry):
    """build(*, size, input_shape, patch_size, scan, num_classes, context_dim, device, dtype, **options) -> nn.Module.

    The module's forward is `forward(x, t, *, y=None, context=None, context_mask=None)` and returns x's shape.
    `uses_scan`: False for attention backbones (the study's scan is ignored and recorded as 'n/a').
    `uses_mixer`: build also takes `mixer=` (a MixerEntry's build with its options bound, from backbone.mixer);
    for other backbones the study's mixer is ignored.
    """

    build: Callable[..., torch.nn.Module] = None  # type: ignore[assignment]
    options: type[BaseModel] | None = None
    uses_scan: bool = True
    uses_mixer: bool = False


@dataclass(frozen=True)
class InterpolantEntry(_Entry):
    """build() -> zigma.interpolants path object (alpha_t, sigma_t and derivatives)."""

    build: Callable[[], Any] = None  # type: ignore[assignment]


class Sampler(Protocol):
    """Optionally also `check(transport)`: raise ValueError where the sampler cannot run on that transport (a field
    not finite at a time it evaluates); `harness validate` calls it for every trial when present."""

    def sample(self, transport: Any, model_fn: Callable, x0: torch.Tensor, *, seeds: Sequence[int]) -> Any:
        """Integrate from noise x0 (t=0) to data (t=1); returns zigma.interpolants.SampleResult."""


@dataclass(frozen=True)
class SamplerEntry(_Entry):
    """build(**options) -> Sampler. `kind`: 'ode' or 'sde'."""

    build: Callable[..., Sampler] = None  # type: ignore[assignment]
    options: type[BaseModel] | None = None
    kind: str = "ode"


@dataclass(frozen=True)
class DataInfo:
    """What a model and a metric need to know about a dataset."""

    name: str
    channels: int
    height: int
    width: int
    frames: int | None = None          # None for images
    num_classes: int | None = None     # None when unlabelled
    class_names: tuple[str, ...] = ()  # each class's name, in label order, when the data knows them
    captions: bool = False             # items carry a 'caption' string
    vocab: tuple[str, ...] = ()        # caption vocabulary, when captions
    num_train: int = 0
    source: str = ""                   # where the data came from (path, package), for provenance
    fingerprint: str = ""              # content hash of the data as loaded

    @property
    def shape(self) -> tuple[int, ...]:
        chw = (self.channels, self.height, self.width)
        return chw if self.frames is None else (self.frames, *chw)


@dataclass(frozen=True)
class DataBundle:
    """train: a torch Dataset whose items are dicts with 'x' (float in [-1, 1], shape info.shape) and,
    when present, 'y' (int64 label) and 'caption' (str).
    reference(n, seed) -> uint8 tensor (n, *info.shape) of real held-out data for metrics.
    """

    info: DataInfo
    train: torch.utils.data.Dataset
    reference: Callable[..., torch.Tensor]
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetEntry(_Entry):
    """load(options) -> DataBundle, where options is an instance of `options` (required)."""

    load: Callable[[Any], DataBundle] = None  # type: ignore[assignment]
    options: type[BaseModel] | None = None
    modality: str = "image"


@dataclass(frozen=True)
class MetricContext:
    data: DataBundle
    device: torch.device
    cache_dir: str                     # reference statistics are cached here under a content hash
    labels: torch.Tensor | None = None   # the conditioning used for each fake sample, when any
    captions: Sequence[str] | None = None
    progress: bool = True


class Metric(Protocol):
    name: str

    def compute(self, fake: torch.Tensor, ctx: MetricContext) -> dict[str, Any]:
        """fake: uint8 (N, *info.shape). Returns {metric_name: float, ...} plus provenance
        keys prefixed 'meta.' (implementation, extractor, num_samples, reference hash)."""


@dataclass(frozen=True)
class MetricEntry(_Entry):
    """build(**options) -> Metric. `label` is how tables title it; `higher_is_better` sets the arrow. `modality`:
    'image' or 'video' (the samples it scores; validate checks the dataset's) or 'any'."""

    build: Callable[..., Metric] = None  # type: ignore[assignment]
    options: type[BaseModel] | None = None
    label: str = ""
    higher_is_better: bool = False
    modality: str = "any"
    min_samples: int = 1               # fewest samples it is defined on (a covariance needs 2); validate checks
    min_frames: int = 1                # a video metric's fewest frames a video (frame changes need 2); validate checks
    bounds: tuple[float | None, float | None] = (None, None)  # the values it can take (a fraction: (0, 1)); plots
                                                            # clip error bars there


@dataclass(frozen=True)
class TextEncoderEntry(_Entry):
    """build(*, vocab, max_length, device, dtype, **options) -> nn.Module with
    encode(captions: list[str]) -> (tokens (N, S, D), mask (N, S) bool) and attribute `dim` = D.
    `trainable`: its parameters are trained with the backbone."""

    build: Callable[..., torch.nn.Module] = None  # type: ignore[assignment]
    options: type[BaseModel] | None = None
    trainable: bool = True


#: kind -> (hook name, entry type, human label). The registry and `harness ls` are generated from this.
KINDS: dict[str, tuple[str, type, str]] = {
    "scans": ("register_scans", ScanEntry, "scan"),
    "mixers": ("register_mixers", MixerEntry, "mixer"),
    "backbones": ("register_backbones", BackboneEntry, "backbone"),
    "interpolants": ("register_interpolants", InterpolantEntry, "interpolant"),
    "samplers": ("register_samplers", SamplerEntry, "sampler"),
    "datasets": ("register_datasets", DatasetEntry, "dataset"),
    "metrics": ("register_metrics", MetricEntry, "metric"),
    "text-encoders": ("register_text_encoders", TextEncoderEntry, "text encoder"),
}


def validated_options(entry: Any, raw: dict[str, Any]) -> BaseModel | None:
    """An entry's options validated by its own schema (defaults filled in); None when it has no schema."""
    return entry.options.model_validate(raw) if entry.options is not None else None


def option_values(entry: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """An entry's options as keyword arguments: validated (defaults filled in), or as given when it has no schema."""
    options = validated_options(entry, raw)
    return options.model_dump() if options is not None else dict(raw)
