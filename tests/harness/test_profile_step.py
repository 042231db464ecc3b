"""benchmarks/profile_step.py on CPU: kernel grouping rules, a tiny model's profile, the roofline arithmetic."""

import pytest
import torch

from benchmarks import profile_step as ps
from benchmarks import step_counts as sc
from benchmarks.bench import Config, Variant

# real CUDA kernel names (H100/H200 traces of cuBLAS, PyTorch, mamba-ssm, causal-conv1d) and the ops above them
KERNELS = [
    (("void selective_scan_fwd_kernel<Selective_Scan_fwd_kernel_traits<32, 4, 1, true, true, true, false, "
      "true, c10::BFloat16, float, c10::BFloat16> >(SSMParamsBase)"),
     ["SelectiveScanFn"], "selective scan / SSD"),
    ("_chunk_scan_fwd_kernel", ["MambaSplitConv1dScanCombinedFn"], "selective scan / SSD"),
    ("void at::native::elementwise_kernel<128, 2, ...>", ["aten::copy_", "MambaSplitConv1dScanCombinedFn"],
     "mixer (other)"),
    ("_state_passing_bwd_kernel", ["autograd::engine::evaluate_function: MambaSplitConv1dScanCombinedFnBackward"],
     "selective scan / SSD"),
    (("void causal_conv1d_fwd_kernel<Causal_conv1d_fwd_kernel_traits<128, 4, true, c10::BFloat16, float> >"
      "(ConvParamsBase)"), ["MambaInnerFn"], "causal conv"),
    ("nvjet_hsh_128x256_64x4_1x2_h_bz_coopA_NTN", ["aten::mm", "aten::linear"], "GEMMs"),
    (("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_"
      "kernel__5x_cublas"), ["aten::addmm"], "GEMMs"),
    (("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::BFloat16, float>(int, "
      "float, c10::BFloat16 const*, c10::BFloat16 const*, c10::BFloat16 const*, float*, float*, "
      "c10::BFloat16*)"),
     ["aten::native_layer_norm", "aten::layer_norm"], "norms and adaLN"),
    (("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
      "FusedOptimizerTensorListMetadata<4>, at::native::(anonymous namespace)::FusedAdamMathFunctor<float, "
      "4, (at::native::ADAM_MODE)1, false>, float*, double, double, double, double, double, double, bool, "
      "float*, float*>"), ["aten::_fused_adamw_", "Optimizer.step#AdamW.step"], "optimizer"),
    ("void at::native::index_elementwise_kernel<128, 4, at::native::gpu_index_kernel<...> >(long, ...)",
     ["aten::index_select", "_PermuteTokens"], "permutation gathers"),
    ("void at::native::vectorized_gather_kernel<16, long>(char*, char*, long*, int, long, long, long, long, bool)",
     ["aten::take", "autograd::engine::evaluate_function: _PermuteTokensBackward"], "permutation gathers"),
    (("void at::native::vectorized_elementwise_kernel<4, at::native::BinaryFunctor<float, float, float, "
      "at::native::binary_internal::MulFunctor<float> >, ...>"),
     ["aten::mul", "MambaInnerFn"], "mixer (other)"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>, ...>",
     ["aten::add", "autograd::engine::evaluate_function: AddBackward0"], "other"),
    # mamba-ssm 2.3's gated RMSNorm (Triton, layernorm_gated.py) inside Mamba-2's fused layer, forward and backward
    ("_layer_norm_fwd_1pass_kernel", ["MambaSplitConv1dScanCombinedFn"], "norms and adaLN"),
    ("_layer_norm_bwd_kernel", ["autograd::engine::evaluate_function: MambaSplitConv1dScanCombinedFnBackward"],
     "norms and adaLN"),
    # fla-core 0.6.0's simple-GLA Triton kernels (names from its source, not yet from a trace) and its autograd op
    ("chunk_fwd_kernel_h", ["ChunkSimpleGLAFunction"], "selective scan / SSD"),
    ("chunk_local_cumsum_scalar_kernel", ["ChunkSimpleGLAFunction"], "selective scan / SSD"),
    ("chunk_bwd_kernel_dqkwg", ["autograd::engine::evaluate_function: ChunkSimpleGLAFunctionBackward"],
     "selective scan / SSD"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::BFloat16CopyFunctor, ...>",
     ["aten::copy_", "aten::to", "ChunkSimpleGLAFunction"], "selective scan / SSD"),
]


@pytest.mark.parametrize("name,ancestors,group", KERNELS, ids=[k[2] + f"-{i}" for i, k in enumerate(KERNELS)])
def test_each_kernel_goes_to_its_group(name, ancestors, group):
    assert sc.group_of(name, ancestors) == group


def test_a_cpu_profile_of_a_tiny_zigma_fills_the_scan_gemm_gather_and_optimizer_groups():
    torch.set_num_threads(1)
    cfg = Config(size="tiny", device="cpu", batch_tokens=32)
    times, flops, bytes_, batch, _ = ps.profile(cfg, Variant("zigma", "t", "zigzag-8", "relative"), tokens=16, steps=1)
    assert batch == 2 and set(times) == set(ps.GROUPS)
    for group in ("selective scan / SSD", "GEMMs", "permutation gathers", "optimizer"):
        assert times[group] > 0, group
    assert flops["GEMMs"] > 0 and bytes_["optimizer"] > 0


def test_roofline_is_the_slower_of_compute_and_memory_at_the_given_peaks():
    rows = {r["group"]: r for r in ps.table(
        {"GEMMs": 2000.0, ps.ADALN: 500.0}, {"GEMMs": 1e12, ps.ADALN: 1e6}, {"GEMMs": 1e6, ps.ADALN: 1e9},
        peak_tflops=1000.0, peak_tbps=4.0)}
    assert rows["GEMMs"]["roofline_ms"] == pytest.approx(1.0)       # 1e12 FLOP at 1e15 FLOP/s
    assert rows["GEMMs"]["over_roofline"] == pytest.approx(2.0)
    assert rows[ps.ADALN]["roofline_ms"] == pytest.approx(0.25)      # 1e9 B at 4e12 B/s
    assert rows[ps.ADALN]["share"] == pytest.approx(0.2)
    assert rows["other"]["over_roofline"] is None


def test_a_mixer_whose_kernel_is_missing_is_recorded_as_skipped_and_the_others_still_profiled(tmp_path, monkeypatch):
    import json

    from zigma.mixer import fused

    monkeypatch.setattr(fused, "_import_gla", lambda: (None, "ModuleNotFoundError: No module named 'fla'"))
    torch.set_num_threads(1)
    ps.main(["--device", "cpu", "--size", "tiny", "--tokens", "16", "--batch-tokens", "32", "--steps", "1",
             "--mixers", "mamba2-fla,mamba2", "--dtype", "fp32", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "profile_step.json").read_text())["results"]
    assert "zigma-harness[fla]" in results["mamba2-fla"]["skipped"] and results["mamba2"]["rows"]


def _counted_bytes(fn) -> float:
    counter = sc._Count()
    with counter:
        fn()
    return sum(counter.bytes.values())


def test_views_and_allocations_count_no_bytes():
    x = torch.randn(4, 8)
    assert _counted_bytes(lambda: (x.view(32), x.t(), x[1:3], x.unsqueeze(0).expand(3, 4, 8), x.reshape(2, 16),
                                   x.detach(), torch.empty_like(x), x.new_empty(5), x.unbind(0))) == 0


def test_an_elementwise_op_moves_its_input_and_output_and_an_in_place_one_reads_and_writes_its_target():
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    assert _counted_bytes(lambda: x + 1) == (32 + 32) * 4           # read 32 floats, write 32
    assert _counted_bytes(lambda: x * y) == (32 + 32 + 32) * 4
    assert _counted_bytes(lambda: x.clone().mul_(2)) == (32 + 32) * 4 + (32 + 32) * 4   # clone, then read + write


def test_a_broadcast_input_is_read_once_not_once_per_output_element():
    x = torch.randn(4, 8)
    # unsqueeze + expand are views (0 bytes); the product reads x's 32 floats once and writes 3 x 32
    assert _counted_bytes(lambda: x.unsqueeze(0).expand(3, 4, 8) * 2) == (32 + 96) * 4


def test_a_fused_kernel_the_dispatch_mode_saw_keeps_its_counted_bytes_and_one_it_could_not_see_gets_the_shapes():
    flops, bytes_ = sc.merge_shape_counts({"GEMMs": 5.0}, {"GEMMs": 7.0, "causal conv": 30.0},
                                          {"causal conv": (2.0, 20.0), "selective scan / SSD": (9.0, 11.0)})
    assert bytes_ == {"GEMMs": 7.0, "causal conv": 30.0, "selective scan / SSD": 11.0}   # 30 + 20 would count twice
    assert flops == {"GEMMs": 5.0, "causal conv": 2.0, "selective scan / SSD": 9.0}     # custom ops: no FLOPs


def test_a_kernel_registered_as_a_custom_op_is_seen_by_the_byte_counter_in_its_group():
    @torch.library.custom_op("zigma_profile_test::causal_conv1d_fwd", mutates_args=())
    def conv(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    x = torch.randn(3, 5)
    counter = sc._Count()
    with counter:
        conv(x)
    assert counter.bytes["causal conv"] == (15 + 15) * 4


def test_mamba1s_scan_is_held_to_the_cuda_core_peak_and_mamba2s_ssd_to_the_tensor_core_peak():
    times, flops, bytes_ = {"selective scan / SSD": 10000.0}, {"selective scan / SSD": 67e9}, {}
    for mixer, roof in (("mamba1", 1.0), ("mamba2", 67e9 / 989e12 * 1e3)):     # ms: 67 GFLOP at 67 or 989 TFLOP/s
        rows = {r["group"]: r for r in ps.table(times, flops, bytes_, peak_tflops=989.0, peak_tbps=4.8,
                                                peak_scalar_tflops=67.0, tensor_groups=ps.tensor_core_groups(mixer))}
        assert rows["selective scan / SSD"]["roofline_ms"] == pytest.approx(roof)


def _modulate_program(tags):
    """y = x * 2 outside the adaLN helpers, then modulate(y, shift, scale), a sum and the backward, under the byte
    counter (fresh leaves each time); -> {group: bytes}."""
    from zigma.backbones import layers

    g = torch.Generator().manual_seed(0)
    x, shift, scale = (torch.randn(*shape, generator=g).requires_grad_() for shape in ((2, 3, 4), (2, 4), (2, 4)))
    counter = sc._Count()
    if tags is not None:
        counter.tags, tags.counter = tags, counter
    with counter:
        layers.modulate(x * 2, shift, scale).sum().backward()
    return dict(counter.bytes)


def test_the_adaln_helpers_forward_and_backward_bytes_are_counted_in_their_group_and_nothing_is_lost():
    plain = _modulate_program(None)
    with ps.AdaLNTags() as tags:
        tagged = _modulate_program(tags)
    assert set(plain) == {"other"} and sum(tagged.values()) == plain["other"]     # moved, not added or dropped
    # forward inside modulate: (1 + scale) reads and writes 8 floats; x * that and + shift each read 24 + 8 (the
    # broadcast operand once) and write 24: 4 * (16 + 56 + 56) bytes, and its backward on top
    assert tagged[ps.ADALN] > 4 * (16 + 56 + 56)
    # outside: x * 2 (24 in, 24 out), its backward (the same), the loss sum (24 in, 1 out) and its seed (1 + 1)
    assert tagged["other"] == 4 * (48 + 48 + 25 + 2)


def test_a_tiny_zigmas_profile_puts_time_and_bytes_in_norms_and_adaln():
    torch.set_num_threads(1)
    cfg = Config(size="tiny", device="cpu", batch_tokens=32)
    times, _, bytes_, _, _ = ps.profile(cfg, Variant("zigma", "t", "zigzag-8", "relative"), tokens=16, steps=1)
    assert times[ps.ADALN] > 0 and bytes_[ps.ADALN] > 0


def test_the_adaln_tags_cover_every_backbone_module_that_calls_the_adaln_helpers():
    """AdaLNTags patches module globals: a backbone module that imports modulate or gated_residual and is not in
    SITES would leave its adaLN work in 'other' without a word."""
    import importlib
    import pkgutil

    import zigma.backbones
    from zigma.backbones import layers

    found = set()
    for info in pkgutil.iter_modules(zigma.backbones.__path__):
        mod = importlib.import_module(f"zigma.backbones.{info.name}")
        for name in ("modulate", "gated_residual"):
            if getattr(mod, name, None) is getattr(layers, name):
                found.add((mod.__name__, name))
    assert found and found <= set(ps.AdaLNTags.SITES), found - set(ps.AdaLNTags.SITES)


def test_a_cards_datasheet_peaks_are_found_by_its_name_and_an_unlisted_card_needs_all_three():
    assert ps.card_peaks("NVIDIA H100 80GB HBM3") == (989.0, 67.0, 3.35)
    assert ps.card_peaks("NVIDIA H200") == (989.0, 67.0, 4.8)
    assert ps.card_peaks("NVIDIA H100 PCIe") == (756.0, 51.0, 2.0)
    assert ps.card_peaks("NVIDIA H100 80GB HBM3", tbps=3.0) == (989.0, 67.0, 3.0)
    with pytest.raises(ValueError, match="--peak-tbps"):
        ps.card_peaks("NVIDIA A100-SXM4-80GB", 312.0, 19.5)
    assert ps.card_peaks("NVIDIA A100-SXM4-80GB", 312.0, 19.5, 2.0) == (312.0, 19.5, 2.0)


def test_retable_keeps_the_measurements_and_recomputes_the_roofline_at_the_cards_peaks(tmp_path):
    import json

    # by hand, at H100 peaks: norms 30 ms moving 67 GB -> 67e9 / 3.35e12 = 20 ms, 1.5x; the scan (CUDA cores)
    # 134 GFLOP / 67e12 = 2 ms and 3.35 GB / 3.35e12 = 1 ms -> 2 ms, 50 ms measured is 25x
    saved = {"device": "NVIDIA H100 80GB HBM3", "torch": "x", "args": {
        "size": "B", "scan": "zigzag-8", "tokens": 4096, "dtype": "bf16", "peak_tflops": 989.0,
        "peak_scalar_tflops": 67.0, "peak_tbps": 4.8}, "results": {"mamba1": {"batch": 16, "tensor_core_groups": [
            "GEMMs"], "rows": [{"group": ps.ADALN, "ms": 30.0, "gflop": 0.0, "gbytes": 67.0},
                               {"group": "selective scan / SSD", "ms": 50.0, "gflop": 134.0, "gbytes": 3.35}]}}}
    (tmp_path / "in.json").write_text(json.dumps(saved))
    assert ps.main(["--retable", str(tmp_path / "in.json"), "--out", str(tmp_path / "out")]) == 0
    doc = json.loads((tmp_path / "out" / "profile_step.json").read_text())
    rows = {r["group"]: r for r in doc["results"]["mamba1"]["rows"]}
    assert doc["args"]["peak_tbps"] == 3.35
    assert rows[ps.ADALN]["ms"] == pytest.approx(30.0) and rows[ps.ADALN]["roofline_ms"] == pytest.approx(20.0)
    assert rows["selective scan / SSD"]["roofline_ms"] == pytest.approx(2.0)
    assert rows["selective scan / SSD"]["over_roofline"] == pytest.approx(25.0)
    assert "on NVIDIA H100 80GB HBM3 (peaks 989 TFLOP/s" in (tmp_path / "out" / "profile_step.md").read_text()


def test_mamba2s_fused_gated_norm_bytes_are_eight_values_a_token_a_layer_and_mamba1_has_none(monkeypatch):
    from benchmarks.bench import _build

    cfg = Config(size="tiny", device="cpu", batch_tokens=32)
    monkeypatch.setattr(sc, "_split_path", lambda m: hasattr(m, "nheads"))  # as on a GPU with mamba-ssm
    m2 = _build(Variant("zigma", "t", "zigzag-8", "relative", mixer="mamba2"), 16, cfg, torch.device("cpu"))
    m1 = _build(Variant("zigma", "t", "zigzag-8", "relative"), 16, cfg, torch.device("cpu"))
    width, depth = m2.blocks[0].mixer.d_model, len(m2.blocks)
    # forward: y, z in, out; backward: y, z, d_out in, dy, dz out -> 8 x d_inner (= 2 x width) a token, bf16
    assert sc.gated_norm_bytes(m2, 2, 2) == depth * 8 * (2 * 16) * (2 * width) * 2
    assert sc.gated_norm_bytes(m1, 2, 2) == 0


def test_each_groups_largest_kernels_come_largest_first_in_ms_a_step():
    by_kernel = {"GEMMs": {"a": 3000.0, "b": 1000.0, "c": 2000.0}, "other": {"x": 10.0}}
    assert ps.top_kernels(by_kernel, steps=2, top=2) == {"GEMMs": [["a", 1.5], ["c", 1.0]], "other": [["x", 0.005]]}
    text = ps.kernel_lines(ps.top_kernels(by_kernel, steps=2))
    assert "- GEMMs: `a` 1.50 ms, `c` 1.00 ms, `b` 0.50 ms" in text
