"""The plugin system: typed registries, duplicates named, near matches, third-party entry points."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from plugins.errors import DuplicateNameError, HarnessError, UnknownNameError
from plugins.registry import Registry
from plugins.specs import KINDS, ScanEntry

ROOT = Path(__file__).resolve().parents[2]
HARNESS = [sys.executable, "-m", "harness.cli"]


def _entry(name: str) -> ScanEntry:
    return ScanEntry(name=name, description="test", build=lambda seed: None)


def test_duplicate_name_names_both_plugins():
    reg = Registry("scans", ScanEntry, "scan")
    reg.add(_entry("zigzag-8"), "plugin-a")
    with pytest.raises(DuplicateNameError, match="'zigzag-8' is registered by both plugin 'plugin-a' and plugin 'plugin-b'"):
        reg.add(_entry("zigzag-8"), "plugin-b")


def test_unknown_name_suggests_near_matches_and_lists_available():
    reg = Registry("scans", ScanEntry, "scan")
    for n in ("zigzag-8", "zigzag-2", "sweep-1"):
        reg.add(_entry(n), "p")
    with pytest.raises(UnknownNameError) as exc:
        reg.get("zigzg-8")
    assert str(exc.value).startswith("unknown scan 'zigzg-8'. Did you mean 'zigzag-8'")
    assert "Available: sweep-1, zigzag-2, zigzag-8" in str(exc.value)


def test_registry_refuses_the_wrong_entry_type():
    reg = Registry("scans", ScanEntry, "scan")
    with pytest.raises(HarnessError, match="expects ScanEntry"):
        reg.add(object(), "p")


def test_names_must_be_kebab_case():
    with pytest.raises(ValueError, match="kebab-case"):
        _entry("Zigzag_8")


def test_every_kind_has_a_register_hook():
    import plugins.hookspecs as hs
    for kind, (hook, _, _) in KINDS.items():
        assert callable(getattr(hs, hook)), kind


def _make_dist(site: Path, dist: str, module: str, scan_name: str) -> None:
    """A throwaway installed distribution: a module + dist-info with a zigma_harness entry point."""
    (site / f"{module}.py").write_text(textwrap.dedent(f'''
        import torch
        from plugins import hookimpl, ScanEntry
        from zigma.scans.base import LayerScan, ScanScheme

        class Reverse(ScanScheme):
            name = "{scan_name}"
            def layer_scans(self, grid, depth):
                order = torch.arange(grid.num_tokens).flip(0)
                return [LayerScan(orders=(order,))] * depth

        @hookimpl
        def register_scans(register):
            register(ScanEntry(name="{scan_name}", description="reversed raster (test plugin)",
                               build=lambda seed: Reverse()))
    '''))
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[zigma_harness]\n{dist} = {module}\n")


def _harness(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{ROOT}")
    return subprocess.run([*HARNESS, *args], capture_output=True, text=True, env=env, timeout=120, check=False)


def test_third_party_plugin_from_an_entry_point_is_listed_with_its_plugin_name(tmp_path):
    _make_dist(tmp_path, "acme-scans", "acme_scans", "reverse-raster")
    out = _harness(tmp_path, "ls", "scans")
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if "reverse-raster" in l)
    assert "acme-scans" in line


def test_two_plugins_registering_one_name_fail_with_both_names(tmp_path):
    _make_dist(tmp_path, "acme-scans", "acme_scans", "reverse-raster")
    _make_dist(tmp_path, "other-scans", "other_scans", "reverse-raster")
    out = _harness(tmp_path, "ls", "scans")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    msg = out.stderr.strip()
    assert "scan 'reverse-raster' is registered by both plugin" in msg
    assert "acme-scans" in msg and "other-scans" in msg


def _with_plugin(tmp_path, module, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ZIGMA_HARNESS_PLUGINS": module,
           "MLFLOW_DISABLE_TELEMETRY": "true", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([*HARNESS, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)


def test_a_plugin_hook_that_raises_is_one_line_naming_the_plugin_and_exit_2(tmp_path):
    out = _with_plugin(tmp_path, "tests.plugins.raising_plugin", "ls", "samplers")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        ("error: plugin 'tests.plugins.raising_plugin': register_samplers raised KeyError: "
         "'oops [/red] in the plugin'")]


def test_a_scan_whose_order_is_not_a_permutation_is_refused_at_validation_naming_the_scan(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text("name: x\nbase:\n  dataset: {name: digits, resolution: 8}\n  backbone: {size: tiny}\n"
                     "  scan: not-a-perm\n  eval: {num_samples: 4, metrics: [fd-effnet]}\n")
    out = _with_plugin(tmp_path, "tests.plugins.nonperm_scan_plugin", "validate", str(study))
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    (line,) = out.stdout.strip().splitlines()
    assert "scan 'not-a-perm' from plugin 'tests.plugins.nonperm_scan_plugin'" in line
    assert "the order is not a permutation of 0..15" in line


def test_layer_scan_refuses_an_order_with_a_repeated_token():
    import torch

    from zigma.scans import LayerScan
    with pytest.raises(ValueError, match="not a permutation of 0..3"):
        LayerScan(orders=(torch.tensor([0, 1, 1, 3]),))
    assert LayerScan(orders=(torch.tensor([2, 0, 3, 1]),)).num_directions == 1
