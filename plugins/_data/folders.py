"""The user's own data: a folder of images, or a folder of videos (frame folders or animated GIFs), read with PIL."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageSequence, UnidentifiedImageError
from pydantic import Field

from ..errors import DataError
from ..specs import DataBundle, DataInfo
from .common import DataOptions, UInt8Dataset, fingerprint, make_reference

__all__ = ["IMAGE_SUFFIXES", "ImageFolderOptions", "VideoFolderOptions", "load_image_folder", "load_video_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class _FolderOptions(DataOptions):
    root: str                                        # the folder (train/ and test/ subfolders are used when present)
    resolution: int = Field(32, ge=4, le=1024)       # centre-cropped to a square, then resized
    channels: Literal[1, 3] = 3
    convert: bool = False                            # convert other colour modes instead of failing
    holdout: float = Field(0.1, gt=0, lt=1)          # held-out fraction for metrics when there is no test/
    seed: int = 0                                    # the held-out split
    num_reference: int | None = Field(None, ge=2)    # keep only the first num_reference held-out items (None: all)


class ImageFolderOptions(_FolderOptions):
    """Images under root (recursively); labels from the first-level subfolder names when class_subfolders."""

    class_subfolders: bool = False
    vae_path: str | None = None      # LOCAL diffusers AutoencoderKL folder: train on its latents (as in the paper)
    vae_batch_size: int = Field(16, ge=1)


class VideoFolderOptions(_FolderOptions):
    """Videos under root: each subfolder of frame images is one video (frames sorted by name); .gif files too."""

    frames: int = Field(8, ge=1, le=512)
    frame_stride: int = Field(1, ge=1)


def _check_root(root: str, name: str) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"{name}: folder {path} does not exist")
    return path


def _to_array(img: Image.Image, path: Path, opts: _FolderOptions) -> np.ndarray:
    """PIL image -> uint8 (C, res, res): channel check, centre crop, resize."""
    bands = len(img.getbands())
    if bands != opts.channels or img.mode not in ("L", "RGB"):
        if not opts.convert:
            raise DataError(f"{path}: {img.mode} image with {bands} channel(s), the dataset expects "
                            f"{opts.channels}; convert the files or set 'convert: true'")
        img = img.convert("L" if opts.channels == 1 else "RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    img = img.resize((opts.resolution, opts.resolution), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
        return img
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from None


def _split(items: list, root: Path, opts: _FolderOptions, name: str) -> tuple[list, list]:
    """(train, held-out) item lists: root/train + root/test when both exist, else a seeded random holdout."""
    if not items:
        raise DataError(f"{name}: no images in {root} (looked for {', '.join(IMAGE_SUFFIXES)})")
    if (root / "train").is_dir() and (root / "test").is_dir():
        test_dir = root / "test"
        train = [it for it in items if test_dir not in it[0].parents and it[0] != test_dir]
        test = [it for it in items if test_dir in it[0].parents or it[0] == test_dir]
        if len(train) < 1 or len(test) < 2:
            raise DataError(f"{name}: {root}/train has {len(train)} item(s) and {root}/test has {len(test)}; "
                            f"need >= 1 and >= 2")
        return train, test
    k = round(opts.holdout * len(items))
    if k < 2 or len(items) - k < 1:
        raise DataError(f"{name}: {root} has {len(items)} item(s); holding out {opts.holdout:.0%} for metrics "
                        f"leaves {k} (need >= 2) — add data or a test/ subfolder")
    perm = np.random.default_rng(opts.seed).permutation(len(items))
    return [items[i] for i in sorted(perm[k:])], [items[i] for i in sorted(perm[:k])]


def load_image_folder(opts: ImageFolderOptions) -> DataBundle:
    """Every image file under opts.root, resized to (channels, resolution, resolution)."""
    root = _check_root(opts.root, "image-folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    classes: list[str] = []
    if opts.class_subfolders:
        def cls_of(p: Path) -> str:
            rel = p.relative_to(root).parts
            rel = rel[1:] if rel[0] in ("train", "test") and (root / "train").is_dir() else rel
            if len(rel) < 2:
                raise DataError(f"{p}: class_subfolders is set but the file is not in a class subfolder")
            return rel[0]
        classes = sorted({cls_of(p) for p in files})
        items = [(p, classes.index(cls_of(p))) for p in files]
    else:
        items = [(p, -1) for p in files]
    train, test = _split(items, root, opts, "image-folder")
    if opts.num_train is not None:
        train = train[:opts.num_train]
    test = test[:opts.num_reference] if opts.num_reference is not None else test

    def stack(part: list) -> torch.Tensor:
        return torch.from_numpy(np.stack([_to_array(_open(p), p, opts) for p, _ in part]))

    images, ref = stack(train), stack(test)
    labels = torch.tensor([c for _, c in train], dtype=torch.int64) if classes else None
    info = DataInfo(name="image-folder", channels=opts.channels, height=opts.resolution, width=opts.resolution,
                    num_classes=len(classes) or None, class_names=tuple(classes), num_train=images.shape[0],
                    source=str(root),
                    fingerprint=fingerprint(images, labels, ref))
    extras = {"num_reference": ref.shape[0], "reference_split": "test", "classes": tuple(classes)}
    bundle = DataBundle(info=info, train=UInt8Dataset(images, channels=opts.channels, labels=labels),
                        reference=make_reference(ref, channels=opts.channels, name="image-folder"), extras=extras)
    if opts.vae_path is not None:
        from .latents import encode_bundle
        bundle = encode_bundle(bundle, vae_path=opts.vae_path, batch_size=opts.vae_batch_size)
    return bundle


def _video_frames(src: Path, opts: VideoFolderOptions) -> list[tuple[Image.Image, Path]]:
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        return [(_open(p), p) for p in files]
    img = _open(src)
    return [(frame.convert("RGB"), src) for frame in ImageSequence.Iterator(img)]   # GIF palettes -> RGB


def load_video_folder(opts: VideoFolderOptions) -> DataBundle:
    """Videos (frame subfolders or .gif files) under opts.root as (frames, channels, resolution, resolution)."""
    root = _check_root(opts.root, "video-folder")
    bases = [root / "train", root / "test"] if (root / "train").is_dir() and (root / "test").is_dir() else [root]
    videos = []
    for base in bases:
        videos += sorted(p for p in base.iterdir()
                         if (p.is_dir() and p.name not in ("train", "test")) or p.suffix.lower() == ".gif")
    train, test = _split([(v, -1) for v in videos], root, opts, "video-folder")
    if opts.num_train is not None:
        train = train[:opts.num_train]
    test = test[:opts.num_reference] if opts.num_reference is not None else test
    need = (opts.frames - 1) * opts.frame_stride + 1

    def clip(src: Path) -> np.ndarray:
        frames = _video_frames(src, opts)
        if len(frames) < need:
            raise DataError(f"{src}: {len(frames)} frame(s), need {need} "
                            f"(frames={opts.frames}, frame_stride={opts.frame_stride})")
        return np.stack([_to_array(img, p, opts) for img, p in frames[:need:opts.frame_stride]])

    videos_t = torch.from_numpy(np.stack([clip(v) for v, _ in train]))
    ref = torch.from_numpy(np.stack([clip(v) for v, _ in test]))
    info = DataInfo(name="video-folder", channels=opts.channels, height=opts.resolution, width=opts.resolution,
                    frames=opts.frames, num_train=videos_t.shape[0], source=str(root),
                    fingerprint=fingerprint(videos_t, ref))
    return DataBundle(info=info, train=UInt8Dataset(videos_t, channels=opts.channels),
                      reference=make_reference(ref, channels=opts.channels, name="video-folder"),
                      extras={"num_reference": ref.shape[0], "reference_split": "test"})
