"""One trial on several processes: a rank's place in the torch.distributed group and what training, sampling and
the trial need from it (the processes are started by torchrun: harness/runner/torchrun.py).

Sameness with a one-device trial. Every rank loads the same global batch (train.batch_size) from the seeded
BatchStream, draws the same label dropout, noise x0 and times t for all of it from the trial's seeded generators
and keeps its rows (`shard`, `ShardedTransport`); DistributedDataParallel averages the ranks' shard-mean gradients,
which is the global batch's mean gradient, so parameters, EMA, learning rates and losses follow the one-device
trial's within float tolerance (DDP reduces in buckets, in another order). The logged loss is the mean over ranks
(equal shards: the global batch's mean). Stochastic depth (backbone drop_path > 0) draws its masks per rank from
the rank's own stream, so with it only the distribution matches.

Sampling is split by batches (rank r draws batches r, r + world, ...; each sample's noise comes from its own
seed, so the images do not depend on the split) and gathered on rank 0, which alone computes metrics, talks to
Optuna and MLflow and writes checkpoints and results; `on_lead` runs such a part on rank 0 and tells the other
ranks how it ended (a pruned or failed trial stops them with `RankStopped`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = ["Ranks", "RankStopped", "ShardedTransport", "init_ranks"]

T = TypeVar("T")


class RankStopped(Exception):
    """Rank 0 ended the trial (pruned, or failed in a part only it runs); this rank stops without a result."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the trial's group: global rank, world size, local rank, device and backend."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def lead(self) -> bool:
        """Rank 0: the one that talks to Optuna and MLflow and writes files."""
        return self.rank == 0

    @property
    def part(self) -> tuple[int, int]:
        """(rank, world), as harness.sampling.sample_images takes it."""
        return self.rank, self.world

    def span(self, n: int) -> tuple[int, int]:
        """[lo, hi) of this rank's rows of a global batch of n."""
        assert n % self.world == 0, f"a global batch of {n} does not split over {self.world} ranks"
        k = n // self.world
        return self.rank * k, (self.rank + 1) * k

    def shard(self, x1: torch.Tensor, kwargs: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """This rank's rows of a global batch x1 (N, ...) and of its model kwargs (tensors or lists of N)."""
        lo, hi = self.span(x1.shape[0])
        return x1[lo:hi], {k: v[lo:hi] for k, v in kwargs.items()}

    def wrap(self, stepper: Any) -> None:
        """DDP around the stepper's net (gradients averaged over ranks) and the global batch's noise and times."""
        from torch.nn.parallel import DistributedDataParallel

        from harness.compile import maybe_compile
        if stepper.graph is not None:        # DDP's gradient all-reduce runs from autograd hooks: not captured
            if stepper.cfg.cuda_graph is True:
                raise ValueError("train.cuda_graph is true but a distributed trial's step (DDP) is not captured "
                                 "as a CUDA graph; use auto or false")
            stepper.graph, stepper.graph_blocker = None, "a distributed trial (DDP) runs its step eagerly"
        ids = [self.device.index] if self.device.type == "cuda" else None
        stepper.model = maybe_compile(DistributedDataParallel(stepper.net, device_ids=ids), stepper.cfg.compile)
        stepper.transport = ShardedTransport(stepper.transport, self)

    # -- collectives ------------------------------------------------------------------------------------------
    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a tensor on this rank's device."""
        out = value.clone()
        dist.all_reduce(out)
        return out / self.world

    def earliest(self, bad_step: torch.Tensor) -> torch.Tensor:
        """The first step any rank marked (-1: none) from each rank's first marked step (-1: none)."""
        none = torch.iinfo(torch.long).max
        out = torch.where(bad_step < 0, torch.full_like(bad_step, none), bad_step)
        dist.all_reduce(out, op=dist.ReduceOp.MIN)
        return torch.where(out == none, torch.full_like(out, -1), out)

    def barrier(self) -> None:
        dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def lead_first(self, fn: Callable[[], T]) -> T:
        """fn on rank 0, then on the others (e.g. loading a checkpoint that rank 0 may move aside)."""
        out = fn() if self.lead else None
        self.barrier()
        return out if self.lead else fn()

    def on_lead(self, fn: Callable[[], T]) -> T | None:
        """fn on rank 0 only; the others wait for it and raise RankStopped when it raised (pruned, failed)."""
        error: BaseException | None = None
        out = None
        if self.lead:
            try:
                out = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others are told
                error = exc
        box = [None if error is None else f"{type(error).__name__}: {error}"]
        dist.broadcast_object_list(box, src=0)
        if error is not None:
            raise error
        if box[0] is not None:
            raise RankStopped(f"rank 0 ended the trial ({box[0]})")
        return out

    def gather_samples(self, samples: Any) -> Any | None:
        """Every rank's share of harness.sampling.Samples put together in sample order on rank 0 (None elsewhere);
        nfe is the mean per batch over all batches, batch_seconds rank 0's."""
        if self.world == 1:
            return samples
        mine = (samples.fake, samples.index, samples.nfe, samples.batches)
        parts: list[Any] | None = [None] * self.world if self.lead else None
        dist.gather_object(mine, parts, dst=0)
        if not self.lead:
            return None
        fake = torch.cat([p[0] for p in parts])
        index = torch.cat([p[1] for p in parts])
        assert torch.equal(index.sort().values, torch.arange(len(index))), "the ranks' samples must cover 0..n-1"
        batches = sum(p[3] for p in parts)
        nfe = sum(p[2] * p[3] for p in parts) / max(1, batches)
        return type(samples)(fake[index.argsort()], samples.labels, samples.captions, nfe, samples.batch_seconds,
                             None, batches)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


class ShardedTransport:
    """A Transport whose `loss` draws x0 and t for the whole global batch and uses this rank's rows of them, so
    each rank's loss terms are exactly the one-device trial's for the same samples."""

    def __init__(self, transport: Any, ranks: Ranks) -> None:
        self.transport, self.ranks = transport, ranks

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)

    def loss(self, model_fn: Callable, x1: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
        """x1: this rank's rows (N / world, ...) -> their per-sample loss (N / world,)."""
        n = x1.shape[0] * self.ranks.world
        x0, t = self.transport.draw((n, *x1.shape[1:]), generator=generator, device=x1.device, dtype=x1.dtype)
        lo, hi = self.ranks.span(n)
        return self.transport.loss(model_fn, x1, x0=x0[lo:hi], t=t[lo:hi])


def init_ranks() -> Ranks:
    """Join the group torchrun started (RANK, WORLD_SIZE, LOCAL_RANK in the environment): NCCL with one GPU per
    local rank when CUDA is there (CUDA_VISIBLE_DEVICES narrowed to the LOCAL_RANK-th listed device, so the rank
    sees only its own: no context on the others' GPUs, one CUDA RNG state in its checkpoints), gloo on the CPU
    otherwise; ZIGMA_HARNESS_DEVICE=cpu forces the CPU. Call it before anything starts CUDA."""
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if os.environ.get("ZIGMA_HARNESS_DEVICE", "cuda").startswith("cuda") and len(visible) > 1:
        if local >= len(visible):
            raise RuntimeError(f"local rank {local} has no GPU: CUDA_VISIBLE_DEVICES={','.join(visible)}")
        os.environ["CUDA_VISIBLE_DEVICES"] = visible[local]   # before CUDA starts: this rank sees its GPU only
        local_device = 0
    else:
        local_device = local
    name = os.environ.get("ZIGMA_HARNESS_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if local_device >= torch.cuda.device_count():
            raise RuntimeError(f"local rank {local} has no GPU: {torch.cuda.device_count()} visible "
                               f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r})")
        device = torch.device("cuda", local_device)
        torch.cuda.set_device(device)
        try:
            dist.init_process_group("nccl", device_id=device)      # bound to its GPU from the start (torch >= 2.3)
        except TypeError:
            dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return Ranks(rank, world, local, device, dist.get_backend())
