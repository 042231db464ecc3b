"""Built-in interpolant and sampler plugins: names, kinds, option models and what they build."""

import pytest
import torch
from pydantic import ValidationError

from plugins.registry import load_registries
from zigma.interpolants import Dopri5, GVPPath, LinearPath, SDEHeun, Transport, VPPath


def test_interpolant_plugins_build_the_three_paths():
    reg = load_registries().interpolants
    assert {"linear", "gvp", "vp"} <= set(reg.names())
    for name, cls in (("linear", LinearPath), ("gvp", GVPPath), ("vp", VPPath)):
        assert isinstance(reg.get(name).build(), cls)
        assert reg.plugin_of(name) == "interpolants"


def test_sampler_plugins_have_kinds_and_build_with_validated_options():
    reg = load_registries().samplers
    kinds = {name: reg.get(name).kind for name in ("euler", "heun", "dopri5", "euler-maruyama", "sde-heun")}
    assert kinds == {"euler": "ode", "heun": "ode", "dopri5": "ode", "euler-maruyama": "sde", "sde-heun": "sde"}
    dopri = reg.get("dopri5").build(rtol=1e-4)
    assert isinstance(dopri, Dopri5) and (dopri.atol, dopri.rtol) == (1e-6, 1e-4)
    sde = reg.get("sde-heun").build(diffusion_form="increasing-decreasing", steps=10)
    assert isinstance(sde, SDEHeun) and sde.diffusion_form == "increasing-decreasing" and sde.last_step == "mean"


#: SiT / ZigMa sampling defaults, transcribed from the official code (SiT `train_utils.parse_sde_args` /
#: `parse_ode_args`, ZigMa `config/sde/*.yaml`, `config/ode/*.yaml`): SDE 250 grid points (= 249 solver steps),
#: diffusion form "sigma", norm 1.0, last step "Mean" of size 0.04; ODE dopri5 atol 1e-6, rtol 1e-3.
OFFICIAL_DEFAULTS = {
    "euler-maruyama": {"steps": 249, "diffusion_form": "sigma", "diffusion_norm": 1.0, "last_step": "mean",
                       "last_step_size": 0.04},
    "sde-heun": {"steps": 249, "diffusion_form": "sigma", "diffusion_norm": 1.0, "last_step": "mean",
                 "last_step_size": 0.04},
    "dopri5": {"atol": 1e-6, "rtol": 1e-3},
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_DEFAULTS))
def test_sampler_built_without_options_has_the_official_sit_defaults(name):
    entry = load_registries().samplers.get(name)
    built, expect = entry.build(), OFFICIAL_DEFAULTS[name]
    assert {key: getattr(built, key) for key in expect} == expect
    assert entry.options().model_dump() == expect


@pytest.mark.parametrize("name,options", [("euler", {"stepz": 10}), ("heun", {"steps": 0}),
                                          ("dopri5", {"atol": -1.0}), ("euler-maruyama", {"diffusion_form": "SBDM"}),
                                          ("sde-heun", {"cfg_scale": 2.0})])
def test_sampler_options_refuse_unknown_keys_and_bad_values(name, options):
    entry = load_registries().samplers.get(name)
    with pytest.raises(ValidationError):
        entry.options(**options)


def test_a_built_sampler_samples_with_a_built_path():
    reg = load_registries()
    tr = Transport(reg.interpolants.get("linear").build())
    x0 = torch.zeros(3, 2)
    result = reg.samplers.get("heun").build(steps=4).sample(tr, lambda x, t: torch.ones_like(x), x0, seeds=[0, 1, 2])
    torch.testing.assert_close(result.x1, torch.ones(3, 2))
    assert result.nfe == 8
