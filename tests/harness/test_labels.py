"""How axis values read in labels, tables and the dry run (harness/labels.py), against text written by hand."""

import pytest
import yaml

from harness.labels import axis_text
from harness.study import expand_trials, parse_study


@pytest.mark.parametrize("value, text", [(200.0, "200"), (1e10, "1e+10"), (3.7, "3.7"), (0.0005, "0.0005"),
                                         ({"kind": "flops", "value": 6e14}, "6e+14 flops"),
                                         ({"kind": "gpu_seconds", "value": 37}, "37 gpu_seconds"),
                                         ({"name": "heun", "steps": 25}, "heun steps=25"), ("zigzag-8", "zigzag-8")])
def test_axis_values_read_as_a_person_writes_them(value, text):
    assert axis_text(value) == text


def test_a_trials_label_reads_a_component_axis_and_a_budget_as_written():
    text = """
name: t
axes:
  - {sampler: [{name: heun, steps: 25}], train.budget: [{kind: flops, value: 6.0e+14}], train.lr: [0.0005]}
"""
    (spec,) = expand_trials(parse_study(yaml.safe_load(text)))
    assert spec.label == "sampler=heun steps=25, train.budget=6e+14 flops, train.lr=0.0005 seed=0"


def test_a_trials_model_is_its_label_without_the_budget_keys():
    """The equal-steps / equal-GPU-time / equal-FLOPs arms of one model share its colour and count once: their rows
    differ only in train.steps, train.budget, eval.every and eval.intermediate_samples."""
    import pandas as pd

    from harness.labels import model_label, variant_label
    row = pd.Series({"axis.backbone.name": "zigma", "axis.scan.name": "zigzag-8", "axis.train.steps": 8000,
                     "axis.train.budget": {"kind": "gpu_seconds", "value": 37}, "axis.eval.every": 3.7,
                     "axis.eval.intermediate_samples": 200, "axis.backbone.pos_embed": float("nan"), "seed": 0})
    assert model_label(row) == variant_label({"backbone.name": "zigma", "scan.name": "zigzag-8"})
