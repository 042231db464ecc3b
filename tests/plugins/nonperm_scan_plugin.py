"""A throwaway third-party plugin whose scan 'not-a-perm' returns an order that is not a permutation."""

import torch

from plugins.hookspecs import hookimpl
from plugins.specs import ScanEntry
from zigma.scans import LayerScan, ScanScheme


class _Repeat(ScanScheme):
    name = "not-a-perm"

    def layer_scans(self, grid, depth):
        order = torch.zeros(grid.num_tokens, dtype=torch.long)   # token 0 everywhere: not a permutation
        return [LayerScan(orders=(order,)) for _ in range(depth)]


@hookimpl
def register_scans(register):
    register(ScanEntry(name="not-a-perm", description="every position reads token 0 (tests)",
                       build=lambda seed: _Repeat()))
