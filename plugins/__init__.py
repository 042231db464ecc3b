"""Built-in pluggy plugins and the plugin system of zigma-harness.

Third-party plugins: `from plugins import hookimpl` and the entry types in `plugins.specs`.
"""

from .errors import HarnessError
from .hookspecs import hookimpl
from .registry import load_registries
from .specs import (
    BackboneEntry,
    DataBundle,
    DataInfo,
    DatasetEntry,
    InterpolantEntry,
    MetricEntry,
    MixerEntry,
    SamplerEntry,
    ScanEntry,
    TextEncoderEntry,
)

__all__ = [
    "hookimpl", "load_registries", "HarnessError", "ScanEntry", "MixerEntry", "BackboneEntry", "InterpolantEntry",
    "SamplerEntry", "DatasetEntry", "MetricEntry", "TextEncoderEntry", "DataBundle", "DataInfo",
]
