"""The one hookspec module of zigma-harness.

Every hook is `register_<kind>(register)`. A plugin implements any of them with `@hookimpl` and calls
`register(Entry(...))` once per component. `register` accepts exactly one entry of the type named in the
hook's docstring (see plugins/specs.py) and raises DuplicateNameError if another plugin already used the name.

A third-party plugin is a module listed in the `zigma_harness` entry-point group:

    [project.entry-points.zigma_harness]
    my_scans = "my_package.scans"
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from .specs import (
    BackboneEntry,
    DatasetEntry,
    InterpolantEntry,
    MetricEntry,
    MixerEntry,
    SamplerEntry,
    ScanEntry,
    TextEncoderEntry,
)

PROJECT = "zigma_harness"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_scans(register: Callable[[ScanEntry], None]) -> None:
    """Register scan schemes: register(ScanEntry(name="zigzag-8", description=..., build=lambda seed: ...))."""


@hookspec
def register_mixers(register: Callable[[MixerEntry], None]) -> None:
    """Register token mixers: register(MixerEntry(name="mamba2", description=..., build=..., options=...)).

    A study picks one with `backbone.mixer` (a name, or {name: ..., <option>: ...} validated by `options`);
    backbones with `uses_mixer` build every layer's mixer with it."""


@hookspec
def register_backbones(register: Callable[[BackboneEntry], None]) -> None:
    """Register backbones: register(BackboneEntry(name="zigma", description=..., build=...))."""


@hookspec
def register_interpolants(register: Callable[[InterpolantEntry], None]) -> None:
    """Register interpolant paths: register(InterpolantEntry(name="linear", description=..., build=...))."""


@hookspec
def register_samplers(register: Callable[[SamplerEntry], None]) -> None:
    """Register samplers: register(SamplerEntry(name="dopri5", kind="ode", description=..., build=...))."""


@hookspec
def register_datasets(register: Callable[[DatasetEntry], None]) -> None:
    """Register datasets: register(DatasetEntry(name="digits", description=..., load=..., options=...))."""


@hookspec
def register_metrics(register: Callable[[MetricEntry], None]) -> None:
    """Register metrics: register(MetricEntry(name="fd-effnet", description=..., build=..., label=...))."""


@hookspec
def register_text_encoders(register: Callable[[TextEncoderEntry], None]) -> None:
    """Register text encoders: register(TextEncoderEntry(name="token-embedding", description=..., build=...))."""
