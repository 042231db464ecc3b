"""Example third-party scan plugin: 'block-raster-4' scans 4x4 windows one by one (LocalMamba-style)."""

import torch

from plugins import ScanEntry, hookimpl
from zigma.scans import Grid, LayerScan, ScanScheme, frame_major


class BlockRaster(ScanScheme):
    """Raster order inside b x b windows, windows in raster order; the same order in every layer."""

    def __init__(self, block: int, *, name: str) -> None:
        self.block, self.name = block, name

    def layer_scans(self, grid: Grid, depth: int) -> list[LayerScan]:
        """`depth` LayerScans with one (T*H*W,) order each."""
        b = self.block
        r, c = torch.meshgrid(torch.arange(grid.h), torch.arange(grid.w), indexing="ij")
        key = (((r // b) * grid.w + c // b) * b + r % b) * b + c % b   # window first, then cell in window
        path = torch.argsort(key.flatten())                             # (H*W,) token visited at each step
        return [LayerScan((frame_major(path, grid),))] * depth


@hookimpl
def register_scans(register):
    """Registers block-raster-4."""
    register(ScanEntry("block-raster-4", "raster inside 4x4 windows, windows in raster order",
                       build=lambda seed: BlockRaster(4, name="block-raster-4")))
