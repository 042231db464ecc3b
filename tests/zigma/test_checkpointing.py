"""Activation checkpointing (`checkpointing=True`): the same outputs and gradients as without, on every backbone
and permutation form, the same stochastic-depth draws, and no checkpointing outside a training graph."""

from __future__ import annotations

import pytest
import torch

from zigma.backbones import build_dit, build_vim, build_zigma, shell
from zigma.scans import LayerCycle, zigzag_paths

torch.set_num_threads(1)

SHAPE = (3, 8, 8)
CASES = {  # name -> (builder, options): 16 tokens, tiny size
    "zigma": (build_zigma, {}),
    "zigma-around": (build_zigma, {"permute_mode": "around"}),
    "zigma-text-mlp": (build_zigma, {"context_dim": 6, "num_classes": None, "mlp_ratio": 2.0}),
    "vim": (build_vim, {}),
    "dit": (build_dit, {}),
    "dit-text": (build_dit, {"context_dim": 6, "num_classes": None}),
}


def _pair(name: str, **extra) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same weights built twice, without and with checkpointing; every parameter perturbed so the zero-init
    gates and head do not hide a difference."""
    build, options = CASES[name]
    kw = {"size": "tiny", "input_shape": SHAPE, "patch_size": 2, "scan": LayerCycle(zigzag_paths, 8, name="z8"),
          "num_classes": 5, "mixer_backend": "reference", **options, **extra}
    models = [build(checkpointing=ckpt, generator=torch.Generator().manual_seed(0), **kw) for ckpt in (False, True)]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in models[0].parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    models[1].load_state_dict(models[0].state_dict())
    return models[0], models[1]


def _inputs(model) -> tuple[tuple, dict]:
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(4, *SHAPE, generator=g), torch.rand(4, generator=g)
    if model.context_dim:
        mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]], dtype=torch.bool)
        return (x, t), {"context": torch.randn(4, 3, model.context_dim, generator=g), "context_mask": mask}
    return (x, t), {"y": torch.tensor([0, 1, 4, 5])}


def _output_and_grads(model, args, kwargs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.train()
    out = model(*args, **kwargs)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out * w).sum().backward()
    return out.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.fixture
def spy(monkeypatch) -> list:
    """Records every call of torch.utils.checkpoint.checkpoint made by the backbones."""
    calls = []

    def counting(*args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return real(*args, **kwargs)

    real = shell.checkpoint
    monkeypatch.setattr(shell, "checkpoint", counting)
    return calls


@pytest.mark.parametrize("name", list(CASES))
def test_checkpointing_gives_the_same_outputs_and_parameter_gradients(name, spy):
    plain, ckpt = _pair(name)
    args, kwargs = _inputs(plain)
    out, grads = _output_and_grads(plain, args, kwargs)
    assert spy == [], "checkpointing is off by default"
    out_c, grads_c = _output_and_grads(ckpt, args, kwargs)
    assert spy == [False] * len(ckpt.blocks), "every block runs under non-reentrant checkpoint"
    torch.testing.assert_close(out_c, out, rtol=1e-6, atol=1e-7)
    assert grads.keys() == grads_c.keys()
    for n, g in grads.items():
        assert g is not None, f"{n} got no gradient"
        torch.testing.assert_close(grads_c[n], g, rtol=1e-5, atol=1e-7, msg=f"gradient of {n}")
    assert out.abs().mean() > 1e-3 and grads["blocks.0.adaLN_modulation.1.weight"].abs().sum() > 0, "not trivial"


def test_a_recomputation_replays_the_stochastic_depth_draws_and_leaves_the_generator_where_training_left_it():
    plain, ckpt = _pair("zigma", drop_path=0.5)
    args, kwargs = _inputs(plain)
    results, states = [], []
    for model in (plain, ckpt):
        gen = torch.Generator().manual_seed(7)
        model.set_generator(gen)
        results.append(_output_and_grads(model, args, kwargs))
        states.append(gen.get_state())
    (out, grads), (out_c, grads_c) = results
    torch.testing.assert_close(out_c, out, rtol=1e-6, atol=1e-7)
    for n, g in grads.items():
        torch.testing.assert_close(grads_c[n], g, rtol=1e-5, atol=1e-7, msg=f"gradient of {n}")
    assert torch.equal(states[0], states[1]), "the recomputation drew nothing extra from the generator"


@pytest.mark.parametrize("name", ["zigma", "dit"])
def test_checkpointing_is_inactive_under_no_grad_inference_mode_and_eval(name, spy):
    plain, ckpt = _pair(name)
    args, kwargs = _inputs(plain)
    ckpt.train()
    with torch.no_grad():
        out = ckpt(*args, **kwargs)
    with torch.inference_mode():
        ckpt(*args, **kwargs)
    ckpt.eval()
    out_eval = ckpt(*args, **kwargs)
    assert spy == [], "no checkpoint without a training graph"
    assert out_eval.requires_grad, "eval mode with grad enabled still builds an ordinary graph"
    plain.eval()
    torch.testing.assert_close(out_eval, plain(*args, **kwargs), rtol=0, atol=0)
    torch.testing.assert_close(out, out_eval, rtol=0, atol=0)
