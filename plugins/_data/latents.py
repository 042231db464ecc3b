"""Latent mode for image folders: encode images with a diffusers AutoencoderKL read from a LOCAL folder.

In latent mode the training items' 'x' are scaled VAE latents (C_z, H/8, W/8) — roughly unit-variance, not
clipped to [-1, 1] — while `reference(n)` still returns real uint8 *pixels* (n, 3, H, W) for the metrics.
`extras['decode'](latents) -> uint8 pixels` turns generated latents into images before a metric sees them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..errors import DataError, MissingDependencyError
from ..specs import DataBundle
from .common import fingerprint, to_uint8

__all__ = ["LatentDataset", "encode_bundle", "load_vae"]


def load_vae(vae_path: str, device: torch.device) -> torch.nn.Module:
    """AutoencoderKL.from_pretrained(vae_path, local_files_only=True): never downloads."""
    path = Path(vae_path).expanduser()
    if not path.is_dir():
        raise DataError(f"image-folder: vae_path {path} is not a folder (a local diffusers AutoencoderKL, "
                        f"with config.json and the weights)")
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise MissingDependencyError("image-folder: vae_path needs the 'diffusers' package, which is not "
                                     "installed (pip install diffusers)") from None
    try:
        vae = AutoencoderKL.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise DataError(f"image-folder: cannot load an AutoencoderKL from {path}: {exc}") from None
    return vae.to(device).eval().requires_grad_(False)


class LatentDataset(torch.utils.data.Dataset):
    """Items {'x': latents (C_z, h, w) float, 'y'?} from a precomputed latent tensor."""

    def __init__(self, latents: torch.Tensor, labels: torch.Tensor | None) -> None:
        self.latents, self.labels = latents, labels

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, i: int) -> dict:
        item: dict = {"x": self.latents[i]}
        if self.labels is not None:
            item["y"] = self.labels[i]
        return item


@torch.no_grad()
def encode_bundle(bundle: DataBundle, *, vae_path: str, batch_size: int) -> DataBundle:
    """Replace the pixel training set by scaled latents (posterior means); keep pixel references for metrics."""
    if bundle.info.channels != 3:
        raise DataError("image-folder: vae_path needs channels: 3 (an AutoencoderKL encodes RGB images)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vae = load_vae(vae_path, device)
    scale = float(getattr(vae.config, "scaling_factor", 1.0))
    pixels = bundle.train.uint8()                                                          # (N, 3, H, W)
    chunks = []
    for i in range(0, pixels.shape[0], batch_size):
        x = pixels[i:i + batch_size].to(device).float() / 127.5 - 1.0
        chunks.append((vae.encode(x).latent_dist.mean * scale).float().cpu())              # (B, C_z, h, w)
    latents = torch.cat(chunks)

    @torch.no_grad()
    def decode(z: torch.Tensor) -> torch.Tensor:
        """(N, C_z, h, w) scaled latents -> uint8 pixels (N, 3, H, W)."""
        out = [vae.decode(z[i:i + batch_size].to(device) / scale).sample.float().cpu()
               for i in range(0, z.shape[0], batch_size)]
        return to_uint8((torch.cat(out) + 1) / 2)

    info = dataclasses.replace(bundle.info, channels=latents.shape[1], height=latents.shape[2],
                               width=latents.shape[3],
                               fingerprint=fingerprint(latents, extra=bundle.info.fingerprint + vae_path))
    extras = {**bundle.extras, "latent": True, "decode": decode, "scaling_factor": scale, "vae_path": vae_path,
              "pixel_shape": tuple(pixels.shape[1:])}
    return DataBundle(info=info, train=LatentDataset(latents, bundle.train.labels),
                      reference=bundle.reference, extras=extras)
