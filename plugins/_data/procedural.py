"""Procedural datasets (deterministic from a seed): captioned 'shapes' images and 'moving-digits' videos."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from zigma.data import moving_digits
from zigma.data import shapes as zshapes

from ..specs import DataBundle, DataInfo
from .common import DataOptions, UInt8Dataset, fingerprint, make_reference, resize_uint8, to_uint8
from .real import digits_splits

__all__ = ["MovingDigitsOptions", "ShapesOptions", "load_moving_digits", "load_shapes"]

_REFERENCE_STREAM = 1_000_003    # reference data comes from seed + this, disjoint from the training stream


class ShapesOptions(DataOptions):
    """One coloured shape per image with an exact caption ('a red circle top left')."""

    resolution: int = Field(32, ge=8, le=512)
    channels: Literal[3] = 3                         # colour is one of the attributes
    num_train: int | None = Field(10_000, ge=1)      # images generated for training
    num_reference: int = Field(2_000, ge=2)          # held-out images generated for metrics
    seed: int = 0


class MovingDigitsOptions(DataOptions):
    """Videos of real sklearn digits bouncing in a canvas (train sprites for training, test sprites held out)."""

    resolution: int = Field(32, ge=8, le=512)        # canvas side
    frames: int = Field(8, ge=1, le=256)
    channels: Literal[1, 3] = 1
    digit_size: int | None = Field(None, ge=4)       # sprite side (default resolution // 2)
    digits_per_video: int = Field(1, ge=1, le=4)     # labelled (digit class) only when 1
    num_train: int | None = Field(2_000, ge=1)
    num_reference: int = Field(500, ge=2)
    seed: int = 0


def load_shapes(opts: ShapesOptions) -> DataBundle:
    """Generate train and reference shapes; items carry 'y' (class of colour x shape x position) and 'caption'."""
    def gen(n: int, seed: int) -> zshapes.ShapesBatch:
        return zshapes.shapes_batch(n, resolution=opts.resolution, generator=torch.Generator().manual_seed(seed))

    train = gen(opts.num_train or 10_000, opts.seed)
    ref = gen(opts.num_reference, opts.seed + _REFERENCE_STREAM)
    images, ref_images = to_uint8(train.images), to_uint8(ref.images)
    info = DataInfo(name="shapes", channels=3, height=opts.resolution, width=opts.resolution,
                    num_classes=zshapes.NUM_CLASSES, captions=True, vocab=zshapes.VOCAB,
                    class_names=tuple(zshapes.caption(*a) for a in
                                      zshapes.label_to_attributes(torch.arange(zshapes.NUM_CLASSES)).tolist()),
                    num_train=images.shape[0], source=f"zigma.data.shapes(seed={opts.seed})",
                    fingerprint=fingerprint(images, train.attributes, ref_images))
    extras = {
        "num_reference": opts.num_reference, "reference_split": "generated",
        "attributes": {"colour": tuple(zshapes.COLOURS), "shape": zshapes.SHAPES, "position": zshapes.POSITIONS},
        "train_attributes": train.attributes,
        # the held-out real images with their exact attributes: what cond-accuracy's classifier is checked on
        "reference_images": ref_images, "reference_attributes": ref.attributes,
        "label_to_attributes": zshapes.label_to_attributes,
        "caption_to_attributes": zshapes.caption_to_attributes,
    }
    return DataBundle(info=info,
                      train=UInt8Dataset(images, channels=3, labels=train.labels, captions=train.captions),
                      reference=make_reference(ref_images, channels=3, name="shapes"), extras=extras)


def _digit_sprites(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """sklearn digits as float sprites (K, size, size) in [0, 1]: (train, train labels, test)."""
    train, train_labels, test, _ = digits_splits()
    return (resize_uint8(train, size)[:, 0].float() / 255, train_labels,
            resize_uint8(test, size)[:, 0].float() / 255)


def load_moving_digits(opts: MovingDigitsOptions) -> DataBundle:
    """Generate train and reference videos (N, T, C, H, W) of bouncing digits."""
    size = opts.digit_size or opts.resolution // 2
    size = min(size, opts.resolution)
    train_sprites, train_labels, test_sprites = _digit_sprites(size)

    def gen(sprites: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        video, ids = moving_digits(sprites, n, frames=opts.frames, canvas=opts.resolution,
                                   digits_per_video=opts.digits_per_video,
                                   generator=torch.Generator().manual_seed(seed))
        return to_uint8(video), ids

    videos, ids = gen(train_sprites, opts.num_train or 2_000, opts.seed)
    ref_videos, _ = gen(test_sprites, opts.num_reference, opts.seed + _REFERENCE_STREAM)
    labels = train_labels[ids[:, 0]] if opts.digits_per_video == 1 else None
    info = DataInfo(name="moving-digits", channels=opts.channels, height=opts.resolution, width=opts.resolution,
                    frames=opts.frames, num_classes=10 if labels is not None else None,
                    class_names=tuple("0123456789") if labels is not None else (),
                    num_train=videos.shape[0], source=f"zigma.data.moving_digits(sklearn digits, seed={opts.seed})",
                    fingerprint=fingerprint(videos, labels, ref_videos, extra=f"c{opts.channels}"))
    return DataBundle(info=info, train=UInt8Dataset(videos, channels=opts.channels, labels=labels),
                      reference=make_reference(ref_videos, channels=opts.channels, name="moving-digits"),
                      extras={"num_reference": opts.num_reference, "reference_split": "generated"})
