"""A small trainable text encoder over a dataset's caption vocabulary (works offline, trained with the backbone)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["PAD", "UNK", "TokenEmbeddingTextEncoder", "tokenize"]

PAD, UNK = "<pad>", "<unk>"


def tokenize(caption: str) -> list[str]:
    """Lower-cased whitespace tokens: 'A red  Square' -> ['a', 'red', 'square']."""
    return caption.lower().split()


class TokenEmbeddingTextEncoder(nn.Module):
    """captions -> (tokens (N, S, dim), mask (N, S) bool): word embedding + learned position embedding.

    Vocabulary: index 0 is padding, 1 unknown words, then `vocab` (lower-cased, de-duplicated, in order).
    S is the longest caption of the batch, capped at `max_length` (longer captions are truncated), or a fixed
    `length` (a CUDA-graphed training step needs the same shapes every step; padding is masked, and the backbones
    give masked positions zero weight); an empty caption gives an all-False mask row, which the backbones read as
    the null caption.
    """

    def __init__(self, vocab: Sequence[str], *, max_length: int = 32, dim: int = 128, device=None, dtype=None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        words = list(dict.fromkeys(w.lower() for w in vocab if w.lower() not in (PAD, UNK)))
        self.vocab = [PAD, UNK, *words]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_length, self.dim = max_length, dim
        self.tokens = nn.Embedding(len(self.vocab), dim, padding_idx=0, device=device, dtype=dtype)
        self.positions = nn.Parameter(torch.empty(max_length, dim, device=device, dtype=dtype))
        nn.init.normal_(self.tokens.weight, std=0.02, generator=generator)
        nn.init.normal_(self.positions, std=0.02, generator=generator)
        with torch.no_grad():
            self.tokens.weight[0].zero_()

    def ids(self, captions: Sequence[str], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """captions -> token ids (N, S) int64 and mask (N, S) bool, on the encoder's device.
        length: a fixed S (at most max_length) instead of the batch's longest caption."""
        rows = [[self.index.get(w, 1) for w in tokenize(c)][: self.max_length] for c in captions]
        longest = max(1, max((len(r) for r in rows), default=1))
        if length is not None and not longest <= length <= self.max_length:
            raise ValueError(f"padding length {length} must lie between the longest caption ({longest} tokens) "
                             f"and max_length {self.max_length}")
        length = longest if length is None else length
        ids = torch.zeros(len(rows), length, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        device = self.positions.device
        return ids.to(device), (ids != 0).to(device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (N, S) -> (N, S, dim)."""
        return self.tokens(ids) + self.positions[: ids.shape[1]]           # (N, S, dim)

    def embed(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids (N, S), mask (N, S) (unused: padding is masked downstream) -> (N, S, dim)."""
        return self(ids)

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """captions -> (tokens (N, S, dim), mask (N, S) bool)."""
        ids, mask = self.ids(captions)
        return self.embed(ids, mask), mask
