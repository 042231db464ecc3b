"""The benchmark at tiny size on CPU: JSON the report can read, recorded skips / OOMs, ratios, no harness imports.

No timing is asserted (style rule 20): only that every number is measured, finite and positive.
"""

import json
import math
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from benchmarks import bench
from benchmarks.analysis import goal_ratios
from zigma.mixer import fused_available

TINY = dict(size="tiny", device="cpu", batch_tokens=32, small_batch_tokens=16, small_max_tokens=16, warmup=0,
            iters=1, nfe=2, threads=1, ceiling=False)  # the module's full run (`result`) measures the ceiling
REPORT_KEYS = ("backbone", "variant", "tokens", "step_ms", "train_images_per_s", "sample_ms_per_image",
               "peak_memory_gb", "params_m", "device", "status")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """One tiny run of every non-compiled variant at 16 tokens, written as the script writes it."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bench") / "out"
    rc = bench.main(["--device", "cpu", "--size", "tiny", "--tokens", "16", "--batch-tokens", "32",
                     "--small-batch-tokens", "16", "--small-max-tokens", "16", "--warmup", "0", "--iters", "1",
                     "--nfe", "2", "--threads", "1", "--out", str(out)])
    assert rc == 0
    return json.loads((out / "bench.json").read_text()), out


def test_the_run_writes_json_with_a_row_per_variant_and_tokens(result):
    doc, _ = result
    assert {r["variant"] for r in doc["rows"]} == {n for n, v in bench.VARIANTS.items() if not v.compiled and v.default}
    for row in doc["rows"]:
        assert set(REPORT_KEYS) <= set(row), set(REPORT_KEYS) - set(row)
        assert row["device"] == doc["device"] and row["tokens"] == 16


def test_every_measured_row_has_finite_positive_times_memory_and_params(result):
    doc, _ = result
    ok = [r for r in doc["rows"] if r["status"] == "ok"]
    assert {r["backbone"] for r in ok} == {"zigma", "vim", "dit"}
    for r in ok:
        for key in ("step_ms", "train_images_per_s", "forward_ms", "sample_ms_per_image", "params_m", "gflops"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["variant"], key, r[key])
        assert r["peak_memory_gb"] >= 0 and r["batch"] == (1 if bench.VARIANTS[r["variant"]].small_batch else 2)
        assert r["sample_ms_per_image"] == pytest.approx(r["forward_ms"] * 2 / r["batch"])


def test_the_plot_is_written_beside_the_json(result):
    _, out = result
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(fused_available(), reason="mamba-ssm is installed here")
def test_fused_points_are_skipped_with_the_reason_when_mamba_ssm_is_absent(result):
    doc, _ = result
    fused = [r for r in doc["rows"] if r["variant"] == "zigzag-8-fused"]
    assert fused and all(r["status"] == "skipped" and r["reason"] for r in fused)
    assert all(r["mixer_backend"] == "reference" for r in doc["rows"] if r["backbone"] != "dit" and r["status"] == "ok")


def test_a_missing_mamba_ssm_is_a_recorded_skip_not_a_crash(monkeypatch):
    from zigma.mixer import FusedUnavailableError

    def no_kernels(*args, **kwargs):
        raise FusedUnavailableError("mixer backend 'fused' needs the packages mamba-ssm and causal-conv1d")

    monkeypatch.setattr(bench, "measure_point", no_kernels)
    cfg = bench.make_config(tokens="16", variants="zigzag-8", mixer_check=False, permute_check=False, **TINY)
    doc = bench.run(cfg, log=lambda s: None)
    assert doc["rows"][0]["status"] == "skipped" and "mamba-ssm" in doc["rows"][0]["reason"]


def test_the_report_plots_the_rows_including_skipped_ones(result):
    from harness.report.plots import bench_plot

    assert bench_plot(result[0]["rows"])[:4] == b"\x89PNG"


def test_an_out_of_memory_point_is_recorded_and_the_run_goes_on(monkeypatch):
    real = bench.measure_point

    def flaky(variant, tokens, *args):
        if tokens == 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(variant, tokens, *args)

    monkeypatch.setattr(bench, "measure_point", flaky)
    cfg = bench.make_config(tokens="4,16", variants="attention", mixer_check=False, permute_check=False, **TINY)
    rows = bench.run(cfg, log=lambda s: None)["rows"]
    assert [r["status"] for r in rows] == ["oom", "ok"]
    assert "out of memory" in rows[0]["reason"] and rows[0]["step_ms"] is None and rows[1]["step_ms"] > 0


def test_a_spent_time_budget_skips_the_remaining_points():
    cfg = bench.make_config(tokens="4,16", variants="zigzag-8,attention", time_budget_s=-1.0, mixer_check=False,
                            permute_check=False, **TINY)
    rows = bench.run(cfg, log=lambda s: None)["rows"]
    assert len(rows) == 4 and all(r["status"] == "skipped" and "budget" in r["reason"] for r in rows)


def test_an_unknown_variant_is_refused_with_a_near_match():
    with pytest.raises(ValueError, match="Did you mean 'zigzag-8-around'"):
        bench.make_config(variants="zigzag-8-arround")


def test_goal_ratios_compare_variants_measured_at_the_same_tokens():
    row = lambda v, n, ms, img, mem: dict(variant=v, tokens=n, status="ok", step_ms=ms, train_images_per_s=img,
                                          peak_memory_gb=mem, sample_ms_per_image=ms, params_m=100.0)
    rows = [row("zigzag-8", 1024, 102.0, 40.0, 3.0), row("no-scan", 1024, 100.0, 41.0, 3.0),
            row("attention", 1024, 80.0, 50.0, 6.0), row("zigzag-8-around", 1024, 110.0, 37.0, 3.0),
            row("attention", 4096, 80.0, 50.0, 6.0)]
    ratios = goal_ratios({"rows": rows, "device": "NVIDIA H100"})
    assert ratios["zigma_over_dit_throughput"] == {1024: pytest.approx(0.8)}
    assert ratios["zigma_over_dit_peak_memory"] == {1024: pytest.approx(0.5)}
    assert ratios["scan_overhead_pct"] == {1024: pytest.approx(2.0)}
    assert ratios["relative_speedup_over_around"] == {1024: pytest.approx(110 / 102)}
    goal = next(g for g in ratios["goals"] if g["key"] == "zigma_over_dit_throughput" and g["tokens"] == 1024)
    assert goal["met"] is False and goal["value"] == pytest.approx(0.8)


@pytest.mark.parametrize("method", ["index_select", "rows", "advanced", "auto"])
def test_the_gather_with_an_inverse_backward_equals_index_select_on_values_and_gradients(method, monkeypatch):
    import zigma.scans.base
    from zigma.scans import permute_tokens

    monkeypatch.setattr(zigma.scans.base, "_GATHER", method)

    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(37, generator=g)
    x = torch.randn(3, 37, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 37, 5, generator=g, dtype=torch.float64)
    for inv in (torch.argsort(idx), None):
        ours = permute_tokens(x, idx, inv)
        (grad,) = torch.autograd.grad((ours * w).sum(), x, create_graph=True)
        ref = x.index_select(1, idx)
        (grad_ref,) = torch.autograd.grad((ref * w).sum(), x, create_graph=True)
        assert torch.equal(ours, ref) and torch.equal(grad, grad_ref)
    # double backward (the ODE likelihood differentiates through the model): same second derivatives
    v = torch.randn(3, 37, 5, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad(((permute_tokens(x, idx) ** 3) * w).sum(), x, create_graph=True)[0]
    ref = torch.autograd.grad(((x.index_select(1, idx) ** 3) * w).sum(), x, create_graph=True)[0]
    assert torch.allclose(torch.autograd.grad((ours * v).sum(), x)[0], torch.autograd.grad((ref * v).sum(), x)[0])


def test_the_mixer_check_compares_against_a_linear_stack_of_about_its_size(result):
    doc, _ = result
    (row,) = doc["mixer_vs_linear"]
    assert abs(row["linear_params"] - row["mixer_params"]) <= 65 * 64 / 2 + 1   # within half a Linear(64, 64)
    assert row["ratio"] == pytest.approx(row["mixer_ms"] / row["linear_ms"])


def test_harness_bench_writes_the_json_through_the_cli(tmp_path):
    from harness.cli import app

    out = tmp_path / "b.json"
    res = CliRunner().invoke(app, ["bench", "--device", "cpu", "--size", "tiny", "--tokens", "16", "--variants",
                                   "attention", "--batch-tokens", "16", "--warmup", "0", "--iters", "1",
                                   "--no-mixer-check", "--no-permute-check", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["rows"][0]["status"] == "ok" and out.with_suffix(".png").exists()


def test_the_bench_imports_neither_the_runner_nor_the_tracking_stack():
    """benchmarks.bench measures with plugins.measure (the one measurement module) and nothing heavier."""
    code = "import sys, benchmarks.bench; print(' '.join(sorted(sys.modules)))"
    loaded = {m.split(".")[0] for m in subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                      check=True, timeout=120).stdout.split()}
    assert "plugins" in loaded and not loaded & {"harness", "optuna", "mlflow", "typer"}


@pytest.mark.slow  # dynamo tracing: ~10-25 s on a busy 2-core CPU
def test_the_compiled_variant_runs_with_the_mixers_left_eager(monkeypatch):
    compiled = []
    real_disable = torch.compiler.disable

    def spy(fn, *args, **kwargs):
        compiled.append(getattr(fn, "__self__", None))
        return real_disable(fn, *args, **kwargs)

    monkeypatch.setattr(torch.compiler, "disable", spy)
    cfg = bench.make_config(tokens="4", variants="zigzag-8-compiled", compile_backend="eager", mixer_check=False,
                            permute_check=False, **TINY)
    (row,) = bench.run(cfg, log=lambda s: None)["rows"]
    assert row["status"] == "ok" and row["compiled"] and row["step_ms"] > 0
    assert len(compiled) == 4 and all(type(m).__name__ == "MambaMixer" for m in compiled)


def test_a_cuda_run_has_a_default_time_budget_and_a_cpu_run_none():
    assert bench.budget_s(bench.Config(device="cuda")) == bench.CUDA_BUDGET_S
    assert bench.budget_s(bench.Config(device="cpu")) == math.inf
    assert bench.budget_s(bench.Config(device="cuda", time_budget_s=math.inf)) == math.inf


def test_the_json_is_strict_json_without_nan_or_infinity(result):
    _, out = result

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    json.loads((out / "bench.json").read_text(), parse_constant=refuse)


# ------------------------------------------------------------------- checkpointing, kernel ceiling, fused path
CKPT_RATIOS = ("zigma_ckpt_over_dit_throughput", "zigma_ckpt_over_dit_peak_memory",
               "zigma_ckpt_over_dit_ckpt_throughput", "zigma_ckpt_over_dit_ckpt_peak_memory")


def test_the_checkpointed_variants_build_with_checkpointing_and_give_their_own_ratios(result):
    doc, _ = result
    flags = {r["variant"]: r["checkpointing"] for r in doc["rows"]}
    assert {v for v, on in flags.items() if on} == {"zigzag-8-ckpt", "attention-ckpt"}
    ok = {r["variant"]: r for r in doc["rows"] if r["status"] == "ok"}
    assert {"zigzag-8-ckpt", "attention-ckpt"} <= set(ok)
    for key in CKPT_RATIOS:
        (value,) = doc["ratios"][key].values()
        assert math.isfinite(value) and value > 0, (key, value)
    assert doc["ratios"]["zigma_ckpt_over_dit_ckpt_throughput"]["16"] == pytest.approx(
        ok["zigzag-8-ckpt"]["train_images_per_s"] / ok["attention-ckpt"]["train_images_per_s"])


def test_the_kernel_ceiling_times_one_mixer_one_zigma_block_and_one_dit_block_at_the_rows_batch(result):
    doc, _ = result
    (row,) = doc["ceiling"]
    assert row["status"] == "ok" and row["tokens"] == 16 and row["batch"] == 2
    assert (row["zigma_depth"], row["dit_depth"]) == (bench.SIZES["tiny"]["mamba"].depth,
                                                      bench.SIZES["tiny"]["attention"].depth)
    assert row["mixer_backend"] == ("fused" if doc["mixer_fused_path"] else "reference")
    for key in ("mixer_ms", "zigma_block_ms", "dit_block_ms", "mixer_params_m"):
        assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    dit = next(r for r in doc["rows"] if r["variant"] == "attention")
    ceiling = doc["ratios"]["kernel_ceiling_zigma_over_dit_throughput"]["16"]
    assert ceiling == pytest.approx(dit["step_ms"] / (row["zigma_depth"] * row["mixer_ms"]))
    assert doc["ratios"]["blocks_only_zigma_over_dit_throughput"]["16"] > 0
    assert doc["ratios"]["zigma_mixers_share_of_step"]["16"] > 0


def test_the_json_names_the_fused_path_and_the_summary_header_the_mixer_the_rows_used(result):
    doc, _ = result
    assert "mixer_fused_path" in doc and doc["mixer_fused_path"] == bench.fused_path()
    header = bench.summary_lines(doc)[0]
    used = {r["mixer_backend"] for r in doc["rows"] if r["status"] == "ok" and r["backbone"] == "zigma"}
    assert used == {"reference"}, "on CPU the zigma rows run the reference mixer"
    assert "mixer reference (pure PyTorch)" in header


@pytest.mark.parametrize("inner, expected", [(object(), "mamba_inner_fn (causal-conv1d)"),
                                             (None, "selective_scan_fn + torch conv1d")])
def test_the_fused_path_is_mamba_inner_fn_only_with_causal_conv1d(monkeypatch, inner, expected):
    monkeypatch.setattr(bench, "fused_available", lambda: True)
    monkeypatch.setattr(bench, "fused_kernels", lambda: {"mamba_inner_fn": inner, "selective_scan_fn": object(),
                                                         "causal_conv1d_fn": inner})
    assert bench.fused_path() == expected
    monkeypatch.setattr(bench, "fused_available", lambda: False)
    assert bench.fused_path() is None


def test_the_ceiling_runs_after_the_headline_and_checkpointed_variants_and_before_the_rest(monkeypatch):
    events = []

    def fake_point(variant, tokens, *args):
        events.append(next(n for n, v in bench.VARIANTS.items() if v == variant))
        return {"status": "skipped", "reason": "stub"}

    def fake_ceiling(cfg, device, dtype, build):
        events.append("ceiling")
        return []

    monkeypatch.setattr(bench, "measure_point", fake_point)
    monkeypatch.setattr(bench, "kernel_ceiling", fake_ceiling)
    cfg = bench.make_config(tokens="16", mixer_check=False, permute_check=False, **{**TINY, "ceiling": True})
    assert list(cfg.variants[:5]) == list(bench.CEILING_AFTER)
    bench.run(cfg, log=lambda s: None)
    assert events[:6] == [*bench.CEILING_AFTER, "ceiling"] and events.count("ceiling") == 1
    assert events[6:] == [n for n in cfg.variants[5:] if n != "zigzag-8-fused"]   # fused: skipped on CPU first
    events.clear()
    bench.run(bench.make_config(tokens="16", variants="attention,zigzag-8", mixer_check=False, permute_check=False,
                                **{**TINY, "ceiling": True}), log=lambda s: None)
    assert events == ["attention", "zigzag-8", "ceiling"], "with only headline variants it runs last"


def test_goal_ratios_keep_the_goals_same_settings_and_add_checkpointing_and_the_ceiling_beside_them():
    row = lambda v, n, ms, img, mem: dict(variant=v, tokens=n, status="ok", step_ms=ms, train_images_per_s=img,
                                          peak_memory_gb=mem, sample_ms_per_image=ms, params_m=100.0)
    rows = [row("zigzag-8", 1024, 560.0, 114.0, 62.0), row("attention", 1024, 170.0, 376.0, 32.0),
            row("zigzag-8-ckpt", 1024, 700.0, 91.0, 8.0), row("attention-ckpt", 1024, 220.0, 290.0, 12.0)]
    ceiling = [{"tokens": 1024, "batch": 64, "status": "ok", "zigma_depth": 24, "dit_depth": 12, "mixer_ms": 12.1,
                "zigma_block_ms": 20.0, "dit_block_ms": 12.0, "mixer_backend": "fused"}]
    doc = {"rows": rows, "ceiling": ceiling, "device": "NVIDIA H200", "config": {"size": "B", "batch_tokens": 65536},
           "mixer_fused_path": "mamba_inner_fn (causal-conv1d)"}
    ratios = goal_ratios(doc)
    assert ratios["zigma_over_dit_throughput"] == {1024: pytest.approx(114 / 376)}
    assert ratios["zigma_ckpt_over_dit_throughput"] == {1024: pytest.approx(91 / 376)}
    assert ratios["zigma_ckpt_over_dit_peak_memory"] == {1024: pytest.approx(8 / 32)}
    assert ratios["zigma_ckpt_over_dit_ckpt_peak_memory"] == {1024: pytest.approx(8 / 12)}
    assert ratios["kernel_ceiling_zigma_over_dit_throughput"] == {1024: pytest.approx(170 / (24 * 12.1))}
    assert ratios["blocks_only_zigma_over_dit_throughput"] == {1024: pytest.approx(12 * 12.0 / (24 * 20.0))}
    goal = next(g for g in ratios["goals"] if g["key"] == "zigma_over_dit_peak_memory")
    assert goal["tokens"] == 16384 and goal["value"] is None, "a checkpointed row never fills a goal"
    lines = bench.summary_lines({**doc, "ratios": ratios})
    assert "mixer fused: mamba_inner_fn (causal-conv1d)" in lines[0]
    ckpt_head = next(i for i, s in enumerate(lines) if "with activation checkpointing" in s)
    assert "zigma_ckpt_over_dit_peak_memory" in lines[ckpt_head + 2]
    assert not any(s.lstrip().startswith("zigma_ckpt") for s in lines[:ckpt_head])
    assert any("measured 0.303x" in s and "kernel ceiling 0.585x" in s for s in lines)


def test_the_mixer_goals_take_each_backbones_fastest_configuration_and_the_mamba2_scan_overhead():
    row = lambda v, n, ms, img: dict(variant=v, tokens=n, status="ok", step_ms=ms, train_images_per_s=img,
                                     peak_memory_gb=1.0, sample_ms_per_image=ms, params_m=100.0)
    rows = [row("zigzag-8-mamba2", 4096, 240.0, 66.0), row("zigzag-8-mamba2-compiled", 4096, 200.0, 80.0),
            row("no-scan-mamba2", 4096, 236.0, 67.0), row("attention", 4096, 200.0, 80.0),
            row("attention-compiled", 4096, 160.0, 100.0), row("zigzag-8-mamba2", 16384, 246.0, 16.3),
            row("attention", 16384, 440.0, 9.1)]
    ratios = goal_ratios({"rows": rows, "device": "NVIDIA H200"})
    by = {(g["key"], g["tokens"]): g for g in ratios["goals"]}
    fast4k = by[("best_zigma_over_best_dit_throughput", 4096)]
    assert fast4k["value"] == pytest.approx(80.0 / 100.0) and fast4k["met"] is False      # compiled vs compiled
    fast16k = by[("best_zigma_over_best_dit_throughput", 16384)]
    assert fast16k["value"] == pytest.approx(16.3 / 9.1) and fast16k["met"] is False      # 1.79 < 2
    overhead = by[("scan_overhead_pct_mamba2", 4096)]
    assert overhead["value"] == pytest.approx(100 * (240 - 236) / 236) and overhead["met"] is True
