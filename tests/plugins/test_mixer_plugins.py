"""Token mixers as plugins: the mamba1/mamba2 built-ins, the backbone.mixer study key, a third-party mixer."""

import pytest
import torch

from harness.model import build_model
from harness.study import expand_trials, parse_study, resolve_trial
from plugins.errors import ConfigError
from plugins.registry import load_registries
from plugins.specs import DataInfo
from zigma.mixer import Mamba2Mixer, MambaMixer
from zigma.mixer.fused import ssd_available

INFO = DataInfo(name="toy", channels=1, height=8, width=8)
TOY = "tests.plugins.toy_mixer"


def build(backbone: dict, *, plugins=(), scan="zigzag-8"):
    """The model a one-trial study with this backbone block builds (via resolve_trial + build_model)."""
    study = parse_study({"name": "t", "base": {"backbone": backbone, "scan": scan}}, source="s.yaml")
    spec = expand_trials(study)[0]
    entries = resolve_trial(spec, load_registries(plugins), source="s.yaml")
    return build_model(spec.config, entries, INFO, seed=0, device=torch.device("cpu"))


def mixers(model):
    return [blk.mixer for blk in model.blocks]


def test_builtin_mixers_are_registered_by_the_mixers_plugin():
    reg = load_registries().mixers
    assert reg.names() == ["mamba1", "mamba2"]
    assert reg.plugin_of("mamba1") == reg.plugin_of("mamba2") == "mixers"


def test_default_mixer_is_mamba1_with_its_d_state_16_as_before():
    model = build({"name": "zigma", "size": "tiny"})
    assert all(type(m) is MambaMixer and m.d_state == 16 for m in mixers(model))


def test_backbone_mixer_mamba2_builds_mamba2_mixers_with_their_defaults_and_options():
    model = build({"name": "zigma", "size": "tiny", "mixer": {"name": "mamba2", "headdim": 32}})
    assert all(type(m) is Mamba2Mixer and m.d_state == 64 and m.headdim == 32 for m in mixers(model))
    model = build({"name": "vim", "size": "tiny", "mixer": "mamba2", "d_state": 8})
    assert all(type(m) is Mamba2Mixer and m.d_state == 8 and m.num_directions == 2 for m in mixers(model))


def test_unknown_mixer_names_the_key_and_suggests_the_near_match():
    with pytest.raises(ConfigError, match=r"s\.yaml: base\.backbone\.mixer\.name: unknown mixer 'mambo2'\. "
                                          r"Did you mean 'mamba2'.*Available: mamba1, mamba2"):
        build({"name": "zigma", "mixer": "mambo2"})


def test_unknown_mixer_option_names_the_key():
    with pytest.raises(ConfigError, match=r"s\.yaml: base\.backbone\.mixer\.headdm: .*'headdim'"):
        build({"name": "zigma", "mixer": {"name": "mamba2", "headdm": 32}})


def test_mixer_axis_value_is_resolved_with_its_axis_position():
    study = parse_study({"name": "t", "axes": {"backbone.mixer": ["mamba2", "mamba-2"]}}, source="s.yaml")
    specs = expand_trials(study)
    assert specs[0].config.backbone.mixer.name == "mamba2"
    with pytest.raises(ConfigError, match=r"s\.yaml: axes\[0\]\.backbone\.mixer\[1\]: unknown mixer 'mamba-2'"):
        resolve_trial(specs[1], load_registries(), source="s.yaml")


def test_dit_ignores_the_mixer():
    study = parse_study({"name": "t", "base": {"backbone": {"name": "dit", "mixer": "no-such"}}}, source="s.yaml")
    assert resolve_trial(expand_trials(study)[0], load_registries(), source="s.yaml")["mixer"] is None


@pytest.mark.skipif(ssd_available(), reason="mamba-ssm's Triton SSD is importable here")
def test_fused_mamba2_without_mamba_ssm_is_a_validation_error_naming_the_install():
    with pytest.raises(Exception, match=r"mamba2.*zigma-harness\[cuda\]") as exc:
        build({"name": "zigma", "mixer": "mamba2", "mixer_backend": "fused"})
    assert type(exc.value).__name__ == "MissingDependencyError"


def test_third_party_mixer_registers_like_a_scan_and_builds_with_its_options():
    reg = load_registries([TOY])
    assert reg.mixers.plugin_of("causal-mean") == TOY
    model = build({"name": "zigma", "size": "tiny", "mixer": {"name": "causal-mean", "scale": 0.5}},
                  plugins=[TOY], scan="parallel-2")
    assert all(type(m).__name__ == "CausalMean" and m.scale == 0.5 and m.num_directions == 2 for m in mixers(model))
    x = torch.randn(2, 1, 8, 8)
    assert model(x, torch.rand(2)).shape == x.shape


def test_harness_ls_mixers_lists_each_mixer_with_its_plugin(capsys):
    from tests.harness.cli_support import run_cli

    code, out, _ = run_cli(capsys, "ls", "mixers", "--plain")
    assert code == 0 and out.split() == ["mamba1", "mamba2"]
    code, out, _ = run_cli(capsys, "ls", "mixers")
    assert code == 0 and all(any(n in line and "mixers" in line for line in out.splitlines())
                             for n in ("mamba1", "mamba2"))


def test_mamba1_segment_layout_option_reaches_every_mixer_and_defaults_to_auto():
    assert all(m.segment_layout == "auto" for m in mixers(build({"name": "zigma", "size": "tiny"})))
    model = build({"name": "zigma", "size": "tiny", "mixer": {"name": "mamba1", "segment_layout": "packed"}})
    assert all(type(m) is MambaMixer and m.segment_layout == "packed" for m in mixers(model))


def test_unknown_segment_layout_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"s\.yaml: base\.backbone\.mixer\.segment_layout: .*'batch'"):
        build({"name": "zigma", "mixer": {"name": "mamba1", "segment_layout": "pack"}})


def test_mamba2_ssd_option_defaults_to_mamba_ssm_and_reaches_every_mixer():
    assert all(m.ssd == "mamba-ssm" for m in mixers(build({"name": "zigma", "size": "tiny", "mixer": "mamba2"})))


def test_unknown_mamba2_ssd_kernel_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"s\.yaml: base\.backbone\.mixer\.ssd: .*'mamba-ssm' or 'fla'"):
        build({"name": "zigma", "mixer": {"name": "mamba2", "ssd": "flash"}})


def test_mamba2_ssd_fla_without_fla_core_is_a_validation_error_naming_the_install(monkeypatch):
    from zigma.mixer import fused

    monkeypatch.setattr(fused, "_import_gla", lambda: (None, "ModuleNotFoundError: No module named 'fla'"))
    with pytest.raises(Exception, match=r"ssd 'fla'.*fla-core.*zigma-harness\[fla\]") as exc:
        build({"name": "zigma", "size": "tiny", "mixer": {"name": "mamba2", "ssd": "fla"}})
    assert type(exc.value).__name__ == "MissingDependencyError"


def test_mamba2_ssd_fla_reaches_every_mixer_where_fla_imports(monkeypatch):
    from zigma.mixer import fused

    monkeypatch.setattr(fused, "_import_gla", lambda: (object(), ""))  # only imported here, never called on CPU
    model = build({"name": "zigma", "size": "tiny", "mixer": {"name": "mamba2", "ssd": "fla"}})
    assert all(type(m) is Mamba2Mixer and m.ssd == "fla" for m in mixers(model))


def test_a_mixer_axis_value_replaces_the_base_mixer_with_its_options():
    """docs/adding-a-mixer-plugin.md: options of an arm go in the axis value, not in base."""
    study = parse_study({"name": "t", "base": {"backbone": {"name": "zigma", "mixer": {"name": "mamba2",
                                                                                         "headdim": 32}}},
                         "axes": {"backbone.mixer": ["mamba2", {"name": "mamba2", "headdim": 16}]}},
                        source="s.yaml")
    mixers_of = [spec.config.backbone.mixer.model_dump(exclude_none=True) for spec in expand_trials(study)]
    assert [m.get("headdim") for m in mixers_of] == [None, 16]
