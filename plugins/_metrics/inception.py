"""FID with clean-fid's Inception-v3 (the standard number). Needs the weights file, which no package ships.

The file is looked up — without touching clean-fid or the network — in this order: the metric option
`weights_path`, the environment variable ZIGMA_HARNESS_INCEPTION_WEIGHTS, the `harness fid prefetch` default
(~/.cache/zigma-harness/inception-2015-12-05.pt) and clean-fid's own location (/tmp/inception-2015-12-05.pt).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from ..errors import HarnessError, MissingDependencyError

__all__ = [
    "DEFAULT_DEST",
    "ENV_VAR",
    "WEIGHTS_NAME",
    "WEIGHTS_URL",
    "CleanInception",
    "download_weights",
    "resolve_weights",
]

ENV_VAR = "ZIGMA_HARNESS_INCEPTION_WEIGHTS"
WEIGHTS_NAME = "inception-2015-12-05.pt"
#: where clean-fid 0.1.35 downloads it from (cleanfid/downloads_helper.py)
WEIGHTS_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
DEFAULT_DEST = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zigma-harness" / WEIGHTS_NAME
_CLEANFID_DEFAULT = Path("/tmp") / WEIGHTS_NAME


def resolve_weights(weights_path: str | None) -> Path:
    """The Inception weights file, or MissingDependencyError (one line) naming it and both ways to provide it."""
    explicit = weights_path or os.environ.get(ENV_VAR) or None
    candidates = [Path(explicit).expanduser()] if explicit else [DEFAULT_DEST, _CLEANFID_DEFAULT]
    for path in candidates:
        if path.is_file():
            return path
    missing = candidates[0]
    raise MissingDependencyError(
        f"fid: Inception weights file {missing} not found. Provide {WEIGHTS_NAME} with the study option "
        f"eval.metric_options.fid.weights_path or the environment variable {ENV_VAR}=/path/to/{WEIGHTS_NAME} "
        f"(`harness fid prefetch` downloads it on a machine with internet access); offline, use fd-effnet")


class CleanInception:
    """clean-fid 'clean' mode: PIL bicubic float resize to 299 per channel, then Inception pool3 (2048-d)."""

    dim = 2048
    name = "clean-fid-inception-v3-pool3@299px"

    def __init__(self, weights: Path, cache_dir: str | None = None) -> None:
        self.weights, self.cache_dir = Path(weights), cache_dir
        self._model: torch.nn.Module | None = None
        self._resize = None

    def _load(self, device: torch.device) -> torch.nn.Module:
        if self._model is None:
            from cleanfid.inception_torchscript import InceptionV3W
            from cleanfid.resize import build_resizer

            folder = self.weights.parent
            if self.weights.name != WEIGHTS_NAME:   # InceptionV3W reads <folder>/inception-2015-12-05.pt
                target = self.weights.resolve()
                digest = hashlib.sha256(str(target).encode()).hexdigest()[:12]
                folder = Path(self.cache_dir or tempfile.gettempdir()) / f"zigma-inception-{digest}"
                folder.mkdir(parents=True, exist_ok=True)
                link = folder / WEIGHTS_NAME
                try:
                    link.symlink_to(target)
                except FileExistsError:                 # made earlier, or by a parallel worker
                    pass
            self._model = InceptionV3W(str(folder), download=False, resize_inside=False).to(device).eval()
            self._resize = build_resizer("clean")
        return self._model

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        model = self._load(device)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        hwc = images.permute(0, 2, 3, 1).cpu().numpy()                                     # (B, H, W, 3) uint8
        x = np.stack([self._resize(im) for im in hwc]).transpose(0, 3, 1, 2)               # (B, 3, 299, 299)
        return model(torch.from_numpy(np.ascontiguousarray(x)).to(device)).float().cpu()   # (B, 2048)


def download_weights(dest: Path, *, url: str = WEIGHTS_URL, timeout: float = 60.0) -> Path:
    """Download the Inception weights to dest (atomically); for online machines only (`harness fid prefetch`)."""
    dest = Path(dest).expanduser()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, f)
        torch.jit.load(tmp, map_location="cpu")   # refuse a truncated or wrong file
        os.replace(tmp, dest)
    except OSError as exc:
        raise HarnessError(f"fid prefetch: cannot download {url} to {dest}: {exc}") from None
    except RuntimeError as exc:
        raise HarnessError(f"fid prefetch: {url} did not give a loadable TorchScript file: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
