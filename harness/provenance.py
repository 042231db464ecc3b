"""What produced a result: git SHA, package versions, device, precision flags, mixer backend and seeds."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["git_info", "package_versions", "device_info", "precision_flags", "mixer_backend", "provenance"]

#: distributions whose versions change numbers (or how they are measured)
PACKAGES = ("torch", "torchvision", "numpy", "einops", "torchdiffeq", "mamba-ssm", "causal-conv1d", "pluggy",
            "pydantic", "optuna", "mlflow-skinny", "mlflow", "torchmetrics", "clean-fid", "scikit-learn",
            "efficientnet-lite-pytorch", "zigma-harness")

_REPO = Path(__file__).resolve().parent.parent


def git_info(repo: Path = _REPO) -> dict[str, Any]:
    """{'sha': ..., 'dirty': bool} of the code that runs; sha None where no source says it.

    In order: ZIGMA_HARNESS_GIT_SHA (a copy whose .git is absent or stale, e.g. a GPU machine given the working
    tree; dirty unknown unless ZIGMA_HARNESS_GIT_DIRTY is 0 or 1); harness/_build_info.py, written by setup.py
    when a non-editable install is built; git in the checkout."""
    if os.environ.get("ZIGMA_HARNESS_GIT_SHA"):
        flag = os.environ.get("ZIGMA_HARNESS_GIT_DIRTY")
        return {"sha": os.environ["ZIGMA_HARNESS_GIT_SHA"], "dirty": None if flag not in ("0", "1") else flag == "1"}
    if repo == _REPO and (built := _build_info()) is not None:
        return built

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10,
                                 check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if sha else None
    return {"sha": sha, "dirty": bool(status) if status is not None else None}


def _build_info() -> dict[str, Any] | None:
    """The commit a non-editable install was built from (harness/_build_info.py), None in a checkout."""
    try:
        from harness import _build_info  # type: ignore[attr-defined]
    except ImportError:
        return None
    return {"sha": _build_info.GIT_SHA, "dirty": _build_info.GIT_DIRTY}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of `names` (absent packages are left out)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


SHARING = "ZIGMA_HARNESS_TRIALS_PER_DEVICE"   # set by harness.launch for workers that share a device
_TRIALS_IN_PROCESS = 0     # trials this process has started (provenance() counts them)


def device_info(device: torch.device) -> dict[str, Any]:
    """Host, CPU and (on CUDA) GPU name, capability, memory and CUDA/cuDNN versions."""
    info: dict[str, Any] = {
        "device": str(device), "host": socket.gethostname(), "platform": platform.platform(),
        "python": sys.version.split()[0], "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        # workers started on this device side by side (`harness run --trials-per-gpu K`): its cost figures are shared
        "trials_per_device": int(os.environ.get(SHARING) or 1),
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                    gpu_memory_gb=round(props.total_memory / 1e9, 2), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), gpu_count=torch.cuda.device_count())
    return info


def precision_flags(device: torch.device, precision: str) -> dict[str, Any]:
    """The autocast dtype actually used and every global flag that changes matmul numerics."""
    return {
        "precision": precision,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "device_type": device.type,
    }


def mixer_backend(requested: str, device: torch.device) -> str:
    """The backend the mixer runs: 'auto' is fused where mamba-ssm imports and the device is CUDA."""
    if requested != "auto":
        return requested
    try:
        from zigma.mixer import fused_available
    except ImportError:
        return "reference"
    return "fused" if device.type == "cuda" and fused_available() else "reference"


def _device_label(info: dict[str, Any]) -> str:
    if "gpu" in info:
        return f"{info['gpu']} ({info['device']}, CUDA {info['cuda']})"
    return f"cpu ({info['cpu']}, {info['cpu_count']} cores, {info['torch_threads']} threads)"


def provenance(*, device: torch.device, precision: str, mixer_backend_requested: str, seeds: dict[str, Any],
               plugins: dict[str, str]) -> dict[str, Any]:
    """Everything provenance.json holds for one trial (flat strings first, the details beside them)."""
    global _TRIALS_IN_PROCESS
    _TRIALS_IN_PROCESS += 1
    git = git_info()
    dev = device_info(device)
    # the how-many-th trial of its process: memory or caches a process keeps across trials show up against it
    dev["trial_in_process"] = _TRIALS_IN_PROCESS
    return {
        "git_sha": git["sha"],
        "git_dirty": git["dirty"],
        "versions": package_versions(),
        "device": _device_label(dev),
        "precision": precision,
        "mixer_backend": mixer_backend(mixer_backend_requested, device),
        "seeds": seeds,
        "plugins": plugins,
        "device_info": dev,
        "precision_flags": precision_flags(device, precision),
        "mixer_backend_requested": mixer_backend_requested,
        "argv": sys.argv,
    }
