"""Cost metrics: exact parameter and FLOP counts (the clocks and memory meter: tests/plugins/test_measure.py)."""

import torch
from torch import nn

from plugins.metrics import count_params, flops

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


def test_flops_of_a_mamba_backbone_are_the_hand_count_with_the_selective_scan_term():
    """FlopCounterMode cannot see a selective scan; the metric must add it. Oracle: the layer-by-layer hand count
    of tests/harness/test_models_cli.py (9 E N MACs a token for the scan, as the official fvcore helper), at 16
    tokens: a 1-channel 8x8 input at patch 2 is the hand count's 4-channel patch-1 case."""
    from plugins.registry import load_registries
    from tests.harness.test_models_cli import _zigma_hand_count

    reg = load_registries()
    model = reg.backbones.get("zigma").build(size="tiny", input_shape=(1, 8, 8), patch_size=2,
                                              scan=reg.scans.get("zigzag-8").build(seed=0), num_classes=None,
                                              context_dim=None, device=None, dtype=None)
    out = flops(model, torch.zeros(2, 1, 8, 8))
    params, macs = _zigma_hand_count(64, 4, 16, channels=4)
    assert count_params(model) == params
    assert out["flops"] == 2 * macs and out["flops_method"].startswith("zigma.backbones.flops")
