"""The tree stays clean of ruff's findings under pyproject.toml's [tool.ruff], checked with the ruff installed
beside this Python (the `dev` extra). The rules are ruff's default selection, which changes between ruff releases,
so the check runs only with the release series that constraints.txt pins."""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff_series() -> tuple[str, str]:
    """(installed, pinned) ruff 'major.minor'; skips when ruff is not installed."""
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    out = subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True, text=True, check=True)
    installed = re.search(r"(\d+\.\d+)\.", out.stdout)
    pinned = re.search(r"^ruff==(\d+\.\d+)\.", (ROOT / "constraints.txt").read_text(), flags=re.MULTILINE)
    assert installed and pinned, f"cannot read ruff's version from {out.stdout!r} or from constraints.txt"
    return installed[1], pinned[1]


def _ruff_check(path: Path) -> subprocess.CompletedProcess:
    installed, pinned = _ruff_series()
    if installed != pinned:
        pytest.skip(f"ruff {installed} is installed, constraints.txt pins {pinned}: other releases select other "
                    "rules by default")
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format=concise", "."],
                          cwd=path, capture_output=True, text=True, timeout=120, check=False)


def test_ruff_finds_nothing_in_the_repository():
    out = _ruff_check(ROOT)
    assert out.returncode == 0, f"ruff check found:\n{out.stdout}{out.stderr}"


def test_the_ruff_check_reports_a_finding_in_a_tree_with_one(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "bad.py").write_text("import os\n")
    out = _ruff_check(tmp_path)
    assert out.returncode == 1 and "bad.py:1:8: F401" in out.stdout, out.stdout + out.stderr
