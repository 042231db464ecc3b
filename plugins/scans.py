"""Built-in plugin: every scan scheme of zigma.scans under its registry name (`build(seed) -> ScanScheme`)."""

from __future__ import annotations

from zigma import scans as zs

from .hookspecs import hookimpl
from .specs import ScanEntry

#: path families cycled layer by layer: registry prefix -> (paths(h, w), description)
_FAMILIES = {
    "zigzag": (zs.zigzag_paths, "ZigMa's continuous snakes (row/column snakes from the 4 corners)"),
    "hilbert": (zs.hilbert_paths, "generalized Hilbert curve and its symmetric images"),
    "hilbert-as-released": (zs.hilbert_as_released_paths,
                            "the official code's 'hilbert' order (rank map used as a path; discontinuous)"),
    "jpeg": (zs.jpeg_paths, "JPEG anti-diagonal zigzags from the 4 corners"),
    "spiral": (zs.spiral_paths, "centre-out spirals and their outside-in reversals"),
}
#: factorized video layer patterns: registry suffix -> pattern of spatial (s) / temporal (t) layers
_PATTERNS = {"sst": "sst", "st": "st", "stt": "stt", "ss-tt": "sstt"}
_KS = (1, 2, 4, 8)


def _entries():
    yield ScanEntry("sweep-1", "raster order, one direction, every layer",
                    build=lambda seed: zs.Sweep(1, name="sweep-1"))
    yield ScanEntry("sweep-2", "raster and reversed raster in every layer (Vim v2 bidirectional)",
                    build=lambda seed: zs.Sweep(2, name="sweep-2"))
    for prefix, (paths, what) in _FAMILIES.items():
        for k in _KS:
            name = f"{prefix}-{k}"
            yield ScanEntry(name, f"layer i scans path i mod {k}: {what}",
                            build=lambda seed, p=paths, k=k, n=name: zs.LayerCycle(p, k, name=n))
    for k in _KS:
        yield ScanEntry(f"random-{k}", f"layer i scans random permutation i mod {k}, drawn from the seed",
                        build=lambda seed, k=k: zs.RandomCycle(k, seed=seed, name=f"random-{k}"))
    for k in _KS[1:]:
        yield ScanEntry(f"parallel-{k}", f"the first {k} zigzag paths inside every layer (Parallel Mamba)",
                        build=lambda seed, k=k: zs.Parallel(zs.zigzag_paths, k, name=f"parallel-{k}"))
    for suffix, pattern in _PATTERNS.items():
        yield ScanEntry(f"video-{suffix}", f"factorized video layers '{pattern}': spatial zigzag per frame, "
                        "temporal per location alternating direction", modality="video",
                        build=lambda seed, p=pattern, n=f"video-{suffix}": zs.Factorized(p, name=n))
    yield ScanEntry("zigzag-3d", "one continuous snake through T x H x W; layer i from zigzag path i mod 8",
                    modality="video", build=lambda seed: zs.Snake3d(8, name="zigzag-3d"))


@hookimpl
def register_scans(register):
    """Registers sweep-*, zigzag-*, hilbert-*, hilbert-as-released-*, jpeg-*, spiral-*, random-*, parallel-*,
    video-* and zigzag-3d."""
    for entry in _entries():
        register(entry)
