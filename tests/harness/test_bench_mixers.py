"""The bench's mixer option: Mamba-1 and Mamba-2 ZigMa side by side with DiT, their ratios, and the CLI flag."""

import pytest
import torch

from benchmarks import bench
from benchmarks.analysis import goal_ratios

TINY = dict(size="tiny", device="cpu", batch_tokens=32, small_batch_tokens=16, small_max_tokens=16, warmup=0,
            iters=1, nfe=2, threads=1, ceiling=False, mixer_check=False, permute_check=False)


def test_mixers_option_keeps_the_zigma_variants_of_those_mixers_and_every_dit_variant():
    names = bench.make_config(mixers="mamba2", **TINY).variants
    assert "zigzag-8-mamba2" in names and "no-scan-mamba2" in names and "attention" in names
    assert "zigzag-8" not in names and "sweep-2" not in names
    assert "zigzag-8-mamba2-compiled" in bench.make_config(mixers="mamba2", compile=True, **TINY).variants


def test_unknown_mixer_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="unknown mixer 'mamba3'; available: mamba1, mamba2"):
        bench.make_config(mixers="mamba3", **TINY)


def test_mamba2_rows_build_mamba2_mixers_and_record_the_mixer():
    torch.set_num_threads(1)
    cfg = bench.make_config(tokens="4", variants="zigzag-8-mamba2,no-scan-mamba2,attention", **TINY)
    rows = bench.run(cfg, log=lambda s: None)["rows"]
    assert [(r["variant"], r["mixer"], r["status"]) for r in rows] == [
        ("zigzag-8-mamba2", "mamba2", "ok"), ("no-scan-mamba2", "mamba2", "ok"), ("attention", None, "ok")]
    assert rows[0]["mixer_backend"] == "reference" and rows[0]["step_ms"] > 0


def test_best_ratio_takes_each_backbone_in_its_fastest_configuration():
    row = lambda v, n, img: dict(variant=v, tokens=n, status="ok", step_ms=1000 / img, train_images_per_s=img,
                                 peak_memory_gb=1.0, sample_ms_per_image=1.0, params_m=1.0)
    rows = [row("zigzag-8", 4096, 30.0), row("zigzag-8-mamba2", 4096, 45.0), row("zigzag-8-mamba2-compiled", 4096, 50.0),
            row("attention", 4096, 40.0), row("attention-compiled", 4096, 60.0), row("no-scan-mamba2", 4096, 46.0)]
    ratios = goal_ratios({"rows": rows, "device": "x"})
    assert ratios["best_zigma_over_best_dit_throughput"] == {4096: pytest.approx(50 / 60)}
    assert ratios["best_configs"] == {4096: "zigzag-8-mamba2-compiled / attention-compiled"}
    assert ratios["scan_overhead_pct_mamba2"] == {4096: pytest.approx(100 * (1000 / 45 - 1000 / 46) / (1000 / 46))}


def test_gpu_mixer2_dry_run_writes_its_markdown_and_json_with_every_check_passing(tmp_path):
    import json

    from benchmarks import gpu_mixer2
    gpu_mixer2.main(["--cpu-dry-run", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "gpu_mixer2.json").read_text())
    assert not data["errors"]
    assert all(row[p]["pass"] for row in data["sections"]["agreement"].values() for p in ("fp32", "bf16"))
    assert data["sections"]["state_dict"]["pass"]
    assert "| uni-segments-3 |" in (tmp_path / "gpu_mixer2.md").read_text()


def test_segment_layout_dry_run_times_both_layouts_at_every_point_and_they_agree(tmp_path):
    import json

    from benchmarks import segment_layout
    segment_layout.main(["--dry-run", "--directions", "1", "--out", str(tmp_path / "seg.json")])
    rows = json.loads((tmp_path / "seg.json").read_text())["rows"]
    points = [(r["segments"], r["seg_len"], r["layout"]) for r in rows]
    assert points == [(s, t, layout) for s, t in segment_layout.CASES for layout in ("batch", "packed")]
    assert all(r["ms"] > 0 and r["out_rel_diff"] < 1e-2 for r in rows)


def test_fla_variants_are_opt_in_and_build_mamba2_mixers_with_ssd_fla():
    assert not any("fla" in n for n in bench.make_config(compile=True, **TINY).variants)
    cfg = bench.make_config(variants="zigzag-8-mamba2-fla,zigzag-8-mamba2-fla-compiled", **TINY)
    assert cfg.variants == ("zigzag-8-mamba2-fla", "zigzag-8-mamba2-fla-compiled")
    assert all(dict(bench.VARIANTS[n].mixer_options) == {"ssd": "fla"} for n in cfg.variants)


def test_fla_variant_without_fla_core_is_skipped_naming_the_install(monkeypatch):
    from zigma.mixer import fused

    monkeypatch.setattr(fused, "_import_gla", lambda: (None, "ModuleNotFoundError: No module named 'fla'"))
    cfg = bench.make_config(tokens="4", variants="zigzag-8-mamba2-fla", **TINY)
    rows = bench.run(cfg, log=lambda s: None)["rows"]
    assert [r["status"] for r in rows] == ["skipped"] and "zigma-harness[fla]" in rows[0]["reason"]


def test_fla_ratios_compare_the_same_model_under_both_ssd_kernels():
    row = lambda v, ms: {"variant": v, "tokens": 4096, "status": "ok", "step_ms": ms, "train_images_per_s": 1000 / ms,
                         "peak_memory_gb": 1.0, "sample_ms_per_image": 1.0, "params_m": 1.0}
    rows = [row("zigzag-8-mamba2", 30.0), row("zigzag-8-mamba2-fla", 20.0), row("attention", 25.0),
            row("zigzag-8-mamba2-compiled", 24.0), row("zigzag-8-mamba2-fla-compiled", 16.0)]
    ratios = goal_ratios({"rows": rows, "device": "x"})
    assert ratios["fla_speedup_over_mamba_ssm_ssd"] == {4096: pytest.approx(1.5)}
    assert ratios["fla_speedup_over_mamba_ssm_ssd_compiled"] == {4096: pytest.approx(1.5)}
    assert ratios["zigma_mamba2_fla_over_dit_throughput"] == {4096: pytest.approx(25 / 20)}
