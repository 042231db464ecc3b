"""cond-accuracy: does a sample show the attributes it was conditioned on? Scored by a small CNN trained on the
real data's attribute labels (shapes: colour, shape, position), trained once and cached per data fingerprint.

How far the score can be trusted is measured with it: the classifier's accuracy on the dataset's held-out real
images (`reference_images` / `reference_attributes` of the bundle's extras: for shapes, `num_reference` images from
a seed stream disjoint from training, with their exact attributes), recorded as `meta.classifier_real_accuracy`
(all attributes right; per attribute as `meta.classifier_real_accuracy.<attribute>`) with its count
`meta.classifier_real_n`, beside `meta.classifier_heldout_accuracy` (the 10 % of the classifier's own training
images it was not fitted on, count `meta.classifier_heldout_n`)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..errors import DataError
from ..specs import MetricContext

__all__ = ["AttributeClassifier", "CondAccuracy", "CondAccuracyOptions"]


class CondAccuracyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    num_train: int = Field(4_000, ge=100)     # real training images the classifier learns from (10% held out)
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(3e-3, gt=0)
    seed: int = 0


class AttributeClassifier(nn.Module):
    """uint8 images (N, C, H, W), resized to 32x32 -> one logit tensor (N, K_a) per attribute a."""

    def __init__(self, in_channels: int, head_sizes: Sequence[int]) -> None:
        super().__init__()
        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]

        self.body = nn.Sequential(
            *block(in_channels, 16), *block(16, 32), *block(32, 32),                        # 32 -> 4x4 (keeps position)
            nn.Flatten(), nn.Linear(32 * 16, 128), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(128, k) for k in head_sizes)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (N, C, H, W) uint8 -> [(N, K_a)] logits per attribute."""
        x = images.float() / 127.5 - 1.0
        x = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
        h = self.body(x)                                                                   # (N, 128)
        return [head(h) for head in self.heads]


def _accuracy(model: AttributeClassifier, images: torch.Tensor, targets: torch.Tensor,
              batch_size: int = 512) -> torch.Tensor:
    """Per-sample correctness (N, A) bool."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, images.shape[0], batch_size):
            logits = model(images[i:i + batch_size])
            out.append(torch.stack([lg.argmax(-1) for lg in logits], dim=-1))
    return torch.cat(out) == targets


def heldout_count(num_images: int, o: CondAccuracyOptions) -> int:
    """How many of the classifier's training images are held out of its fitting (the last 10 % it sees)."""
    return max(min(o.num_train, num_images) // 10, 1)


def train_classifier(images: torch.Tensor, targets: torch.Tensor, head_sizes: Sequence[int],
                     o: CondAccuracyOptions) -> tuple[AttributeClassifier, list[float]]:
    """Train on 90% of (images uint8 (N, C, H, W), targets (N, A)); return the model and held-out accuracies
    (per attribute, then all attributes jointly)."""
    n = min(o.num_train, images.shape[0])
    n_val = heldout_count(images.shape[0], o)
    with torch.random.fork_rng(devices=[]):     # seeded init without disturbing the caller's global RNG
        torch.manual_seed(o.seed)
        model = AttributeClassifier(images.shape[1], head_sizes)
    g = torch.Generator().manual_seed(o.seed)
    x_tr, y_tr, x_val, y_val = images[:n - n_val], targets[:n - n_val], images[n - n_val:n], targets[n - n_val:n]
    opt = torch.optim.Adam(model.parameters(), lr=o.lr)
    for _ in range(o.epochs):
        model.train()
        for idx in torch.randperm(x_tr.shape[0], generator=g).split(o.batch_size):
            logits = model(x_tr[idx])
            loss = sum(F.cross_entropy(lg, y_tr[idx, a]) for a, lg in enumerate(logits))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    correct = _accuracy(model, x_val, y_val)
    return model, [*correct.float().mean(0).tolist(), correct.all(-1).float().mean().item()]


class CondAccuracy:
    """Fraction of samples whose predicted attributes all match their conditioning (and per attribute)."""

    name = "cond-accuracy"

    def __init__(self, options: CondAccuracyOptions) -> None:
        self.options = options

    def _classifier(self, ctx: MetricContext, attrs: dict[str, tuple]) -> tuple[AttributeClassifier, list, str]:
        o, info = self.options, ctx.data.info
        key = {"dataset": info.name, "fingerprint": info.fingerprint, "attributes": list(attrs),
               "options": o.model_dump(), "version": 1}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = Path(ctx.cache_dir).expanduser() / f"cond-classifier-{info.name}-{digest}.pt"
        head_sizes = [len(v) for v in attrs.values()]
        if path.is_file():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            model = AttributeClassifier(saved["in_channels"], head_sizes)
            model.load_state_dict(saved["state_dict"])
            return model.eval(), saved["accuracy"], digest
        images = ctx.data.train.uint8()
        model, accuracy = train_classifier(images, ctx.data.extras["train_attributes"], head_sizes, o)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".pt.tmp")
        os.close(fd)
        torch.save({"state_dict": model.state_dict(), "accuracy": accuracy, "in_channels": images.shape[1]}, tmp)
        os.replace(tmp, path)
        return model.eval(), accuracy, digest

    def _targets(self, n: int, ctx: MetricContext) -> torch.Tensor:
        extras = ctx.data.extras
        if ctx.labels is not None:
            labels = ctx.labels.cpu().long()
            if labels.shape != (n,) or labels.min() < 0 or labels.max() >= (ctx.data.info.num_classes or 0):
                raise ValueError(f"cond-accuracy: labels must be ({n},) class indices below "
                                 f"{ctx.data.info.num_classes} (no null class), got {tuple(labels.shape)}")
            return extras["label_to_attributes"](labels)
        if ctx.captions is not None:
            if len(ctx.captions) != n:
                raise ValueError(f"cond-accuracy: {len(ctx.captions)} captions for {n} samples")
            return torch.tensor([extras["caption_to_attributes"](c) for c in ctx.captions], dtype=torch.long)
        raise ValueError("cond-accuracy: the context carries neither labels nor captions for the samples")

    def compute(self, fake: torch.Tensor, ctx: MetricContext) -> dict[str, Any]:
        attrs = ctx.data.extras.get("attributes")
        if not attrs or "train_attributes" not in ctx.data.extras:
            raise DataError(f"cond-accuracy needs a dataset with attribute labels (e.g. shapes); "
                            f"{ctx.data.info.name!r} has none")
        if fake.dtype != torch.uint8 or fake.ndim != 4:
            raise ValueError(f"cond-accuracy: expected uint8 samples (N, C, H, W), got {fake.dtype} "
                             f"{tuple(fake.shape)}")
        targets = self._targets(fake.shape[0], ctx)
        model, accuracy, digest = self._classifier(ctx, attrs)
        correct = _accuracy(model, fake.cpu(), targets)                                    # (N, A)
        out: dict[str, Any] = {self.name: correct.all(-1).float().mean().item()}
        for a, name in enumerate(attrs):
            out[f"{self.name}.{name}"] = correct[:, a].float().mean().item()
        return {**out,
                "meta.implementation": "attribute CNN (3 conv-BN blocks + MLP, a head per attribute), real data",
                "meta.extractor": f"attribute-cnn-{digest}",
                "meta.num_samples": int(fake.shape[0]),
                "meta.reference_hash": digest,
                "meta.classifier_heldout_accuracy": accuracy[-1],
                "meta.classifier_heldout_n": heldout_count(len(ctx.data.train), self.options),
                **self._on_real(model, ctx, attrs)}

    @staticmethod
    def _on_real(model: AttributeClassifier, ctx: MetricContext, attrs: dict[str, tuple]) -> dict[str, Any]:
        """The classifier's accuracy on the dataset's held-out real images with their true attributes."""
        images, targets = ctx.data.extras.get("reference_images"), ctx.data.extras.get("reference_attributes")
        if images is None or targets is None:
            return {}
        correct = _accuracy(model, images.cpu(), targets.cpu())                            # (N, A)
        return {"meta.classifier_real_accuracy": correct.all(-1).float().mean().item(),
                **{f"meta.classifier_real_accuracy.{name}": correct[:, a].float().mean().item()
                   for a, name in enumerate(attrs)},
                "meta.classifier_real_n": int(images.shape[0])}
