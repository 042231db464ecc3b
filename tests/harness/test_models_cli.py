"""`harness models table`: params and GFLOPs per registered backbone x size preset, with the official numbers."""

import math
import re

import pytest
import torch

from harness.commands.models import model_costs
from tests.harness.cli_support import run_cli as _run

torch.set_num_threads(1)




def _rows(text: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if len(cells) > 2 and cells[0] and cells[0] != "backbone":
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


def test_models_table_lists_every_backbone_with_params_and_gflops_per_token_count(capsys):
    code, out, err = _run(capsys, "models", "table", "--size", "tiny", "--tokens", "16,64")
    assert code == 0, err
    rows = _rows(out)
    assert set(rows) == {("dit", "tiny"), ("vim", "tiny"), ("zigma", "tiny")}
    width_depth, p, _, g64 = rows[("zigma", "tiny")][:4]
    assert width_depth == "64×4"
    assert float(p) == round(_zigma_hand_count(64, 4, 16)[0] / 1e6, 1)
    assert float(g64) == round(_zigma_hand_count(64, 4, 64)[1] / 1e9, 1)


def _zigma_hand_count(width: int, depth: int, tokens: int, channels: int = 4) -> tuple[int, int]:
    """(params, forward MACs) of an unconditional ZigMa, patch 1, learned PE, written out layer by layer.

    Mamba-1 mixer (mamba_ssm.Mamba: d_state N=16, d_conv 4, expand 2, dt_rank ceil(D/16), no in/out bias);
    block = RMSNorm + adaLN Linear(D, 3D) + mixer, no MLP (CompVis/zigma model_zigma.py); shell = patch embed,
    sinusoid(256) time MLP, learned PE and DiT's final layer (affine-free LayerNorm, adaLN Linear(D, 2D), Linear).
    MACs per token and mixer as the official fvcore helper counts them (selective scan 9*E*N, D-skip and z-gate
    E each); adaLN MACs are per sample.
    """
    d, n, e, r, L = width, 16, 2 * width, math.ceil(width / 16), tokens
    mixer = d * 2 * e + (e * 4 + e) + e * (r + 2 * n) + (r * e + e) + e * n + e + e * d
    block = d + (d * 3 * d + 3 * d) + mixer
    shell = (channels * d + d) + (256 * d + d + d * d + d) + L * d + (d * 2 * d + 2 * d) + (d * channels + channels)
    params = depth * block + shell
    mixer_macs = L * (d * 2 * e + e * 4 + e * (r + 2 * n) + r * e + 9 * e * n + 2 * e + e * d)
    macs = depth * (mixer_macs + d * 3 * d) + L * channels * d + (256 * d + d * d) + d * 2 * d + L * d * channels
    return params, macs


@pytest.mark.parametrize("size,width,depth,tokens",
                         [("tiny", 64, 4, 16), ("S", 368, 24, 256), ("B", 768, 24, 1024)])
def test_zigma_params_and_macs_equal_a_count_written_out_by_hand(size, width, depth, tokens):
    params, macs, shape = model_costs("zigma", size, tokens)
    assert shape == f"{width}×{depth}"
    assert (params, macs) == _zigma_hand_count(width, depth, tokens)


def test_zigma_b_hand_count_without_our_final_adaln_is_the_released_134_6_m():
    # the released zigzag8_b1_pe2 config (768 x 24, 32x32 latent, patch 1, learned PE) ends in RMSNorm_f (D) and
    # LayerNorm -> Linear instead of our adaLN final layer (2D^2 + 2D); zigma/backbones/zigma.py lists the difference
    params, _ = _zigma_hand_count(768, 24, 1024)
    assert round((params - (2 * 768 * 768 + 2 * 768) + 768) / 1e6, 1) == 134.6


#: DiT paper (Peebles & Xie, ICCV 2023), Table 4: params (M) and forward GFLOPs of DiT-{S,B,L,XL}/2 on a 32x32x4
#: latent (256 tokens), class-conditional with learned sigma; ours is unconditional, patch 1 on 16x16x4.
#: (Figures as the DiT paper rounds them; not re-read from the PDF for this test.)
DIT_PAPER = {"S": (33, 6.06), "B": (130, 23.01), "L": (458, 80.71), "XL": (675, 118.64)}
DIT_WIDTH = {"S": 384, "B": 768, "L": 1024, "XL": 1152}


@pytest.mark.parametrize("size", sorted(DIT_PAPER))
def test_dit_params_and_gflops_match_the_dit_paper_within_half_a_percent(size):
    params, macs, _ = model_costs("dit", size, 256)
    paper_params, paper_gflops = DIT_PAPER[size]
    class_table = 1001 * DIT_WIDTH[size]                                 # ImageNet classes + null class
    assert (params + class_table) / 1e6 == pytest.approx(paper_params, rel=5e-3)
    assert macs / 1e9 == pytest.approx(paper_gflops, rel=5e-3)


def test_models_table_prints_the_hand_count_and_the_official_zigma_b_numbers(capsys):
    code, out, _ = _run(capsys, "models", "table", "--size", "B", "--backbone", "zigma", "--tokens", "1024")
    assert code == 0
    width_depth, params, gflops, *official = _rows(out)[("zigma", "B")]
    hand_params, hand_macs = _zigma_hand_count(768, 24, 1024)
    assert (width_depth, float(params), float(gflops)) == ("768×24", round(hand_params / 1e6, 1),
                                                           round(hand_macs / 1e9, 1))
    assert official[:2] == ["134.6 @1024", "97 @1024"]   # reference count of the released config (see above)


def test_models_table_rejects_a_non_square_token_count(capsys):
    code, _, err = _run(capsys, "models", "table", "--size", "tiny", "--tokens", "100,200")
    assert code == 2 and "not a square" in err
