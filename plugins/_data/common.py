"""Shared pieces of the dataset plugins: option base, uint8 storage dataset, resizing, fingerprints, references."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from ..errors import DataError

__all__ = [
    "DataOptions",
    "ImageOptions",
    "UInt8Dataset",
    "fingerprint",
    "make_reference",
    "resize_uint8",
    "to_channels",
    "to_uint8",
]


class DataOptions(BaseModel):
    """Options every dataset accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_train: int | None = Field(None, ge=1)       # keep only the first num_train training items (None: all)


class ImageOptions(DataOptions):
    resolution: int = Field(32, ge=4, le=1024)      # images are resized to resolution x resolution
    channels: Literal[1, 3] = 1                     # grey sources are replicated to 3 channels when 3


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float in [0, 1] -> uint8 in [0, 255] (rounded)."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def resize_uint8(images: torch.Tensor, size: int, *, chunk: int = 4096) -> torch.Tensor:
    """(..., C, H, W) uint8 -> (..., C, size, size) uint8, bilinear with antialiasing (a no-op at equal size)."""
    lead, (c, h, w) = images.shape[:-3], images.shape[-3:]
    if (h, w) == (size, size):
        return images
    flat = images.reshape(-1, c, h, w)
    out = torch.empty(flat.shape[0], c, size, size, dtype=torch.uint8)
    for i in range(0, flat.shape[0], chunk):
        x = flat[i:i + chunk].float() / 255
        out[i:i + chunk] = to_uint8(F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                                  align_corners=False))
    return out.reshape(*lead, c, size, size)


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """(..., C, H, W) -> (..., channels, H, W): grey replicated to RGB; anything else must already match."""
    c = images.shape[-3]
    if c == channels:
        return images
    if c == 1:
        return images.expand(*images.shape[:-3], channels, *images.shape[-2:])
    raise DataError(f"cannot turn {c}-channel images into {channels}-channel images")


def fingerprint(*tensors: torch.Tensor | None, extra: str = "") -> str:
    """sha256 (16 hex digits) of the tensors' bytes, shapes and dtypes: changes whenever the loaded data does."""
    h = hashlib.sha256(extra.encode())
    for t in tensors:
        if t is None:
            continue
        t = t.contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


class UInt8Dataset(torch.utils.data.Dataset):
    """Items {'x': float in [-1, 1] of shape (..., channels, H, W), 'y'?, 'caption'?} from uint8 storage."""

    def __init__(self, images: torch.Tensor, *, channels: int, labels: torch.Tensor | None = None,
                 captions: Sequence[str] | None = None) -> None:
        assert labels is None or labels.shape[0] == images.shape[0], "one label per image"
        assert captions is None or len(captions) == images.shape[0], "one caption per image"
        self.images, self.channels, self.labels, self.captions = images, channels, labels, captions

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict:
        x = to_channels(self.images[i], self.channels).float() / 127.5 - 1.0
        item: dict = {"x": x}
        if self.labels is not None:
            item["y"] = self.labels[i]
        if self.captions is not None:
            item["caption"] = self.captions[i]
        return item

    def uint8(self) -> torch.Tensor:
        """All training images as uint8 (N, ..., channels, H, W) (a view when channels are replicated)."""
        return to_channels(self.images, self.channels)


def make_reference(held_out: torch.Tensor, *, channels: int, name: str,
                   size: int | None = None) -> Callable[..., torch.Tensor]:
    """reference(n, seed=0) -> uint8 (n, ..., channels, H, W): n held-out items drawn without replacement;
    `size`: resized to size x size when drawn (so an unused held-out split is never resized whole)."""
    available = held_out.shape[0]

    def reference(n: int, seed: int = 0) -> torch.Tensor:
        if not 1 <= n <= available:
            raise DataError(f"{name}: asked for {n} reference items, the held-out split has {available}")
        idx = torch.randperm(available, generator=torch.Generator().manual_seed(seed))[:n].sort().values
        items = held_out[idx] if size is None else resize_uint8(held_out[idx], size)
        return to_channels(items, channels).contiguous()

    return reference
