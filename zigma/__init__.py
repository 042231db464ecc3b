"""zigma: a pure-torch library of Mamba diffusion models (scan orders, mixer, backbones, interpolants)."""

__all__ = ["__version__"]
__version__ = "0.1.0"
