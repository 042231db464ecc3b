"""Per-sample random streams, so that samples do not depend on batch size or the number of devices (as in EDM).

Sample i of a run draws all of its randomness from its own `torch.Generator` seeded from `seeds[i]`:

* `sample_seeds(seed, indices)` derives the per-sample seeds of a run: `seed * 1_000_003 + index (mod 2**64)`,
  so that sample 17 of seed 0 is the same image whether it is drawn in a batch of 1, of 16, or on another GPU.
* A sample may need several independent streams (the initial noise x0, the SDE increments, the Hutchinson probes):
  stream k of seed s is seeded with `stream_seed(s, k)` (stream 0 is s itself).
* Numbers are always drawn in float32 on the CPU, then cast and moved, so they are the same on every device.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

__all__ = ["SEED_STRIDE", "PerSampleNoise", "per_sample_normal", "sample_seeds", "stream_seed"]

SEED_STRIDE = 1_000_003          # a prime larger than any number of samples drawn from one seed
_MASK = 2**64 - 1
_GOLDEN = 0x9E3779B97F4A7C15     # Weyl increment; separates the streams of one seed


def sample_seeds(seed: int, indices: Iterable[int]) -> list[int]:
    """Per-sample seeds for samples `indices` of a run seeded with `seed`: (seed * 1_000_003 + index) mod 2**64."""
    return [(int(seed) * SEED_STRIDE + int(i)) & _MASK for i in indices]


def stream_seed(seed: int, stream: int) -> int:
    """Seed of independent stream `stream` of a per-sample seed; stream 0 is the seed itself."""
    return (int(seed) + int(stream) * _GOLDEN) & _MASK


class PerSampleNoise:
    """One CPU generator per sample. `normal` draws `block` draws of a shape at once per generator and hands them
    out one per call (a fixed block, so the numbers never depend on the batch; it saves per-call overhead)."""

    def __init__(self, seeds: Sequence[int], *, stream: int = 0, block: int = 16) -> None:
        self.generators = [torch.Generator().manual_seed(stream_seed(s, stream)) for s in seeds]
        self.block = block
        self._buffer: Tensor | None = None    # (N, block, *shape) float32
        self._next = 0

    def __len__(self) -> int:
        return len(self.generators)

    def normal(self, shape_per_sample: Sequence[int], *, device=None, dtype=None) -> Tensor:
        """Standard normal (N, *shape_per_sample); row i from generator i."""
        shape = (self.block, *shape_per_sample)
        if self._buffer is None or self._next == self.block or self._buffer.shape[1:] != shape:
            self._buffer = torch.stack([torch.randn(shape, generator=g) for g in self.generators])
            self._next = 0
        out = self._buffer[:, self._next]
        self._next += 1
        return out.to(device=device, dtype=dtype or torch.get_default_dtype())

    def rademacher(self, shape_per_sample: Sequence[int], *, device=None, dtype=None) -> Tensor:
        """Uniform {-1, +1} (N, *shape_per_sample); row i from generator i (one draw per call, unbuffered)."""
        rows = [torch.randint(0, 2, tuple(shape_per_sample), generator=g) for g in self.generators]
        return (2 * torch.stack(rows) - 1).to(device=device, dtype=dtype or torch.get_default_dtype())


def per_sample_normal(shape_per_sample: Sequence[int], seeds: Sequence[int], *, device=None, dtype=None,
                      stream: int = 0) -> Tensor:
    """(len(seeds), *shape_per_sample) standard normal; row i is torch.randn(shape_per_sample) drawn from a fresh
    CPU generator seeded with stream_seed(seeds[i], stream) (= seeds[i] for stream 0)."""
    rows = [torch.randn(tuple(shape_per_sample), generator=torch.Generator().manual_seed(stream_seed(s, stream)))
            for s in seeds]
    return torch.stack(rows).to(device=device, dtype=dtype or torch.get_default_dtype())
