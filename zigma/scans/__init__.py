"""Scan orders: for a token grid and a depth, the permutation(s) each Mamba layer scans (see base.py)."""

from .base import Grid, LayerScan, ScanScheme, frame_major, inverse, permute_tokens, relative_order
from .curves import jpeg_paths, spiral_paths, zigzag_paths
from .hilbert import hilbert_as_released_paths, hilbert_paths
from .image import LayerCycle, Parallel, RandomCycle, Sweep
from .measure import continuity, distinct_orders
from .video import Factorized, Snake3d

__all__ = [
    "Grid", "LayerScan", "ScanScheme", "inverse", "relative_order", "frame_major", "permute_tokens",
    "Sweep", "LayerCycle", "Parallel", "RandomCycle", "Factorized", "Snake3d",
    "zigzag_paths", "hilbert_paths", "hilbert_as_released_paths", "jpeg_paths", "spiral_paths",
    "continuity", "distinct_orders",
]
