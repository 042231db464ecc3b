"""Resumable checkpoints of a trial: what they hold (TrainState, RNG states), an atomic write, and a safe load.

A checkpoint holds tensors and primitive containers only, so it loads with `torch.load(weights_only=True)`: no code
in the file runs. A file that fails that, or lacks the structure `save_checkpoint` writes, is moved aside and the
trial starts afresh and says so (see `load_checkpoint`).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.checkpoint_async import wait_pending, write_atomic, write_in_background
from harness.errors import TrialFailed

__all__ = ["TrainState", "save_checkpoint", "load_checkpoint"]

_log = logging.getLogger("harness.training")


@dataclass
class TrainState:
    """What a checkpoint holds besides weights: progress, data position and timing.

    The cost fields (timed_*, wall, peak_memory_gb) describe the segment that ran last: a resumed run starts
    them afresh, so a resumed trial's figures come from the segment that finished it (`resumed_from` > 0)."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    train_seconds: float = 0.0                 # wall seconds of every segment together
    timed_images: int = 0                      # images of the timed steps (warm-up excluded)
    timed_seconds: float = 0.0                 # seconds spent in those steps (CUDA events or perf_counter)
    timed_steps: int = 0
    last_loss: float = float("nan")
    peak_memory_gb: float = 0.0                # GB = 1e9 bytes
    resumed_from: int = 0
    wall: dict[str, float] = field(default_factory=dict)   # host wall seconds: data, step, log, eval, checkpoint
    extras: dict[str, Any] = field(default_factory=dict)


def _rng_state(gens: dict[str, torch.Generator]) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in gens.items()}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], gens: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    for k, g in gens.items():
        g.set_state(state[k])
    if "cuda" in state and torch.cuda.is_available():   # as many devices as both processes see (a rank sees one)
        torch.cuda.set_rng_state_all(list(state["cuda"])[:torch.cuda.device_count()])


def _state_primitive(state: TrainState) -> dict[str, Any]:
    """TrainState as primitive containers (what `torch.load(weights_only=True)` accepts)."""
    out = dict(state.__dict__)
    out["extras"] = json.loads(json.dumps(state.extras, default=str))
    return out


def save_checkpoint(path: Path, *, net, ema, opt, scaler, state: TrainState, gens, config_hash: str,
                    background: bool = False) -> None:
    """Atomic write (tmp file + rename) so a kill never leaves a torn checkpoint; background=True writes a CPU
    snapshot from a thread (harness/checkpoint_async.py). Tensors and primitive containers only, so it loads
    with `weights_only=True`."""
    blob = {"version": 1, "config_hash": config_hash, "net": net.state_dict(), "ema": ema.state_dict(),
            "opt": opt.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "state": _state_primitive(state), "rng": _rng_state(gens)}
    (write_in_background if background else write_atomic)(blob, path)


class _Refused(Exception):
    """A checkpoint that does not load safely or does not have the structure save_checkpoint writes."""


def _check_weights(blob: dict, name: str, module: nn.Module) -> None:
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = blob.get(name)
    if not isinstance(got, dict) or set(got) != set(want):
        raise _Refused(f"'{name}' does not hold this model's parameters")
    for k, v in got.items():
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != want[k]:
            raise _Refused(f"'{name}.{k}' is not a tensor of shape {want[k]}")


def _read_checkpoint(path: Path) -> dict:
    """The checkpoint's dict, loaded with weights_only=True (no code runs) and checked; raises _Refused."""
    try:
        with warnings.catch_warnings():  # a hostile file's pickle protocol is not worth a warning
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means: not a safe checkpoint
        raise _Refused(f"unreadable: cut short, damaged, or not a checkpoint the runner wrote (not loadable "
                       f"with weights_only=True: {type(exc).__name__}: "
                       f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from None
    if not isinstance(blob, dict):
        raise _Refused(f"expected a dict, got {type(blob).__name__}")
    missing = {"config_hash", "net", "ema", "opt", "scaler", "state", "rng"} - set(blob)
    if missing:
        raise _Refused(f"missing {sorted(missing)}")
    if not isinstance(blob["config_hash"], str):
        raise _Refused("'config_hash' is not a string")
    return blob


def _check_structure(blob: dict, *, net, ema, gens) -> TrainState:
    """The TrainState of a checkpoint whose weights, optimizer and RNG entries look like ours; raises _Refused."""
    _check_weights(blob, "net", net)
    _check_weights(blob, "ema", ema)
    if not isinstance(blob["opt"], dict) or not isinstance(blob["rng"], dict):
        raise _Refused("'opt' or 'rng' is not a dict")
    for k in ("torch", *gens):
        if not isinstance(blob["rng"].get(k), torch.Tensor):
            raise _Refused(f"'rng.{k}' is not a tensor")
    try:
        state = TrainState(**blob["state"])
    except TypeError as exc:
        raise _Refused(f"'state' does not match TrainState ({exc})") from None
    return state


def _set_aside(path: Path) -> Path:
    """Move a refused checkpoint to checkpoint.refused.pt (then .refused-1.pt, ...); nothing is deleted."""
    target, n = path.with_name(f"{path.stem}.refused{path.suffix}"), 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.stem}.refused-{n}{path.suffix}")
    os.replace(path, target)
    return target


def load_checkpoint(path: Path, *, net, ema, opt, scaler, gens, config_hash: str) -> TrainState | None:
    """Restore everything from `path`; None when absent or written for another configuration.

    Loads with `weights_only=True`: a file that fails that (a crafted pickle) or does not have the structure
    save_checkpoint writes is not used; it is moved aside and a fresh TrainState with
    `extras['checkpoint_refused']` (the reason) is returned, so the trial starts from step 0 and says so.
    """
    wait_pending(path)
    if not path.exists():
        return None
    try:
        blob = _read_checkpoint(path)
        if blob["config_hash"] != config_hash:
            return None
        state = _check_structure(blob, net=net, ema=ema, gens=gens)
        try:   # first: the optimizer checks its groups before it changes anything
            opt.load_state_dict(blob["opt"])
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise _Refused(f"'opt' does not fit this optimizer ({type(exc).__name__}: {exc})") from None
    except _Refused as exc:
        moved = _set_aside(path)
        reason = f"{path.name} refused: {exc}; moved to {moved.name}, starting from step 0"
        _log.warning("%s: %s", path.parent.name, reason)
        return TrainState(extras={"checkpoint_refused": reason})
    try:
        net.load_state_dict(blob["net"])
        ema.load_state_dict(blob["ema"])
        if scaler is not None and blob["scaler"] is not None:
            scaler.load_state_dict(blob["scaler"])
        _set_rng_state(blob["rng"], gens)
    except Exception as exc:  # noqa: BLE001 - half restored: this attempt cannot go on, the next starts fresh
        moved = _set_aside(path)
        raise TrialFailed(f"{path.name} could not be restored ({type(exc).__name__}: {exc}); moved to "
                          f"{moved.name}, a rerun starts from step 0") from None
    state.resumed_from = state.step
    return state
