"""A throwaway third-party plugin: 'frame-flip' says it is a video scheme on its class only (ScanScheme.modality),
not on its registry entry; 'no-square' raises on square grids."""

import torch

from plugins.hookspecs import hookimpl
from plugins.specs import ScanEntry
from zigma.scans import LayerScan, ScanScheme


class _FrameFlip(ScanScheme):
    name, modality = "frame-flip", "video"

    def layer_scans(self, grid, depth):
        assert grid.t > 1, "needs video"                      # as a careless plugin would
        order = torch.arange(grid.num_tokens).view(grid.t, -1).flip(0).flatten()
        return [LayerScan(orders=(order,)) for _ in range(depth)]


class _NoSquare(ScanScheme):
    name = "no-square"

    def layer_scans(self, grid, depth):
        if grid.h == grid.w:
            raise ValueError("square grids are not supported")
        return [LayerScan(orders=(torch.arange(grid.num_tokens),)) for _ in range(depth)]


@hookimpl
def register_scans(register):
    register(ScanEntry(name="frame-flip", description="frames in reverse (tests)", build=lambda seed: _FrameFlip()))
    register(ScanEntry(name="no-square", description="raster, refuses square grids (tests)",
                       build=lambda seed: _NoSquare()))
