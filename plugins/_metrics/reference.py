"""Reference features, computed once per (dataset, split, shape, extractor, sample count, seed, data fingerprint)
and cached as .npz under MetricContext.cache_dir, named by a content hash of those keys."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..specs import MetricContext
from .features import extract_features

__all__ = ["ReferenceFeatures", "num_reference", "reference_features", "reference_key"]

_CACHE_VERSION = 1   # bump when the extraction code changes numbers


@dataclass(frozen=True)
class ReferenceFeatures:
    feats: np.ndarray        # (n, D) float32, or (n * T, D) for per-frame features
    key: dict                # what the hash covers
    hash: str                # 16 hex digits
    path: Path
    cached: bool             # loaded from the cache rather than computed


def num_reference(ctx: MetricContext, requested: int | None, num_fake: int) -> int:
    """The reference sample count: `requested` or the number of fakes, clipped to the held-out set."""
    available = ctx.data.extras.get("num_reference")
    n = requested if requested is not None else num_fake
    if available is not None:
        if requested is not None and requested > available:
            raise DataError(f"{ctx.data.info.name}: num_reference={requested} but the held-out set has {available}")
        n = min(n, available)
    return n


def reference_key(ctx: MetricContext, extractor_name: str, n: int, seed: int, per_frame: bool) -> dict:
    info = ctx.data.info
    return {
        "dataset": info.name,
        "split": ctx.data.extras.get("reference_split", "reference"),
        "shape": list(ctx.data.extras.get("pixel_shape", info.shape)),
        "extractor": extractor_name,
        "num_samples": n,
        "seed": seed,
        "per_frame": per_frame,
        "fingerprint": info.fingerprint,
        "version": _CACHE_VERSION,
    }


def _hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def reference_features(ctx: MetricContext, extractor, *, n: int, seed: int = 0, per_frame: bool = False,
                       batch_size: int = 64, use_cache: bool = True) -> ReferenceFeatures:
    """Features of ctx.data.reference(n, seed): from the cache when present, else extracted and written there."""
    key = reference_key(ctx, extractor.name, n, seed, per_frame)
    digest = _hash(key)
    path = Path(ctx.cache_dir).expanduser() / f"ref-{key['dataset']}-{digest}.npz"
    if use_cache and path.is_file():
        with np.load(path) as z:
            return ReferenceFeatures(feats=z["feats"], key=key, hash=digest, path=path, cached=True)
    real = ctx.data.reference(n, seed=seed)
    if real.dtype != torch.uint8:
        raise DataError(f"{key['dataset']}: reference() returned {real.dtype}, expected uint8")
    if per_frame:
        real = real.flatten(0, 1)                                                          # (n*T, C, H, W)
    feats = extract_features(extractor, real, device=ctx.device, batch_size=batch_size, progress=ctx.progress,
                             description=f"reference features ({key['dataset']})")
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, feats=feats, key=json.dumps(key, sort_keys=True))
        os.replace(tmp, path)          # atomic: parallel trials never read a half-written file
    return ReferenceFeatures(feats=feats, key=key, hash=digest, path=path, cached=False)
