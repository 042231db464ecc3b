"""Training batches: today's DataLoader over BatchStream, or the whole training set held on the device.

`train.data_on_device` picks the source (see `batch_source`). The resident source stacks every item once, keeps
the stack on the device and cuts each batch out of it with the same (seed, epoch) permutation BatchStream draws,
so both sources yield bit-identical batches from any resume position (epoch, batch); it runs no per-step
DataLoader, collation or host-to-device copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from harness.training import BatchStream
from plugins.datasets import UInt8Dataset

__all__ = ["ResidentData", "batch_source", "loader_source"]

#: "auto" keeps the set on a CUDA device only below this share of the device's free memory
_FREE_SHARE = 0.25


class ResidentData:
    """Every training item stacked once: x (N, *shape) on `device`, y (N,) when labelled, captions on the host."""

    def __init__(self, dataset: torch.utils.data.Dataset, device: torch.device) -> None:
        self.device, self.n = device, len(dataset)
        if isinstance(dataset, UInt8Dataset):   # the same arithmetic as its __getitem__, on the whole stack
            self.x = (dataset.uint8().float() / 127.5 - 1.0).to(device)                   # (N, *shape)
            self.y = None if dataset.labels is None else dataset.labels.to(device)
            self.captions = None if dataset.captions is None else list(dataset.captions)
            return
        items = [dataset[i] for i in range(self.n)]
        self.x = torch.stack([it["x"] for it in items]).to(device)                        # (N, *shape)
        self.y = torch.stack([torch.as_tensor(it["y"]) for it in items]).to(device) if "y" in items[0] else None
        self.captions = [it["caption"] for it in items] if "caption" in items[0] else None

    @staticmethod
    def nbytes(dataset: torch.utils.data.Dataset) -> int:
        """Device bytes the stacked set would take (x of one item times N; labels are negligible)."""
        return dataset[0]["x"].element_size() * dataset[0]["x"].numel() * len(dataset)

    def batches(self, batch_size: int, seed: int, epoch: int, batch: int) -> Iterator[dict[str, Any]]:
        """BatchStream's batches from (epoch, batch) on, as dicts like the DataLoader's collated ones."""
        stream = BatchStream(self.n, batch_size, seed, epoch=epoch, batch=batch)
        while True:
            order = stream._order(epoch)
            on_device = order.to(self.device)
            for b in range(batch, stream.per_epoch):
                lo, hi = b * batch_size, (b + 1) * batch_size
                idx = on_device[lo:hi]
                out: dict[str, Any] = {"x": self.x.index_select(0, idx)}
                if self.y is not None:
                    out["y"] = self.y.index_select(0, idx)
                if self.captions is not None:
                    out["caption"] = [self.captions[i] for i in order[lo:hi].tolist()]
                yield out
            epoch, batch = epoch + 1, 0


def fits(dataset: torch.utils.data.Dataset, device: torch.device) -> bool:
    """Whether "auto" holds the set on `device`: a CUDA device with the set under a quarter of its free memory."""
    if device.type != "cuda":
        return False
    free, _total = torch.cuda.mem_get_info(device)
    return ResidentData.nbytes(dataset) < _FREE_SHARE * free


def loader_source(dataset: torch.utils.data.Dataset, *, batch_size: int, seed: int, num_workers: int,
                  device: torch.device) -> Callable[[int, int], Iterator[dict]]:
    """Today's path: loader_for(epoch, batch) -> a DataLoader over BatchStream from that position."""

    def loader_for(epoch: int, batch: int) -> Iterator[dict]:
        sampler = BatchStream(len(dataset), batch_size, seed, epoch=epoch, batch=batch)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                                             pin_memory=device.type == "cuda", persistent_workers=num_workers > 0)
        return iter(loader)

    return loader_for


def batch_source(mode: str, dataset: torch.utils.data.Dataset, *, batch_size: int, seed: int,
                 num_workers: int, device: torch.device) -> tuple[Callable[[int, int], Iterator[dict]], str]:
    """(loader_for(epoch, batch), "resident" | "loader") for train.data_on_device = off | auto | on."""
    if mode not in ("off", "auto", "on"):
        raise ValueError(f"unknown train.data_on_device {mode!r} (off, auto, on)")
    if mode == "on" or (mode == "auto" and fits(dataset, device)):
        resident = ResidentData(dataset, device)
        return (lambda epoch, batch: resident.batches(batch_size, seed, epoch, batch)), "resident"
    return loader_source(dataset, batch_size=batch_size, seed=seed, num_workers=num_workers,
                         device=device), "loader"
