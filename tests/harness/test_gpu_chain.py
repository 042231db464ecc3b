"""benchmarks/gpu/chain.sh's step choice, run on the CPU with a stand-in nvidia-smi that names the card."""

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _chain(tmp_path: Path, card: str | None, **steps: str) -> list[str]:
    """The step folders chain.sh wrote into chain.tgz (steps unknown to it only leave an error.txt)."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    if card is not None:
        (bin_ / "nvidia-smi").write_text(f"#!/bin/sh\necho '{card}'\n")
        (bin_ / "nvidia-smi").chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "OUT": str(out), "LIMIT": "100",
           "KIT": str(tmp_path / "no-kit"), "TRITON_SEED": str(tmp_path / "no-seed"), **steps}
    subprocess.run(["bash", "benchmarks/gpu/chain.sh"], cwd=REPO, env=env, check=True, capture_output=True,
                   timeout=60)
    with tarfile.open(out / "chain.tgz") as tar:
        return sorted({Path(n).parts[0] for n in tar.getnames() if Path(n).parts and Path(n).parts[0][0].isdigit()})


@pytest.mark.parametrize("card,chosen", [("NVIDIA H100 80GB HBM3", "only-h100"), ("NVIDIA H200", "only-h200"),
                                         ("NVIDIA A100-SXM4-80GB", "any-card"), (None, "any-card")])
def test_the_steps_for_the_card_at_hand_run_and_the_plain_steps_elsewhere(tmp_path, card, chosen):
    assert _chain(tmp_path, card, STEPS="any-card", STEPS_H100="only-h100", STEPS_H200="only-h200") == [f"1-{chosen}"]


def test_a_card_without_its_own_steps_runs_the_plain_ones(tmp_path):
    assert _chain(tmp_path, "NVIDIA H200", STEPS="x y", STEPS_H100="only-h100") == ["1-x", "2-y"]


def test_a_profile_step_names_its_scan_and_a_plain_one_profiles_zigzag_8(tmp_path):
    bin_ = tmp_path / "py"
    bin_.mkdir()
    (bin_ / "python3").write_text('#!/bin/sh\necho "ARGS: $*"\n')   # stands in for the profiler: prints its arguments
    (bin_ / "python3").chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "OUT": str(out), "LIMIT": "200",
           "KIT": str(tmp_path / "no-kit"), "STEPS": "profile:sweep-2 profile"}
    subprocess.run(["bash", "benchmarks/gpu/chain.sh"], cwd=REPO, env=env, check=True, capture_output=True, timeout=60)
    with tarfile.open(out / "chain.tgz") as tar:
        logs = {Path(n).parts[0]: tar.extractfile(n).read().decode() for n in tar.getnames() if n.endswith("profile.log")}
    assert "--scan sweep-2" in logs["1-profile_sweep-2"] and "--scan zigzag-8" in logs["2-profile"]
