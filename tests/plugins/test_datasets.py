"""Dataset plugins: real offline data, procedural data, the user's folders, and clear errors for bad data."""

import gzip
import sys
import types
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from plugins._data import real
from plugins.errors import DataError, MissingDependencyError
from plugins.registry import load_registries

torch.set_num_threads(1)
FASHION_PRESENT = all((real.DEBIAN_FASHION_MNIST / f).is_file() for f in
                      ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"))


def _load(name, **options):
    entry = load_registries().datasets.get(name)
    return entry.load(entry.options(**options))


def test_every_builtin_dataset_is_registered_with_strict_options():
    reg = load_registries().datasets
    assert {"digits", "fashion-mnist", "shapes", "moving-digits", "image-folder", "video-folder"} <= set(reg.names())
    with pytest.raises(ValidationError, match="extra"):
        reg.get("digits").options(resolutoin=16)
    assert reg.get("moving-digits").modality == "video"


def test_digits_items_are_scaled_labelled_and_resized():
    bundle = _load("digits", resolution=16, channels=3)
    item = bundle.train[0]
    assert item["x"].shape == (3, 16, 16) == bundle.info.shape
    assert item["x"].min() >= -1 and item["x"].max() <= 1 and item["x"].max() > 0.5
    assert item["y"].dtype == torch.int64 and 0 <= item["y"] < 10
    assert len(bundle.train) == 1500 and bundle.info.num_classes == 10


def test_digits_items_are_sklearns_images_with_their_targets_at_native_size():
    """Oracle: sklearn's digits (0-16 grey levels) read directly, in the split's documented order (numpy's
    default_rng(0) permutation, the last 1,500 for training), scaled to [-1, 1] through 0-255."""
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    train_idx = np.random.default_rng(0).permutation(len(d.target))[297:]
    bundle = _load("digits", resolution=8, channels=1)
    for i in range(0, 1500, 37):
        item, j = bundle.train[i], train_idx[i]
        expected = torch.from_numpy(np.round(d.images[j] * 255.0 / 16.0) / 127.5 - 1.0).float()[None]
        torch.testing.assert_close(item["x"], expected, atol=1e-6, rtol=0)
        assert item["y"].item() == d.target[j]


def test_digits_reference_is_uint8_held_out_data_not_in_train():
    bundle = _load("digits", resolution=8, channels=1)
    ref = bundle.reference(297)
    assert ref.dtype == torch.uint8 and ref.shape == (297, 1, 8, 8)
    train = {bytes(x.numpy()) for x in bundle.train.uint8()}
    assert sum(bytes(x.numpy()) in train for x in ref) < 15    # only a few 8x8 duplicates exist in sklearn digits
    with pytest.raises(DataError, match="held-out split has 297"):
        bundle.reference(298)


def test_num_train_limits_the_training_set():
    assert len(_load("digits", num_train=100).train) == 100


def test_num_reference_keeps_the_first_held_out_items():
    """The subset the GPU reports used (first N of the split, as benchmarks/gpu/subset_fashion_mnist.py cut it)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    perm = np.random.default_rng(0).permutation(len(d.target))          # the documented fixed 1,500 / 297 split
    first = np.round(d.images[perm[:297][:50]] * 255.0 / 16.0).astype(np.uint8)[:, None]
    bundle = _load("digits", resolution=8, channels=1, num_reference=50)
    with pytest.raises(DataError, match="held-out split has 50"):
        bundle.reference(51)
    assert np.array_equal(bundle.reference(50).numpy(), first)


@pytest.mark.skipif(not FASHION_PRESENT, reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_reads_the_debian_files():
    bundle = _load("fashion-mnist")
    assert len(bundle.train) == 60_000 and bundle.extras["num_reference"] == 10_000
    assert bundle.info.shape == (1, 28, 28) and bundle.info.source == str(real.DEBIAN_FASHION_MNIST)
    assert bundle.reference(3).shape == (3, 1, 28, 28)


def test_fashion_mnist_without_files_says_how_to_get_them(tmp_path):
    with pytest.raises(DataError) as err:
        _load("fashion-mnist", root=str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path) in msg and "apt-get install -y dataset-fashion-mnist" in msg and "download: true" in msg


def _write_idx(folder, n, offset_value):
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", n), ("t10k", n // 2)):
        images = np.full((count, 28, 28), offset_value, np.uint8)
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(b"\0" * 16 + images.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(b"\0" * 8 + (np.arange(count) % 10).astype(np.uint8).tobytes())


def test_fashion_mnist_downloads_through_torchvision_only_when_asked(tmp_path, monkeypatch):
    calls = []

    def fake_fashion(root, train, download):
        calls.append(download)
        _write_idx(tmp_path / "FashionMNIST" / "raw", 20, 7)

    monkeypatch.setattr("torchvision.datasets.FashionMNIST", fake_fashion)
    with pytest.raises(DataError):
        _load("fashion-mnist", root=str(tmp_path))
    assert calls == []
    bundle = _load("fashion-mnist", root=str(tmp_path), download=True)
    assert calls and all(calls) and len(bundle.train) == 20
    assert bundle.reference(10).eq(7).all()


def test_a_truncated_idx_file_is_a_data_error_naming_it(tmp_path):
    _write_idx(tmp_path, 10, 1)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        _load("fashion-mnist", root=str(tmp_path))


def test_shapes_items_carry_exact_captions_and_matching_labels():
    bundle = _load("shapes", num_train=50, num_reference=10)
    item = bundle.train[0]
    attrs = bundle.extras["caption_to_attributes"](item["caption"])
    assert torch.equal(bundle.extras["label_to_attributes"](item["y"]), torch.tensor(attrs))
    assert item["x"].shape == (3, 32, 32) and bundle.info.captions and "circle" in bundle.info.vocab
    assert bundle.reference(10).shape == (10, 3, 32, 32)


def test_shapes_are_deterministic_from_the_seed():
    a, b = _load("shapes", num_train=20, num_reference=4), _load("shapes", num_train=20, num_reference=4)
    c = _load("shapes", num_train=20, num_reference=4, seed=1)
    assert a.info.fingerprint == b.info.fingerprint != c.info.fingerprint
    assert torch.equal(a.train.uint8(), b.train.uint8())


def test_moving_digits_items_are_labelled_videos():
    bundle = _load("moving-digits", resolution=16, frames=4, num_train=10, num_reference=5)
    item = bundle.train[0]
    assert item["x"].shape == (4, 1, 16, 16) == bundle.info.shape and 0 <= item["y"] < 10
    assert bundle.reference(5).shape == (5, 4, 1, 16, 16)


def _png(path, size=(20, 12), mode="RGB", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode in ("L", "P") else (value,) * len(mode)
    Image.new(mode, size, colour).save(path)


def test_image_folder_loads_user_images_and_holds_out_a_reference(tmp_path):
    for i in range(20):
        _png(tmp_path / f"img{i:02d}.png", size=(20 + i, 12), value=10 * i)
    bundle = _load("image-folder", root=str(tmp_path), resolution=8, holdout=0.2)
    assert len(bundle.train) == 16 and bundle.extras["num_reference"] == 4
    assert bundle.train[0]["x"].shape == (3, 8, 8) and "y" not in bundle.train[0]
    values = set(bundle.train.uint8()[:, 0, 4, 4].tolist()) | set(bundle.reference(4)[:, 0, 4, 4].tolist())
    assert values == {10 * i for i in range(20)}


def test_image_folder_num_reference_keeps_the_first_held_out_items(tmp_path):
    for i in range(20):
        _png(tmp_path / f"img{i:02d}.png", value=10 * i)
    full = _load("image-folder", root=str(tmp_path), resolution=8, holdout=0.25)
    cut = _load("image-folder", root=str(tmp_path), resolution=8, holdout=0.25, num_reference=2)
    assert (full.extras["num_reference"], cut.extras["num_reference"]) == (5, 2)
    assert torch.equal(cut.reference(2), full.reference(5)[:2])   # sorted draws of all = the first items


def test_image_folder_uses_train_test_and_class_subfolders(tmp_path):
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            for i in range(n):
                _png(tmp_path / split / cls / f"{i}.png")
    bundle = _load("image-folder", root=str(tmp_path), resolution=8, class_subfolders=True)
    assert len(bundle.train) == 12 and bundle.extras["num_reference"] == 4
    assert bundle.extras["classes"] == ("cat", "dog") and bundle.train.labels.tolist() == [0] * 6 + [1] * 6
    assert bundle.info.class_names == ("cat", "dog")


def test_image_folder_missing_folder_is_a_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'} does not exist"):
        _load("image-folder", root=str(tmp_path / "nope"))


def test_image_folder_without_images_is_a_data_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images in"):
        _load("image-folder", root=str(tmp_path))


def test_a_corrupt_image_is_a_data_error_naming_the_file(tmp_path):
    for i in range(20):
        _png(tmp_path / f"{i}.png")
    (tmp_path / "5.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="5.png: cannot read image"):
        _load("image-folder", root=str(tmp_path))


def test_a_wrong_channel_count_is_a_data_error_unless_convert_is_set(tmp_path):
    for i in range(20):
        _png(tmp_path / f"{i}.png", mode="RGBA" if i == 3 else "RGB")
    with pytest.raises(DataError, match="3.png: RGBA image with 4 channel"):
        _load("image-folder", root=str(tmp_path))
    assert _load("image-folder", root=str(tmp_path), convert=True).info.channels == 3


def test_too_few_images_to_hold_out_a_reference_is_a_data_error(tmp_path):
    for i in range(3):
        _png(tmp_path / f"{i}.png")
    with pytest.raises(DataError, match="has 3 item"):
        _load("image-folder", root=str(tmp_path))


def test_vae_latents_without_diffusers_is_a_missing_dependency_error(tmp_path, monkeypatch):
    for i in range(20):
        _png(tmp_path / "imgs" / f"{i}.png")
    (tmp_path / "vae").mkdir()
    monkeypatch.setitem(sys.modules, "diffusers", None)     # import fails as if not installed
    with pytest.raises(MissingDependencyError, match="diffusers"):
        _load("image-folder", root=str(tmp_path / "imgs"), vae_path=str(tmp_path / "vae"))


class _FakeAutoencoderKL(torch.nn.Module):
    """Stands in for diffusers.AutoencoderKL: 8x average-pool 'encoder', nearest 'decoder'."""

    loaded_from: ClassVar[list] = []

    def __init__(self):
        super().__init__()
        self.config = types.SimpleNamespace(scaling_factor=0.5)

    @classmethod
    def from_pretrained(cls, path, local_files_only):
        assert local_files_only
        cls.loaded_from.append(path)
        return cls()

    def encode(self, x):
        z = torch.nn.functional.avg_pool2d(x, 8).repeat(1, 2, 1, 1)[:, :4]
        return types.SimpleNamespace(latent_dist=types.SimpleNamespace(mean=z))

    def decode(self, z):
        return types.SimpleNamespace(sample=torch.nn.functional.interpolate(z[:, :3], scale_factor=8))


def test_vae_latent_mode_encodes_with_a_local_autoencoder(tmp_path, monkeypatch):
    for i in range(20):
        _png(tmp_path / "imgs" / f"{i}.png", value=255)
    (tmp_path / "vae").mkdir()
    monkeypatch.setitem(sys.modules, "diffusers", types.SimpleNamespace(AutoencoderKL=_FakeAutoencoderKL))
    bundle = _load("image-folder", root=str(tmp_path / "imgs"), resolution=16, vae_path=str(tmp_path / "vae"))
    assert _FakeAutoencoderKL.loaded_from[-1] == str(tmp_path / "vae")
    assert bundle.info.shape == (4, 2, 2) and bundle.extras["latent"]
    torch.testing.assert_close(bundle.train[0]["x"], torch.full((4, 2, 2), 0.5))    # white (1.0) x scale 0.5
    assert bundle.reference(1).shape == (1, 3, 16, 16)                              # pixels for the metrics
    assert bundle.extras["decode"](bundle.train.latents[:1]).eq(255).all()


def test_video_folder_loads_frame_folders_and_gifs(tmp_path):
    for v in range(4):
        for t in range(5):
            _png(tmp_path / f"clip{v}" / f"{t:03d}.png", value=40 * t)
    frames = [Image.new("RGB", (10, 10), (20 * t,) * 3) for t in range(6)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    bundle = _load("video-folder", root=str(tmp_path), resolution=8, frames=3, frame_stride=2, holdout=0.4)
    assert len(bundle.train) + bundle.extras["num_reference"] == 5
    clip = bundle.reference(2) if bundle.extras["num_reference"] >= 2 else None
    assert clip is not None and clip.shape == (2, 3, 3, 8, 8)
    x = bundle.train[0]["x"]
    assert x.shape == (3, 3, 8, 8) == bundle.info.shape
    # every video's frames 0, 2 and 4 (frame_stride 2) in order: grey 40 t for the folders, 20 t for the GIF
    videos = [((bundle.train[i]["x"] + 1) * 127.5).round() for i in range(len(bundle.train))]
    videos += list(bundle.reference(bundle.extras["num_reference"]).float())
    greys = sorted(tuple(round(v[f].mean().item()) for f in range(3)) for v in videos)
    assert greys == sorted([(0, 80, 160)] * 4 + [(0, 40, 80)])


def test_a_video_with_too_few_frames_is_a_data_error_naming_it(tmp_path):
    for v in range(4):
        for t in range(5 if v else 2):
            _png(tmp_path / f"clip{v}" / f"{t}.png")
    with pytest.raises(DataError, match="clip0: 2 frame"):
        _load("video-folder", root=str(tmp_path), frames=4, holdout=0.5)


def test_digits_reference_resized_as_drawn_equals_the_whole_split_resized_then_indexed():
    from plugins._data.common import resize_uint8
    from plugins._data.real import DigitsOptions, digits_splits, load_digits
    _, _, test, _ = digits_splits()
    bundle = load_digits(DigitsOptions(resolution=20))
    idx = torch.randperm(test.shape[0], generator=torch.Generator().manual_seed(3))[:40].sort().values
    assert torch.equal(bundle.reference(40, seed=3), resize_uint8(test, 20)[idx])


def test_validation_loads_only_a_few_items_of_a_dataset():
    from harness.validation import _preview
    from plugins._data.procedural import ShapesOptions
    from plugins._data.real import DigitsOptions
    assert _preview(DigitsOptions(resolution=1024)).num_train == 8
    opts = _preview(ShapesOptions())
    assert (opts.num_train, opts.num_reference) == (8, 2)


def test_fashion_mnist_class_names_are_torchvisions_in_label_order():
    from torchvision.datasets import FashionMNIST

    from plugins._data.real import FASHION_CLASSES
    assert FASHION_CLASSES == tuple(FashionMNIST.classes)


def test_a_class_is_the_first_level_folder_however_deep_its_images_lie(tmp_path):
    for cls in ("cat", "dog"):
        for i in range(4):
            _png(tmp_path / cls / ("indoor" if i % 2 else "outdoor") / f"{i}.png")
    bundle = _load("image-folder", root=str(tmp_path), resolution=8, class_subfolders=True, holdout=0.25)
    assert bundle.info.class_names == ("cat", "dog")


def test_resizing_is_pils_antialiased_bilinear_within_one_grey_level():
    """Oracle: PIL's Image.resize(BILINEAR), whose filter widens with the downscale factor (antialiasing), on random
    pixels: 24 -> 6 (a plain bilinear would be up to ~90 grey levels off) and 8 -> 20."""
    from PIL import Image

    from plugins._data.common import resize_uint8

    x = torch.randint(0, 256, (1, 1, 24, 24), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for img, size in ((x, 6), (x[:, :, :8, :8], 20)):
        pil = np.asarray(Image.fromarray(img[0, 0].numpy()).resize((size, size), Image.BILINEAR)).astype(int)
        assert np.abs(resize_uint8(img, size)[0, 0].numpy().astype(int) - pil).max() <= 1
