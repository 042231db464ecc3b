"""benchmarks/study_throughput.py on CPU: every phase accounted for, exact switches give the same results.

No timing is asserted (style rule 20): the phase clock runs on a scripted clock, the runs check structure and sums.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.harness.runner_support import PLUGIN, REPO, write_study

torch.set_num_threads(1)


def test_nested_phases_are_timed_exclusively(monkeypatch):
    from benchmarks import phase_clock
    ticks = iter([0.0, 1.0, 3.0, 6.0, 10.0, 15.0])
    monkeypatch.setattr(phase_clock.time, "perf_counter", lambda: next(ticks))
    clock = phase_clock.PhaseClock(torch.device("cpu"))
    clock.start()                                   # t=0
    # two `with` lines, not one (SIM117), so that each tick has its line
    with clock.phase("sampling"):                   # t=1: 1 s of "other" before it  # noqa: SIM117
        with clock.phase("features"):               # t=3: sampling 2 s
            pass                                    # t=6: features 3 s
    # leaving sampling at t=10: sampling 4 s more; stop at t=15: other 5 s more
    out = clock.stop()
    assert (out["other"], out["sampling"], out["features"]) == (6.0, 6.0, 3.0)


def test_an_override_reaches_the_dotted_key_and_is_validated():
    from benchmarks.study_throughput import VARIANTS, with_overrides
    from harness.study import TrialConfig
    cfg = with_overrides(TrialConfig(), VARIANTS["eval-batch"][1])
    assert cfg.eval.batch_size == cfg.eval.num_samples
    assert cfg.eval.metric_options == {"fd-effnet": {"batch_size": 500}}
    assert with_overrides(TrialConfig(), VARIANTS["ckpt-end"][1]).train.checkpoint_every == cfg.train.steps
    with pytest.raises(Exception, match="data_on_device"):
        with_overrides(TrialConfig(), {"train.data_on_device": "sometimes"})


def test_the_benchmark_accounts_for_every_second_and_exact_switches_keep_the_loss(tmp_path, monkeypatch):
    from benchmarks import study_throughput
    from plugins.registry import load_registries
    monkeypatch.setenv("ZIGMA_HARNESS_PLUGINS", PLUGIN)
    load_registries.cache_clear()
    try:
        study = write_study(tmp_path / "s.yaml", "tp", axes={"backbone.width": [8]}, seeds=(0,),
                            train={"steps": 12, "checkpoint_every": 4})
        result = study_throughput.main([str(study), "--trials", "1", "--variants", "baseline,resident,ckpt-async",
                                        "--device", "cpu", "--out", str(tmp_path / "out")])
    finally:
        load_registries.cache_clear()
    saved = json.loads((tmp_path / "out" / "study_throughput.json").read_text())
    assert [r["variant"] for r in saved["records"]] == ["baseline", "resident", "ckpt-async"]
    assert saved["warmup"] is not None and saved["warmup"]["train_steps"] == 10
    for r in result["records"]:
        assert sum(r["phases_s"].values()) == pytest.approx(r["wall_s"], rel=0.02), r["phases_s"]
        assert r["phases_s"]["step"] > 0 and r["phases_s"]["tracking"] > 0
    assert r["phases_s"]["data"] >= 0
    losses = {r["variant"]: r["metrics"]["final_train_loss"] for r in result["records"]}
    assert losses["resident"] == losses["baseline"] == losses["ckpt-async"]
    table = (tmp_path / "out" / "study_throughput.md").read_text()
    assert "| resident | 1 |" in table and "trials / GPU-h" in table


@pytest.mark.slow
def test_the_smoke_preset_runs_through_the_benchmark(tmp_path):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "benchmarks.study_throughput", "studies/scan_ablation.yaml",
                          "--preset", "smoke", "--trials", "1", "--variants", "baseline", "--no-warmup",
                          "--out", str(tmp_path / "st")], cwd=REPO, capture_output=True, text=True, timeout=1200,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""},
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    saved = json.loads(Path(tmp_path / "st" / "study_throughput.json").read_text())
    assert saved["summary"]["baseline"]["n"] == 1 and saved["records"][0]["metrics"]["fd-effnet"] > 0


def test_harness_bench_study_writes_the_throughput_json(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from harness.cli import app
    from plugins.registry import load_registries
    monkeypatch.setenv("ZIGMA_HARNESS_PLUGINS", PLUGIN)
    load_registries.cache_clear()
    try:
        study = write_study(tmp_path / "s.yaml", "tpcli", axes={"backbone.width": [8]}, seeds=(0,),
                            train={"steps": 6, "checkpoint_every": 3})
        res = CliRunner().invoke(app, ["bench", "--study", str(study), "--variants", "baseline", "--trials", "1",
                                       "--device", "cpu", "--out", str(tmp_path / "o")])
    finally:
        load_registries.cache_clear()
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "o" / "study_throughput.json").read_text())
    assert [r["variant"] for r in saved["records"]] == ["baseline"]


def test_an_unknown_study_variant_is_one_line_and_exit_2(tmp_path):
    from tests.harness.runner_support import run_harness
    study = write_study(tmp_path / "s.yaml", "tpbad", axes={"backbone.width": [8]}, seeds=(0,))
    out = run_harness("bench", "--study", str(study), "--variants", "baseline,fastest", "--device", "cpu",
                      "--out", str(tmp_path / "o"), timeout=120)
    assert out.returncode == 2
    assert "unknown study variant(s) ['fastest']" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "o").exists()


# ---- the kernel mix of a profiled window (benchmarks/kernel_mix.py) ------------------------------------------------

_KERNELS = {   # kernel names as CUDA/CUPTI report them (torch, cuBLAS/cuBLASLt, CUTLASS, mamba-ssm, causal-conv1d, Triton)
    "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel"
    "__5x_cublas": "gemm",
    "nvjet_hsh_256x128_64x4_1x2_h_bz_coopA_NNT": "gemm",
    "void cutlass::Kernel2<cutlass_80_tensorop_s1688gemm_64x64_16x6_tn_align4>(cutlass_80_tensorop_s1688gemm_64x64_"
    "16x6_tn_align4::Params)": "gemm",
    "void splitKreduce_kernel<32, 16, int, float, __nv_bfloat16, float, __nv_bfloat16, true, false, false>"
    "(cublasSplitKParams<float>, float const*)": "gemm",
    "void selective_scan_fwd_kernel<Selective_Scan_fwd_kernel_traits<32, 4, true, true, true, false, true, "
    "c10::BFloat16, float, float> >(SSMParamsBase)": "selective scan fwd",
    "void selective_scan_bwd_kernel<Selective_Scan_bwd_kernel_traits<32, 4, true, true, true, false, true, false, "
    "false, c10::BFloat16, float, float> >(SSMParamsBwd)": "selective scan bwd",
    "_chunk_scan_bwd_dx_kernel": "selective scan bwd",
    "void causal_conv1d_fwd_kernel<Causal_conv1d_fwd_kernel_traits<128, 4, true, c10::BFloat16, c10::BFloat16> >"
    "(ConvParamsBase)": "conv (causal_conv1d, cuDNN)",
    "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>, std::array<char*, 3ul> >"
    "(int, at::native::CUDAFunctor_add<float>, std::array<char*, 3ul>)": "elementwise",
    "void at::native::(anonymous namespace)::distribution_elementwise_grid_stride_kernel<float, 4, at::native::"
    "templates::cuda::normal_and_transform<float, float>>(long, at::PhiloxCudaState)": "elementwise",
    "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
    "TensorListMetadata<4>, at::native::(anonymous namespace)::FusedAdamMathFunctor<float, 4>, bool*>"
    "(at::native::(anonymous namespace)::TensorListMetadata<4>)": "foreach / multi_tensor (optimizer, EMA, clip)",
    "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
    "TensorListMetadata<1>, at::native::(anonymous namespace)::LpNormFunctor<float, 1, float, float>, int>()":
        "foreach / multi_tensor (optimizer, EMA, clip)",
    "triton_poi_fused_add_mul_0": "triton (inductor)",
    "triton_red_fused_native_layer_norm_1": "triton (inductor)",
    "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::func_wrapper_t<float, at::native::"
    "sum_functor<float, float, float>>, unsigned int, float, 4, 4> >()": "reduction / norm",
    "void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::BFloat16, float>(int, float)":
        "reduction / norm",
    "void at::native::(anonymous namespace)::GammaBetaBackwardCUDAKernelTemplate<float, float, 32u, 1u, 32u, true, "
    "false>(long, long)": "reduction / norm",
    "_layer_norm_fwd_1pass_kernel": "reduction / norm",
    "void at::native::index_elementwise_kernel<128, 4, at::native::gpu_index_kernel<at::native::index_kernel_impl<"
    "at::native::OpaqueType<2> >>(long)": "index / gather / scatter",
    "void at::native::(anonymous namespace)::indexSelectLargeIndex<c10::BFloat16, long, unsigned int, 2, 2, -2, true>"
    "(at::cuda::detail::TensorInfo<c10::BFloat16, unsigned int>)": "index / gather / scatter",
    "Memcpy DtoD (Device -> Device)": "copy / cast / memcpy",
    "Memset (Device)": "copy / cast / memcpy",
    "void at::native::elementwise_kernel<128, 2, at::native::gpu_kernel_impl_nocast<at::native::direct_copy_kernel_"
    "cuda(at::TensorIteratorBase&)::{lambda()#3}>>(int)": "copy / cast / memcpy",
    "void at::native::(anonymous namespace)::CatArrayBatchedCopy<at::native::(anonymous namespace)::OpaqueType<2u>, "
    "unsigned int, 3, 128, 1>()": "copy / cast / memcpy",
    "void my_custom_kernel(float*)": "other",
}


@pytest.mark.parametrize("name", list(_KERNELS))
def test_a_kernel_name_falls_in_its_kind(name):
    from benchmarks.kernel_mix import kind_of
    assert kind_of(name) == _KERNELS[name]


def test_a_short_kernel_name_drops_void_namespaces_and_arguments():
    from benchmarks.kernel_mix import short_name
    assert short_name("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>, "
                      "std::array<char*, 3ul> >(int, at::native::CUDAFunctor_add<float>, std::array<char*, 3ul>)") \
        == "vectorized_elementwise_kernel<4, CUDAFunctor_add<float>, array<char*, 3ul> >"
    assert short_name("Memcpy HtoD (Pageable -> Device)") == "Memcpy HtoD (Pageable -> Device)"
    assert short_name("triton_" + "x" * 200, width=20) == "triton_" + "x" * 12 + "…"


def test_the_breakdown_sums_calls_and_times_per_step_by_kernel_and_kind():
    """Oracle: the sums worked out by hand for 2 steps of 4 kernels."""
    from benchmarks.kernel_mix import breakdown
    gemm, scan, add = "nvjet_hsh_1", "void selective_scan_fwd_kernel<T>(P)", "triton_poi_fused_add_0"
    events = [(gemm, 30.0), (scan, 20.0), (add, 5.0), (add, 5.0), "step 2",
              (gemm, 30.0), (scan, 20.0), (add, 5.0), (add, 5.0), ("Memset (Device)", 0.0)]
    out = breakdown([e for e in events if e != "step 2"], steps=2, top=2)
    assert out["us_per_step"] == 60.0 and out["kernels_per_step"] == 4.5
    assert [(t["name"], t["kind"], t["calls_per_step"], t["us_per_step"], t["share"]) for t in out["top"]] == [
        ("nvjet_hsh_1", "gemm", 1.0, 30.0, 0.5), ("selective_scan_fwd_kernel<T>", "selective scan fwd", 1.0, 20.0,
                                                   pytest.approx(1 / 3))]
    kinds = {k["kind"]: (k["calls_per_step"], k["us_per_step"]) for k in out["kinds"]}
    assert kinds == {"gemm": (1.0, 30.0), "selective scan fwd": (1.0, 20.0), "triton (inductor)": (2.0, 10.0),
                     "copy / cast / memcpy": (0.5, 0.0)}
    assert out["kinds"][0]["kind"] == "gemm", "kinds are listed largest first"
    assert breakdown([], steps=2) is None


def test_the_markdown_puts_each_variants_kinds_side_by_side():
    from benchmarks.kernel_mix import breakdown, markdown
    a = breakdown([("nvjet_a", 1000.0), ("triton_poi_b", 1000.0)], steps=1)
    b = breakdown([("nvjet_a", 1000.0)], steps=1)
    lines = markdown({"graph": b, "graph-compile": a})
    assert "| kind | graph | graph-compile |" in lines
    assert "| gemm | 1.00 ms, 1 (100 %) | 1.00 ms, 1 (50 %) |" in lines
    assert "| triton (inductor) |  | 1.00 ms, 1 (50 %) |" in lines
    assert "| `triton_poi_b` | triton (inductor) | 1.0 | 1000 | 50.0 % |" in lines
    assert markdown({}) == []


def test_probe_settings_take_graphs_and_compile_modes_and_name_an_unknown_one():
    from benchmarks.step_probe import probe_settings
    assert probe_settings("false, cuda-graph,cuda-graph-compile,default") == \
        [False, "cuda-graph", "cuda-graph-compile", "default"]
    with pytest.raises(ValueError, match=r"--probe: .*'cuda-grap'.*cuda-graph-compile"):
        probe_settings("false,cuda-grap")


def test_the_graph_compile_variant_validates_to_a_captured_compiled_step():
    from benchmarks.study_throughput import VARIANTS, with_overrides
    from harness.study import TrialConfig
    cfg = with_overrides(TrialConfig(), VARIANTS["graph-compile"][1])
    assert cfg.train.cuda_graph is True and cfg.train.compile == "default"
