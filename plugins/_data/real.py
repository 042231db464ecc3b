"""Real image datasets that work offline: scikit-learn's digits and Debian's Fashion-MNIST."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from ..errors import DataError
from ..specs import DataBundle, DataInfo
from .common import ImageOptions, UInt8Dataset, fingerprint, make_reference, resize_uint8

__all__ = ["DEBIAN_FASHION_MNIST", "DigitsOptions", "FashionMNISTOptions", "digits_splits", "load_digits", "load_fashion_mnist"]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
_DIGITS_TEST = 297          # held-out digits (1/6 of 1,797), a fixed random split
_DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zigma-harness" / "fashion-mnist"


class _HeldOutOptions(ImageOptions):
    num_reference: int | None = Field(None, ge=1)   # keep only the first num_reference held-out items (None: all)


class DigitsOptions(_HeldOutOptions):
    """scikit-learn digits: 1,500 train / 297 test real 8x8 images (17 grey levels), resized."""


class FashionMNISTOptions(_HeldOutOptions):
    """Fashion-MNIST: 60,000 train / 10,000 test real 28x28 grey images."""

    resolution: int = Field(28, ge=4, le=1024)
    root: str | None = None     # folder holding the four IDX .gz files (default: Debian's, then the download cache)
    download: bool = False      # fetch with torchvision when no local copy exists (needs the network)


#: Fashion-MNIST's classes in label order (Xiao, Rasul & Vollgraf 2017, arXiv 1708.07747, Table 1)
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


def _bundle(name: str, *, opts: _HeldOutOptions, train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor,
            source: str, class_names: tuple[str, ...]) -> DataBundle:
    """Cap num_train and num_reference (first items), resize the (N, 1, h, w) uint8 train split (the held-out
    split is resized as drawn, item by item, which gives the same pixels), and wrap them as a DataBundle."""
    if opts.num_train is not None:
        train, train_y = train[:opts.num_train], train_y[:opts.num_train]
    if opts.num_reference is not None:
        test = test[:opts.num_reference]
    train = resize_uint8(train, opts.resolution)
    info = DataInfo(name=name, channels=opts.channels, height=opts.resolution, width=opts.resolution,
                    num_classes=10, class_names=class_names, num_train=train.shape[0], source=source,
                    fingerprint=fingerprint(train, train_y, test, extra=f"{name}:{opts.channels}:{opts.resolution}"))
    return DataBundle(info=info, train=UInt8Dataset(train, channels=opts.channels, labels=train_y),
                      reference=make_reference(test, channels=opts.channels, name=name, size=opts.resolution),
                      extras={"num_reference": test.shape[0], "reference_split": "test"})


def digits_splits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sklearn's 1,797 digits as uint8 (N, 1, 8, 8), split 1,500 / 297 by a fixed permutation:
    (train images, train labels, test images, test labels)."""
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    images = torch.from_numpy(np.round(d.images * 255.0 / 16.0).astype(np.uint8)).unsqueeze(1)   # (N, 1, 8, 8)
    labels = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(labels)))
    test, train = perm[:_DIGITS_TEST], perm[_DIGITS_TEST:]
    return images[train], labels[train], images[test], labels[test]


def load_digits(opts: DigitsOptions) -> DataBundle:
    """The real sklearn digits (1,500 train / 297 test), resized to opts.resolution."""
    train, train_y, test, _ = digits_splits()
    return _bundle("digits", opts=opts, train=train, train_y=train_y, test=test, class_names=tuple("0123456789"),
                   source="sklearn.datasets.load_digits")


def _read_idx(path: Path, offset: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(f"fashion-mnist: cannot read {path}: {exc}") from None


def _find_fashion_root(opts: FashionMNISTOptions) -> Path | None:
    """First folder (options.root, Debian's, the download cache; flat or torchvision layout) with all four files."""
    bases = [Path(opts.root).expanduser()] if opts.root else [DEBIAN_FASHION_MNIST, _DEFAULT_CACHE]
    for base in bases:
        for cand in (base, base / "FashionMNIST" / "raw"):
            if all((cand / f).is_file() for pair in _FASHION_FILES.values() for f in pair):
                return cand
    return None


def load_fashion_mnist(opts: FashionMNISTOptions) -> DataBundle:
    """Fashion-MNIST from local IDX files; torchvision's download only when opts.download is true."""
    root = _find_fashion_root(opts)
    if root is None and opts.download:
        import torchvision

        dest = Path(opts.root).expanduser() if opts.root else _DEFAULT_CACHE
        try:
            torchvision.datasets.FashionMNIST(str(dest), train=True, download=True)
            torchvision.datasets.FashionMNIST(str(dest), train=False, download=True)
        except (OSError, RuntimeError) as exc:
            raise DataError(f"fashion-mnist: download into {dest} failed: {exc}") from None
        root = _find_fashion_root(opts.model_copy(update={"root": str(dest)}))
    if root is None:
        where = opts.root or f"{DEBIAN_FASHION_MNIST} or {_DEFAULT_CACHE}"
        raise DataError(
            f"fashion-mnist: no IDX files in {where}. Install Debian's copy (apt-get install -y dataset-fashion-mnist), "
            f"point datasets options 'root' at a folder with {', '.join(_FASHION_FILES['train'])} and the t10k files, "
            f"or set 'download: true' on a machine with internet access")
    splits = {}
    for split, (img_file, lbl_file) in _FASHION_FILES.items():
        images = _read_idx(root / img_file, 16)
        labels = _read_idx(root / lbl_file, 8)
        if images.size != labels.size * 28 * 28:
            raise DataError(f"fashion-mnist: {root / img_file} holds {images.size} bytes, expected "
                            f"{labels.size} images of 28x28 (labels in {root / lbl_file})")
        splits[split] = (torch.from_numpy(images.reshape(-1, 1, 28, 28).copy()),
                         torch.from_numpy(labels.astype(np.int64)))
    return _bundle("fashion-mnist", opts=opts, train=splits["train"][0], train_y=splits["train"][1],
                   class_names=FASHION_CLASSES,
                   test=splits["test"][0], source=str(root))
