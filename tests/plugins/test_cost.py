"""Cost metrics: exact parameter and FLOP counts, a memory meter that sees known allocations, throughput and
latency from warm-up-free, synchronized timing. Speeds are reported, never asserted (STYLE 20)."""

import pytest
import torch
from torch import nn

from plugins._metrics.cost import (
    PeakMemory,
    count_params,
    flops,
    measure_sampling,
    measure_training_throughput,
)

torch.set_num_threads(1)


class _MLP(nn.Module):
    def __init__(self, d=256):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, d), nn.GELU(), nn.Linear(d, 3 * 16 * 16))

    def forward(self, x, t):
        return self.net(x).view_as(x)


class _ConvNet(nn.Module):
    def __init__(self, c=32):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.GELU(), nn.Conv2d(c, 3, 3, padding=1))

    def forward(self, x, t):
        return self.net(x)


def test_count_params_counts_every_parameter_and_optionally_only_trainable_ones():
    model = _MLP(d=10)
    assert count_params(model) == 768 * 10 + 10 + 10 * 768 + 768
    model.net[1].requires_grad_(False)
    assert count_params(model, trainable_only=True) == 10 * 768 + 768


def test_flops_of_linear_and_conv_layers_count_one_per_multiply_accumulate():
    x, t = torch.zeros(4, 3, 16, 16), torch.zeros(4)
    assert flops(_MLP(d=10), x, t)["flops"] == 4 * (768 * 10 + 10 * 768)
    conv = flops(_ConvNet(c=8), x, t)
    assert conv["flops"] == 4 * 16 * 16 * (3 * 8 * 9 + 8 * 3 * 9) and conv["gflops"] == conv["flops"] / 1e9
    assert "FlopCounterMode" in conv["flops_method"]


def test_flops_of_a_mamba_backbone_add_the_selective_scan_formula():
    from plugins.registry import load_registries
    from zigma.backbones import flops as backbone_flops

    reg = load_registries()
    model = reg.backbones.get("zigma").build(size="tiny", input_shape=(1, 8, 8), patch_size=2,
                                              scan=reg.scans.get("zigzag-8").build(seed=0), num_classes=None,
                                              context_dim=None, device=None, dtype=None)
    x = torch.zeros(2, 1, 8, 8)
    out = flops(model, x)
    assert out["flops"] == backbone_flops(model, x) and out["flops_method"].startswith("zigma.backbones.flops")


def test_peak_memory_on_cpu_sees_a_known_allocation():
    with PeakMemory("cpu") as mem:
        block = torch.ones(64 * 2**20 // 4)             # 64 MiB, touched
        del block
    assert mem.delta_bytes >= 60 * 2**20 and mem.peak_bytes >= mem.delta_bytes
    assert mem.method.startswith("cpu peak RSS")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_peak_memory_on_cuda_reads_the_allocator_peak():
    with PeakMemory("cuda") as mem:
        block = torch.ones(64 * 2**20 // 4, device="cuda")
        del block
    assert mem.delta_bytes >= 64 * 2**20 and mem.method == "torch.cuda.max_memory_allocated"


def _train_step(model, batch):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, t = torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.rand(batch)

    def step():
        loss = (model(x, t) - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def test_two_backbones_on_cpu_report_memory_throughput_and_latency():
    """The runner's path: measure_training_throughput + measure_sampling + flops + count_params per backbone."""
    rows = {}
    for name, model in (("mlp", _MLP()), ("conv", _ConvNet())):
        calls = []
        step = _train_step(model, 8)
        train = measure_training_throughput(lambda calls=calls, step=step: (calls.append(1), step()), 8,
                                            warmup=2, iters=3, device="cpu")
        assert len(calls) == 5                                       # warm-up runs, but is not timed
        with torch.no_grad():
            def sample_fn(model=model):
                return {"nfe": 4, "x": [model(torch.zeros(8, 3, 16, 16), torch.zeros(8)) for _ in range(4)]}
            sample = measure_sampling(sample_fn, 8, warmup=1, iters=2)
        rows[name] = {**train, **sample, "params": count_params(model),
                      **flops(model, torch.zeros(1, 3, 16, 16), torch.zeros(1))}
    for row in rows.values():
        assert row["train_images_per_s"] == pytest.approx(8 / row["train_step_s"])
        assert row["sample_latency_per_image_s"] == pytest.approx(row["sample_batch_s"] / 8)
        assert row["nfe"] == 4 and row["train_peak_memory_bytes"] > 0 and row["sample_peak_memory_bytes"] > 0
    assert rows["mlp"]["params"] > rows["conv"]["params"]
    print({k: {m: v for m, v in r.items() if "memory" in m or "per_s" in m} for k, r in rows.items()})


def test_sampling_nfe_is_read_from_a_sample_result():
    class Result:
        nfe = 13
    assert measure_sampling(Result, 2, warmup=0, iters=2)["nfe"] == 13
    assert measure_sampling(lambda: None, 2, warmup=0, iters=1)["nfe"] is None
