"""The git commit is recorded from a checkout, from a non-editable install (build metadata) and from a copy
without .git (ZIGMA_HARNESS_GIT_SHA, tested in test_runner_unit.py)."""

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _setup_module():
    spec = importlib.util.spec_from_file_location("zigma_setup", REPO / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)       # not __main__: setup() is not called
    return module


def test_the_build_hook_writes_the_checkouts_commit(monkeypatch):
    monkeypatch.delenv("ZIGMA_HARNESS_GIT_SHA", raising=False)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    text = _setup_module().build_info(REPO)
    assert f"GIT_SHA = {head.stdout.strip()!r}" in text.splitlines()


def test_an_installed_copy_reads_its_commit_from_the_build_metadata(monkeypatch):
    from harness import provenance

    monkeypatch.delenv("ZIGMA_HARNESS_GIT_SHA", raising=False)
    built = types.SimpleNamespace(GIT_SHA="f" * 40, GIT_DIRTY=False)
    monkeypatch.setitem(sys.modules, "harness._build_info", built)
    assert provenance.git_info() == {"sha": "f" * 40, "dirty": False}
