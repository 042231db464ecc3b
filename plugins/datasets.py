"""Built-in plugin: datasets. Loaders live in plugins/_data; generators in zigma.data."""

from __future__ import annotations

from ._data.common import UInt8Dataset  # noqa: F401 - public: harness/data_stream.py stacks it on the device
from ._data.folders import ImageFolderOptions, VideoFolderOptions, load_image_folder, load_video_folder
from ._data.procedural import MovingDigitsOptions, ShapesOptions, load_moving_digits, load_shapes
from ._data.real import DigitsOptions, FashionMNISTOptions, load_digits, load_fashion_mnist
from .hookspecs import hookimpl
from .specs import DatasetEntry


@hookimpl
def register_datasets(register):
    """digits, fashion-mnist, shapes, moving-digits, image-folder, video-folder."""
    register(DatasetEntry(
        name="digits", description="scikit-learn's 1,797 real 8x8 handwritten digits, resized (always offline)",
        load=load_digits, options=DigitsOptions))
    register(DatasetEntry(
        name="fashion-mnist",
        description="70,000 real 28x28 Fashion-MNIST images (Debian dataset-fashion-mnist, or download: true)",
        load=load_fashion_mnist, options=FashionMNISTOptions))
    register(DatasetEntry(
        name="shapes", description="procedural coloured shapes with exact captions and attribute labels",
        load=load_shapes, options=ShapesOptions))
    register(DatasetEntry(
        name="moving-digits", description="procedural videos of real sklearn digits bouncing in a canvas",
        load=load_moving_digits, options=MovingDigitsOptions, modality="video"))
    register(DatasetEntry(
        name="image-folder",
        description="your own images (PIL); optional latents from a local diffusers AutoencoderKL",
        load=load_image_folder, options=ImageFolderOptions))
    register(DatasetEntry(
        name="video-folder", description="your own videos: folders of frames or animated GIFs (PIL)",
        load=load_video_folder, options=VideoFolderOptions, modality="video"))
