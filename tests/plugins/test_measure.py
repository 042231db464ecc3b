"""plugins/measure.py: memory in GB = 1e9 bytes that sees known allocations; clocks that leave warm-up out and
count every timed region. Speeds are reported, never asserted (STYLE 20)."""

import time
from pathlib import Path

import pytest
import torch

from plugins.measure import GB, PeakMemory, Timer, Timing, WallSplit, time_calls


def test_gb_is_ten_to_the_ninth_bytes():
    assert GB == 1_000_000_000


def test_peak_memory_on_cpu_sees_a_known_allocation_in_gb():
    with PeakMemory("cpu") as mem:
        block = torch.ones(100_000_000 // 4)             # 0.1 GB, touched
        del block
    if not mem.method.startswith("cpu peak RSS (VmHWM"):
        pytest.skip("no VmHWM reset on this system")
    assert 0.095 <= mem.delta_gb <= 0.5 and mem.peak_gb >= mem.delta_gb


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_peak_memory_on_cuda_reads_the_allocator_peak_in_gb():
    with PeakMemory("cuda") as mem:
        block = torch.ones(100_000_000 // 4, device="cuda")
        del block
    assert mem.delta_gb >= 0.1 and mem.method == "torch.cuda.max_memory_allocated"


def test_peak_memory_total_on_cpu_is_at_least_the_resident_set_now():
    mem = PeakMemory("cpu")
    mem.reset()
    if not mem.method.startswith("cpu peak RSS (VmHWM"):
        pytest.skip("no VmHWM reset on this system")
    status = Path("/proc/self/status").read_text().splitlines()
    rss = int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) * 1024
    assert mem.read_total() * GB >= 0.9 * rss and mem.read() <= mem.read_total()


def test_time_calls_runs_warmup_untimed_and_times_each_later_call():
    calls = []
    out = time_calls(lambda: calls.append(1), device=torch.device("cpu"), warmup=2, iters=3)
    assert len(calls) == 5 and len(out) == 3 and isinstance(out, Timing)


def test_timer_measures_a_known_sleep_within_the_clock_resolution():
    timer = Timer("cpu")
    for _ in range(3):
        with timer.region():
            time.sleep(0.02)
    seconds = timer.take()
    assert len(seconds) == 3 and all(0.019 <= s < 0.5 for s in seconds) and timer.take() == []


def test_timing_std_is_the_sample_standard_deviation():
    assert Timing([1.0, 2.0, 3.0]).std == pytest.approx(1.0) and Timing([1.0, 3.0]).mean == 2.0


def test_wall_split_adds_up_repeated_phases():
    split = WallSplit()
    for _ in range(2):
        with split("data"):
            time.sleep(0.01)
    assert set(split.seconds) == {"data"} and split.seconds["data"] >= 0.02
