"""Built-in plugin: the samplers of zigma.interpolants (ODE euler, heun, dopri5; SDE euler-maruyama, sde-heun).

Each entry's `options` model validates the study file's `sampler.options`; its defaults are read from the zigma
class's signature, so they are written once. Classifier-free guidance (`sampler.cfg_scale` in the study) is not a
sampler option: the trial wraps its model with `zigma.interpolants.cfg_model_fn` before sampling.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from zigma.interpolants import DIFFUSION_FORMS, LAST_STEPS, Dopri5, Euler, EulerMaruyama, Heun, SDEHeun

from .hookspecs import hookimpl
from .specs import SamplerEntry


def _default(cls: type, name: str) -> Any:
    return inspect.signature(cls).parameters[name].default


class FixedStepOptions(BaseModel):
    """Options of the fixed-step ODE samplers."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    steps: int = Field(_default(Euler, "steps"), ge=1)                       # solver steps (NFE = steps, 2x for heun)


class Dopri5Options(BaseModel):
    """Options of the adaptive ODE sampler."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    atol: float = Field(_default(Dopri5, "atol"), gt=0)                      # absolute tolerance (official 1e-6)
    rtol: float = Field(_default(Dopri5, "rtol"), gt=0)                      # relative tolerance (official 1e-3)


class SDEOptions(BaseModel):
    """Options of the SDE samplers (SiT's defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    steps: int = Field(_default(EulerMaruyama, "steps"), ge=1)               # stochastic steps; +1 last step = 250 NFE
    diffusion_form: Literal[DIFFUSION_FORMS] = _default(EulerMaruyama, "diffusion_form")  # w_t; 'sigma' official
    diffusion_norm: float = Field(_default(EulerMaruyama, "diffusion_norm"), ge=0)          # scale of w_t
    last_step: Literal[LAST_STEPS] = _default(EulerMaruyama, "last_step")                 # 'mean': noiseless drift step
    last_step_size: float = Field(_default(EulerMaruyama, "last_step_size"), ge=0, lt=1)  # t1 = 1 - last_step_size


def _builder(cls: type, options: type[BaseModel]):
    def build(**kwargs: Any):
        return cls(**options(**kwargs).model_dump())
    build.__doc__ = f"build(**{options.__name__}) -> zigma.interpolants.{cls.__name__}"
    return build


_SAMPLERS = (
    ("euler", "ode", Euler, FixedStepOptions),
    ("heun", "ode", Heun, FixedStepOptions),
    ("dopri5", "ode", Dopri5, Dopri5Options),
    ("euler-maruyama", "sde", EulerMaruyama, SDEOptions),
    ("sde-heun", "sde", SDEHeun, SDEOptions),
)


@hookimpl
def register_samplers(register):
    """Registers one SamplerEntry per zigma sampler, with its options model."""
    for name, kind, cls, options in _SAMPLERS:
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        register(SamplerEntry(name=name, description=doc, build=_builder(cls, options), options=options, kind=kind))
