"""The trial's model: `build_model` (the one place a backbone is built from a trial's config, for `harness
validate` on the meta device and for trials), `Net` (backbone + text encoder, trained and checkpointed together)
and `Conditioning` (label dropout in training, (cond, uncond) pairs in sampling)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from harness.seeds import seed_for
from plugins.errors import ConfigError
from plugins.specs import DataBundle, option_values

__all__ = ["Conditioning", "Net", "build_model"]


def build_model(config: Any, entries: dict[str, Any], info: Any, *, seed: int, device: torch.device,
                dtype: torch.dtype | None = None, context_dim: int | None = None) -> torch.nn.Module:
    """The one place a trial's backbone is built from its config (used by validate and by trials).
    context_dim: the built text encoder's width (trials pass it; validate reads text_encoder_options.dim)."""
    c = config
    scan = None
    if entries.get("scan") is not None:
        scan_seed = c.scan.seed if c.scan.seed is not None else seed
        scan = entries["scan"].build(seed=scan_seed)
        modality = getattr(entries["scan"], "modality", "any")
        if modality == "video" and info.frames is None:
            raise ConfigError(f"scan {c.scan.name!r} needs video data; dataset {info.name!r} is images")
    num_classes = info.num_classes if c.conditioning.kind == "class" else None
    if c.conditioning.kind == "class" and not num_classes:
        raise ConfigError(f"conditioning.kind=class but dataset {info.name!r} has no labels")
    if c.conditioning.kind == "text":
        if not info.captions:
            raise ConfigError(f"conditioning.kind=text but dataset {info.name!r} has no captions")
        if context_dim is None:
            context_dim = option_values(entries["text_encoder"], c.conditioning.text_encoder_options).get("dim")
    entry = entries["backbone"]
    options = option_values(entry, c.backbone.options)
    # parameter init drawn from a generator seeded by the trial seed: the same seed builds the same weights
    generator = torch.Generator().manual_seed(seed) if torch.device(device).type == "cpu" else None
    extra = {"generator": generator} if generator is not None else {}
    if entries.get("mixer") is not None:
        mixer = entries["mixer"]
        extra["mixer"] = functools.partial(mixer.build, **option_values(mixer, c.backbone.mixer.options))
    return entry.build(size=c.backbone.size, input_shape=info.shape, patch_size=c.backbone.patch_size, scan=scan,
                       num_classes=num_classes, context_dim=context_dim, pos_embed=c.backbone.pos_embed,
                       mixer_backend=c.backbone.mixer_backend, device=device, dtype=dtype, **extra, **options)


def build_transport(config: Any, entries: dict[str, Any]) -> Any:
    """The trial's zigma.interpolants.Transport (path, prediction, loss weight, time sampler, eps)."""
    from zigma.interpolants import Transport

    i = config.interpolant
    return Transport(entries["interpolant"].build(), prediction=i.prediction, loss_weight=i.loss_weight,
                     time_sampler=i.time_sampler, train_eps=i.train_eps, sample_eps=i.sample_eps)


def build_sampler(config: Any, entries: dict[str, Any], transport: Any) -> Any:
    """The trial's sampler, checked against its transport (`check`, where the sampler has one: an SDE that would
    divide by sigma = 0 is a ConfigError here, before training, not NaN samples after it)."""
    sampler = entries["sampler"].build(**option_values(entries["sampler"], config.sampler.options))
    if hasattr(sampler, "check"):
        try:
            sampler.check(transport)
        except ValueError as exc:
            raise ConfigError(f"sampler {config.sampler.name!r} with interpolant.path {config.interpolant.path!r} "
                              f"and interpolant.sample_eps {transport.sample_eps:g}: {exc}") from None
    return sampler


class Net(nn.Module):
    """The backbone plus the optional text encoder: trained, EMA-averaged and checkpointed together."""

    def __init__(self, backbone: nn.Module, text_encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone, self.text_encoder = backbone, text_encoder

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Forwarded to the backbone (stochastic depth draws from it)."""
        if hasattr(self.backbone, "set_generator"):
            self.backbone.set_generator(generator)

    def encode(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        """captions -> {'context': (N, S, D), 'context_mask': (N, S)}."""
        tokens, mask = self.text_encoder.encode(list(captions))
        return {"context": tokens, "context_mask": mask}

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, y: torch.Tensor | None = None,
                captions: Sequence[str] | None = None, text_ids: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, *shape), t (N,), and y (N,), captions (N strings) or the text encoder's text_ids (N, S) and
        text_mask (N, S) bool (`Conditioning.train_kwargs`: tensors only, so a training step can be captured)
        -> x's shape."""
        if captions is not None:
            return self.backbone(x, t, **self.encode(captions))
        if text_ids is not None:
            assert text_mask is not None, "text_ids come with text_mask"
            context = self.text_encoder.embed(text_ids, text_mask)         # (N, S, D)
            return self.backbone(x, t, context=context, context_mask=text_mask)
        return self.backbone(x, t, y=y)


class Conditioning:
    """Training-time model kwargs with label dropout, and the (cond, uncond) pairs sampling needs.

    Text: training captions become the text encoder's token ids and mask (`text_encoder.ids`), padded to one
    length for every batch, the longest tokenized training caption (`text_length`), so a captured training step
    sees the same shapes each step; the encoder's embedding of them runs inside the step (`Net.forward`)."""

    def __init__(self, kind: str, dropout: float, data: DataBundle, device: torch.device, *,
                 text_encoder: nn.Module | None = None) -> None:
        self.kind, self.dropout, self.data, self.device = kind, dropout, data, device
        self.num_classes = data.info.num_classes
        self.text_encoder, self.text_length = text_encoder, None
        if kind == "text" and text_encoder is not None:
            self.text_length = int(text_encoder.ids(_captions(data.train))[0].shape[1])

    def train_kwargs(self, batch: dict, gen: torch.Generator) -> dict[str, Any]:
        n = batch["x"].shape[0]
        if self.kind == "none":
            return {}
        drop = torch.rand(n, generator=gen) < self.dropout
        if self.kind == "class":
            drop = drop.to(batch["y"].device)    # labels may already be on the device (train.data_on_device)
            y = torch.where(drop, torch.full_like(batch["y"], self.num_classes), batch["y"])
            return {"y": y.to(self.device)}
        captions = ["" if d else c for d, c in zip(drop.tolist(), batch["caption"])]
        if self.text_encoder is None:
            raise ValueError("text conditioning needs the text encoder: Conditioning(..., text_encoder=...)")
        ids, mask = self.text_encoder.ids(captions, self.text_length)        # (N, S), (N, S)
        return {"text_ids": ids.to(self.device), "text_mask": mask.to(self.device)}

    def prompts(self, n: int, seed: int) -> tuple[torch.Tensor | None, list[str] | None]:
        """The labels (i mod num_classes) or captions (training captions, seeded order) of n samples."""
        if self.kind == "class":
            return torch.arange(n) % self.num_classes, None
        if self.kind == "text":
            train = self.data.train
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed_for(seed, 5)))
            return None, [train[int(order[i % len(order)])]["caption"] for i in range(n)]
        return None, None

    def grid_captions(self, labels: torch.Tensor | None, captions: list[str] | None,
                      n: int) -> tuple[list[str] | None, str]:
        """What the first n samples were conditioned on, as text, and its kind: their prompts ('prompt'), their
        class names when the dataset has them ('class'), else (None, '')."""
        if captions is not None:
            return list(captions[:n]), "prompt"
        names = self.data.info.class_names
        if labels is not None and names:
            return [names[int(y)] for y in labels[:n]], "class"
        return None, ""

    def pair(self, net: Net, labels: torch.Tensor | None, captions: list[str] | None) -> tuple[dict, dict]:
        """(cond, uncond) backbone kwargs of one batch."""
        if labels is not None:
            y = labels.to(self.device)
            return {"y": y}, {"y": torch.full_like(y, self.num_classes)}
        if captions is not None:  # one call, so both halves are padded to the same length
            n, both = len(captions), net.encode([*captions, *[""] * len(captions)])
            return {k: v[:n] for k, v in both.items()}, {k: v[n:] for k, v in both.items()}
        return {}, {}


def _captions(train: Any) -> list[str]:
    """Every caption of a training set (UInt8Dataset keeps them in `captions`; other sets are read item by item)."""
    captions = getattr(train, "captions", None)
    return list(captions) if captions is not None else [train[i]["caption"] for i in range(len(train))]
