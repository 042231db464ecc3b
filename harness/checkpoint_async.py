"""Checkpoints written from a background thread (`train.checkpoint_async`): the training thread takes a CPU copy
of the blob, a thread serialises it to a temporary file and renames it into place (atomic, as the synchronous
path). Reading or writing the same path first waits for the pending write, so a resume never sees a stale file.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import torch

__all__ = ["write_atomic", "write_in_background", "wait_pending"]

_PENDING: dict[Path, tuple[threading.Thread, list[BaseException]]] = {}
_LOCK = threading.Lock()


def write_atomic(blob: dict[str, Any], path: Path) -> None:
    """torch.save to path.tmp, then rename over path: a kill never leaves a torn checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def _cpu_copy(obj: Any) -> Any:
    """Tensors copied to the host (a snapshot the training thread may then overwrite); containers rebuilt."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def write_in_background(blob: dict[str, Any], path: Path) -> None:
    """Snapshot `blob` now (device -> host copy), write it atomically from a thread; errors surface at the next
    wait_pending(path)."""
    key = Path(path).resolve()
    wait_pending(key)
    snapshot, errors = _cpu_copy(blob), []

    def work() -> None:
        try:
            write_atomic(snapshot, path)
        except BaseException as exc:  # noqa: BLE001 - handed to the training thread at the next wait
            errors.append(exc)

    thread = threading.Thread(target=work, name=f"checkpoint:{key.name}")   # non-daemon: finishes at exit
    with _LOCK:
        _PENDING[key] = (thread, errors)
    thread.start()


def wait_pending(path: Path) -> None:
    """Block until the background write of `path` (if any) is on disk; re-raise its error."""
    key = Path(path).resolve()
    with _LOCK:
        pending = _PENDING.pop(key, None)
    if pending is None:
        return
    thread, errors = pending
    thread.join()
    if errors:
        raise errors[0]
