"""Hostile study files: each gives one line naming the file and the key, exit 2, no traceback, no hang, and
stays under a 1.5 GB memory cap (all files run in one capped subprocess, each under an alarm)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.runner_support import REPO, env

HOSTILE = sorted((Path(__file__).parent / "hostile_studies").glob("*.yaml"))
MEMORY = int(1.5 * 2**30)
PER_FILE_S = 60
#: files whose check needs the registries' models (validate builds on meta): `run --dry-run` must refuse them too
BUILD_CHECKS = ("size_xxl", "video_scan_on_images", "resolution_not_divisible", "fd_with_one_sample",
                "search_two_axes_blocks", "baseline_matches_no_variant")


def _expected(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: ...'"
    return first.removeprefix("# expect: ")


def _run_capped(command: str, files: list[Path]) -> dict[str, dict]:
    proc = subprocess.run([sys.executable, "-m", "tests.harness.hostile_runner", str(MEMORY), str(PER_FILE_S),
                           command, *map(str, files)], env={**env(), "ZIGMA_HARNESS_PLUGINS": ""}, cwd=REPO,
                          capture_output=True, text=True, timeout=PER_FILE_S * len(files) + 120, check=False)
    results, started = {}, None
    for line in proc.stdout.splitlines():
        rec = json.loads(line)
        if "started" in rec:
            started = rec["started"]
        else:
            results[rec["file"]] = rec
    assert proc.returncode == 0, f"the capped process died (rc {proc.returncode}) on {started}: {proc.stderr[-3000:]}"
    return results


@pytest.fixture(scope="module")
def validated() -> dict[str, dict]:
    return _run_capped("validate", HOSTILE)


def test_the_hostile_corpus_has_at_least_forty_files():
    assert len(HOSTILE) >= 40


@pytest.mark.parametrize("path", HOSTILE, ids=[p.stem for p in HOSTILE])
def test_hostile_study_gives_one_line_naming_file_and_key_and_exit_2(validated, path):
    rec = validated[str(path)]
    assert rec["code"] == 2, rec
    assert "Traceback" not in rec["output"]
    lines = rec["output"].strip().splitlines()
    assert len(lines) == 1, rec["output"]
    assert str(path) in lines[0]
    assert _expected(path) in lines[0]


def test_dry_run_refuses_what_validate_refuses():
    files = [p for p in HOSTILE if p.stem in BUILD_CHECKS]
    assert len(files) == len(BUILD_CHECKS)
    for path, rec in _run_capped("run", files).items():
        assert rec["code"] == 2 and _expected(Path(path)) in rec["output"], rec


def test_a_study_file_of_millions_of_seeds_is_refused_by_size_at_once(tmp_path):
    path = tmp_path / "seeds.yaml"
    path.write_text("name: x\nseeds: [" + ", ".join(map(str, range(400_000))) + "]\n")   # 2.9 MiB
    rec = _run_capped("validate", [path])[str(path)]
    assert rec["code"] == 2 and rec["seconds"] < 5, rec
    assert f"{path}: the study file is 2.9 MiB; study files are limited to 1024 KiB" in rec["output"]


def test_validating_digits_at_1024_pixels_stays_under_the_memory_cap(tmp_path):
    path = tmp_path / "big.yaml"   # the whole dataset at 1024x1024 would take ~19 GB
    path.write_text("name: big\nbase:\n  dataset: {name: digits, resolution: 1024}\n"
                    "  backbone: {size: tiny, patch_size: 16}\n  eval: {num_samples: 16, metrics: [fd-effnet]}\n")
    rec = _run_capped("validate", [path])[str(path)]
    assert rec["code"] == 0 and "1 trial(s), 1 distinct model(s) built" in rec["output"], rec
