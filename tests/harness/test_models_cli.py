"""`harness models table`: params and GFLOPs per registered backbone x size preset, with the official numbers."""

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
    _, macs, shape = model_costs("zigma", "tiny", 64)
    width_depth, p, _, g64 = rows[("zigma", "tiny")][:4]
    assert width_depth == shape == "64×4"
    assert float(p) == round(model_costs("zigma", "tiny", 16)[0] / 1e6, 1)
    assert float(g64) == round(macs / 1e9, 1)


def test_models_table_shows_the_official_config_numbers_beside_ours(capsys):
    code, out, _ = _run(capsys, "models", "table", "--size", "B", "--backbone", "zigma", "--tokens", "1024")
    assert code == 0
    width_depth, params, gflops, *official = _rows(out)[("zigma", "B")]
    assert (width_depth, float(params), float(gflops)) == ("768×24", pytest.approx(135.8), pytest.approx(97.5))
    assert official == ["134.6 @1024", "97 @1024", "zigzag8_b1_pe2"]


def test_models_table_rejects_a_non_square_token_count(capsys):
    code, _, err = _run(capsys, "models", "table", "--size", "tiny", "--tokens", "100,200")
    assert code == 2 and "not a square" in err
