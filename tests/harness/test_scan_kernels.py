"""benchmarks/scan_kernels.py on CPU: its arithmetic (the line fit, the least bytes), its refusal without CUDA."""

import pytest

from benchmarks import scan_kernels as sk


def test_the_line_fit_recovers_an_exact_line_and_the_least_squares_line_of_noisy_points():
    assert sk.fit_line([1, 2, 4, 8], [3.5, 4.0, 5.0, 7.0]) == pytest.approx((3.0, 0.5))
    # y = 1, 3, 2 at x = 0, 1, 2 by hand: mean x 1, mean y 2, sum (x - 1)(y - 2) = (-1)(-1) + 0 + (1)(0) = 1,
    # sum (x - 1)^2 = 2, so b = 0.5 and a = 2 - 0.5 = 1.5
    assert sk.fit_line([0, 1, 2], [1, 3, 2]) == pytest.approx((1.5, 0.5))


def test_mamba1s_least_bytes_count_each_tensor_the_kernel_must_read_or_write_once():
    # batch 2 x 8 tokens, d_inner 4, N 3, bf16. Forward: u, delta, z (4 each) and B, C (3 each) in, y (4) out = 22
    # values a token. Backward: u, delta, z, dy (16) and B, C (6) in, du, ddelta, dz (12) and dB, dC (6) out = 40.
    fwd, bwd = sk.mamba1_bytes(2, 8, 4, 3)
    assert fwd == 16 * 22 * 2
    assert bwd == 16 * 40 * 2


def test_without_cuda_it_says_so_and_times_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(sk.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as err:
        sk.main(["--out", str(tmp_path / "o")])
    assert err.value.code == 2 and not (tmp_path / "o").exists()


def test_a_run_cut_before_the_end_of_a_sweep_still_writes_the_rows_it_timed():
    doc = {"device": "NVIDIA H100 80GB HBM3", "args": {"batch": 16, "tokens": 4096, "d_inner": 1536, "reps": 10},
           "mamba1": {"rows": [{"d_state": 1, "fwd_ms": 1.25, "fwd_bwd_ms": 4.5, "fwd_gb": 0.4, "bwd_gb": 0.7,
                                "fwd_gflop": 1.8}]},
           "mamba2": {"rows": []}}
    text = sk.markdown(doc)
    assert "| 1 | 1.250 | 4.500 | 1.10 | 2 |" in text and "Least squares" not in text
    assert "(24 heads x 64, one group)" in text
