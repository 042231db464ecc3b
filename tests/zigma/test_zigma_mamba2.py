"""ZigMa with the Mamba-2 mixer under every kind of scan layer: single, multi-direction and segmented (video)."""

import functools

import pytest
import torch

from zigma.backbones import build_zigma, flops
from zigma.mixer import Mamba2Mixer
from zigma.scans import Factorized, LayerCycle, Parallel, Sweep, zigzag_paths

MIXER = functools.partial(Mamba2Mixer, headdim=32, chunk_size=16)
SCANS = {"zigzag-8": (LayerCycle(zigzag_paths, 8, name="zigzag-8"), (1, 8, 8)),
         "sweep-2": (Sweep(2, name="sweep-2"), (1, 8, 8)),
         "parallel-4": (Parallel(zigzag_paths, 4, name="parallel-4"), (1, 8, 8)),
         "video-sst": (Factorized("sst", name="video-sst"), (3, 1, 8, 8))}


def tiny(scan, shape, seed=0):
    return build_zigma(size="tiny", input_shape=shape, patch_size=2, scan=scan, mixer=MIXER, d_state=8,
                       generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(SCANS))
def test_forward_and_backward_reach_every_mixer_parameter(name):
    scan, shape = SCANS[name]
    model = tiny(scan, shape)
    assert all(isinstance(b.mixer, Mamba2Mixer) for b in model.blocks)
    for b in model.blocks:  # open the adaLN-Zero gates so gradients reach the mixers
        torch.nn.init.normal_(b.adaLN_modulation[-1].bias, std=0.5)
    torch.nn.init.normal_(model.final_layer.linear.weight, std=0.1)
    x = torch.randn(2, *shape)
    out = model(x, torch.rand(2))
    out.square().mean().backward()
    assert out.shape == x.shape
    for i, b in enumerate(model.blocks):
        for pname, p in b.mixer.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"blocks.{i}.mixer.{pname}"


def test_relative_and_around_permutation_modes_agree_with_mamba2():
    scan, shape = SCANS["parallel-4"]
    a = build_zigma(size="tiny", input_shape=shape, patch_size=2, scan=scan, mixer=MIXER, d_state=8,
                    generator=torch.Generator().manual_seed(0))
    b = build_zigma(size="tiny", input_shape=shape, patch_size=2, scan=scan, mixer=MIXER, d_state=8,
                    permute_mode="around", generator=torch.Generator().manual_seed(0))
    for blk in a.blocks:
        torch.nn.init.normal_(blk.adaLN_modulation[-1].bias, std=0.5)
    b.load_state_dict(a.state_dict())
    torch.nn.init.normal_(a.final_layer.linear.weight, std=0.1)
    b.final_layer.linear.weight.data.copy_(a.final_layer.linear.weight)
    x, t = torch.randn(2, *shape), torch.rand(2)
    torch.testing.assert_close(a(x, t), b(x, t))


def test_tiny_mamba2_zigma_fits_one_batch():
    scan, shape = SCANS["zigzag-8"]
    model = tiny(scan, shape)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(4, *shape, generator=g), torch.rand(4, generator=g)
    target = torch.randn(4, *shape, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = (model(x, t) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_flops_count_mamba2_mixers_by_their_formula():
    scan, shape = SCANS["sweep-2"]
    model = tiny(scan, shape)
    x = torch.randn(2, *shape)
    m = model.blocks[0].mixer
    e, n, h, d = m.d_inner, m.d_state, m.nheads, m.d_model
    bl, q = 2 * 16, 16
    # in_proj + out_proj, then per direction conv + SSD (C.B^T, its product with x, states in and out) + gate
    by_hand = bl * d * (2 * e + 2 * n + h) + bl * e * d + 2 * (bl * (e + 2 * n) * 4 + bl * (q * n + q * e + 2 * e * n) + bl * e)
    assert m.flops(2, 16) == by_hand
    stubbed = flops(model, x)
    for b in model.blocks:
        b.mixer.flops = lambda batch, length: 0
    assert stubbed - flops(model, x) == len(model.blocks) * by_hand
