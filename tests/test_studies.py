"""Every shipped study file, and the GPU scripts' own (benchmarks/gpu/*.yaml), loads and validates (plugins resolved,
data loaded, models built), with every preset: a GPU session must not find a stale key."""

from pathlib import Path

import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted((ROOT / "studies").glob("*.yaml"))
GPU_STUDIES = sorted((ROOT / "benchmarks" / "gpu").glob("*.yaml"))


def test_the_six_shipped_studies_are_present():
    names = {p.stem for p in STUDIES}
    assert {"scan_ablation", "backbone_comparison", "interpolants", "video_scans", "text_conditioning",
            "resolution_scaling"} <= names


@pytest.mark.parametrize("study", STUDIES + GPU_STUDIES, ids=[p.stem for p in STUDIES + GPU_STUDIES])
def test_shipped_study_validates_with_every_preset(capsys, study):
    try:
        main(["validate", str(study), "--all-presets"])
    except SystemExit as exc:  # only a failure exits
        out = capsys.readouterr().out
        failed = [line for line in out.splitlines() if line.startswith("✗")]
        if failed and all("fashion-mnist: no IDX files" in line for line in failed):   # optional data, absent
            presets = [line for line in out.splitlines() if "--preset" in line]
            assert presets and all(line.startswith("✓") for line in presets), out
            pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); "
                        "the study's presets validated")
        pytest.fail(f"exit {exc.code}: {out}")
    out = capsys.readouterr().out
    assert out.count("✓") >= 2 and "✗" not in out, out


def test_backbone_comparison_is_resolution_tokens_at_256_tokens():
    """backbone_comparison.yaml says its trials are resolution_tokens.yaml's 256-token (patch 2) arms."""
    import yaml

    from harness.study import expand_trials, parse_study

    def trials(name, keep=lambda c: True):
        study = parse_study(yaml.safe_load((ROOT / "studies" / f"{name}.yaml").read_text()))
        return sorted((s.seed, yaml.safe_dump(s.config.model_dump(mode="json"), sort_keys=True))
                      for s in expand_trials(study) if keep(s.config))

    small = trials("resolution_tokens", lambda c: c.backbone.patch_size == 2)
    assert len(small) == 27 and trials("backbone_comparison") == small
