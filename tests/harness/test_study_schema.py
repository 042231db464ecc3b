"""Study files load into a frozen schema and expand into trials."""

import pytest
from pydantic import ValidationError

from harness.study import expand_trials, parse_study
from tests.harness.cli_support import run_cli


def test_axes_blocks_expand_as_a_union_of_cartesian_products_times_seeds():
    study = parse_study({
        "name": "s",
        "axes": [{"backbone.name": ["zigma", "vim"], "scan.name": ["zigzag-8", "sweep-1"]},
                 {"backbone.name": ["dit"]}],
        "seeds": [0, 1],
    })
    trials = expand_trials(study)
    assert len(trials) == (4 + 1) * 2
    assert len({t.key for t in trials}) == len(trials)
    dit = [t for t in trials if t.config.backbone.name == "dit"]
    assert len(dit) == 2 and all(t.params == {"backbone.name": "dit"} for t in dit)


def test_preset_is_deep_merged_over_the_file():
    raw = {"name": "s", "base": {"train": {"steps": 1000, "lr": 0.001}},
           "presets": {"smoke": {"base": {"train": {"steps": 5}}}}}
    study = parse_study(raw, preset="smoke").study
    assert study.base.train.steps == 5 and study.base.train.lr == 0.001
    assert parse_study(raw).study.base.train.steps == 1000


def test_the_schema_is_frozen():
    study = parse_study({"name": "s"}).study
    with pytest.raises(ValidationError):
        study.base.train.steps = 3  # type: ignore[misc]


def test_component_shorthand_and_options_are_kept():
    study = parse_study({"name": "s", "base": {"scan": "sweep-2", "dataset": {"name": "digits", "resolution": 16}}}).study
    assert study.base.scan.name == "sweep-2"
    assert study.base.dataset.options == {"resolution": 16}


def test_trial_keys_are_stable_across_loads():
    raw = {"name": "s", "axes": {"scan.name": ["a", "b"]}, "seeds": [3]}
    assert [t.key for t in expand_trials(parse_study(raw))] == [t.key for t in expand_trials(parse_study(raw))]


def test_a_preset_runs_as_its_own_study_name():
    raw = {"name": "s", "presets": {"smoke": {"seeds": [0]}, "named": {"name": "other"}}}
    assert parse_study(raw, preset="smoke").study.name == "s-smoke"
    assert parse_study(raw, preset="named").study.name == "other"
    assert parse_study(raw).study.name == "s"


def test_validate_accepts_backbone_checkpointing_in_base_and_in_axes(capsys, tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text("name: s\nbase:\n  backbone: {name: dit, checkpointing: true}\n"
                     "axes:\n  - {backbone.name: [dit]}\n  - {backbone.name: [zigma], backbone.checkpointing: [false, true]}\n")
    code, out, err = run_cli(capsys, "validate", str(study))
    assert code == 0, out + err
    assert "3 trial(s), 3 distinct model(s) built" in out
    trials = expand_trials(parse_study({"name": "s", "axes": {"backbone.checkpointing": [False, True]}}))
    assert [t.config.backbone.options for t in trials] == [{"checkpointing": False}, {"checkpointing": True}]


def test_a_loaded_study_keeps_its_source_the_preset_applied_and_every_preset_offered():
    raw = {"name": "s", "presets": {"smoke": {"seeds": [1]}, "full": {}}}
    loaded = parse_study(raw, source="f.yaml", preset="smoke")
    assert (loaded.source, loaded.preset, loaded.presets) == ("f.yaml", "smoke", ("smoke", "full"))
    assert loaded.study.seeds == (1,) and not hasattr(loaded.study, "_source")
