"""fid: without the Inception weights it fails in one line, before clean-fid or any socket is touched;
with a local TorchScript file it runs clean-fid's pipeline offline."""

import socket
import sys

import pytest
import torch
from pydantic import ValidationError

from plugins._metrics import inception
from plugins.errors import MissingDependencyError
from plugins.registry import load_registries
from plugins.specs import DataBundle, DataInfo, MetricContext

torch.set_num_threads(1)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, no clean-fid, no weights in the default places, no env var."""
    def no_socket(*args, **kwargs):
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket, "socket", no_socket)
    monkeypatch.setattr(socket, "create_connection", no_socket)
    for mod in [m for m in sys.modules if m == "cleanfid" or m.startswith("cleanfid.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "cleanfid", None)          # importing clean-fid would now raise
    monkeypatch.delenv(inception.ENV_VAR, raising=False)
    monkeypatch.setattr(inception, "DEFAULT_DEST", tmp_path / "cache" / inception.WEIGHTS_NAME)
    monkeypatch.setattr(inception, "_CLEANFID_DEFAULT", tmp_path / "tmp" / inception.WEIGHTS_NAME)
    return tmp_path


def test_fid_without_weights_fails_in_one_line_naming_the_file_and_both_ways(offline):
    entry = load_registries().metrics.get("fid")
    with pytest.raises(MissingDependencyError) as err:
        entry.build(weights_path=None)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(offline / "cache" / inception.WEIGHTS_NAME) in msg
    assert "eval.metric_options.fid.weights_path" in msg and inception.ENV_VAR in msg


def test_fid_options_fail_validation_when_the_given_file_is_missing(offline, monkeypatch):
    entry = load_registries().metrics.get("fid")
    missing = offline / "elsewhere.pt"
    with pytest.raises(ValidationError, match=str(missing)):
        entry.options(weights_path=str(missing))
    monkeypatch.setenv(inception.ENV_VAR, str(missing))
    with pytest.raises(ValidationError, match=str(missing)):
        entry.options()


class _FakeInception(torch.nn.Module):
    """Same interface as clean-fid's TorchScript Inception: `.layers` maps (B, 3, 299, 299) -> (B, 2048, 1, 1)."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
                                          torch.nn.Linear(48, 2048), torch.nn.Unflatten(1, (2048, 1, 1)))

    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        return self.layers(x)


def test_fid_runs_offline_from_a_local_weights_file_via_the_env_var(monkeypatch, tmp_path):
    def no_socket(*args, **kwargs):
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket, "socket", no_socket)
    weights = tmp_path / "my-inception.pt"                     # any name: it is linked as clean-fid expects
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.jit.save(torch.jit.script(_FakeInception()), str(weights))
    monkeypatch.setenv(inception.ENV_VAR, str(weights))
    entry = load_registries().metrics.get("fid")
    metric = entry.build(**entry.options().model_dump())
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (12, 3, 16, 16), generator=g, dtype=torch.uint8)
    info = DataInfo(name="toy", channels=3, height=16, width=16, fingerprint="toy")
    ctx = MetricContext(data=DataBundle(info=info, train=None, reference=lambda n, seed=0: real[:n]),
                        device=torch.device("cpu"), cache_dir=str(tmp_path / "c"), progress=False)
    same, other = metric.compute(real, ctx), metric.compute(255 - real, ctx)
    assert abs(same["fid"]) < 1e-6 < other["fid"]
    assert same["meta.extractor"].startswith("clean-fid-inception") and same["meta.label"] == "FID (clean-fid)"
