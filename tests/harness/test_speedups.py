"""Study-throughput switches (issue 16): each gives the results of today's path on CPU."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.harness.runner_support import interrupted_then_resumed, write_study

torch.set_num_threads(1)
CPU = torch.device("cpu")


def _spec(tmp_path, **base):
    from harness.study import expand_trials, load_study
    path = write_study(tmp_path / "s.yaml", "speed", axes={"backbone.width": [8]}, seeds=(0,), **base)
    return expand_trials(load_study(path))[0]


def _loader_batches(dataset, *, batch_size, seed, epoch, batch, count):
    """The oracle: today's DataLoader over BatchStream, written out as trial.py had it."""
    from harness.training import BatchStream
    sampler = BatchStream(len(dataset), batch_size, seed, epoch=epoch, batch=batch)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=0)
    return list(itertools.islice(iter(loader), count))


def _same_batches(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for k in w:
            if isinstance(w[k], torch.Tensor):
                assert g[k].dtype == w[k].dtype and torch.equal(g[k], w[k]), k
            else:
                assert list(g[k]) == list(w[k]), k


def _uint8_set(n=23, captions=False):
    from plugins._data.common import UInt8Dataset
    g = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (n, 1, 5, 5), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    caps = [f"item {i}" for i in range(n)] if captions else None
    return UInt8Dataset(images, channels=3, labels=labels, captions=caps)


@pytest.mark.parametrize("epoch,batch", [(0, 0), (0, 3), (2, 4)])
def test_resident_batches_equal_the_dataloaders_from_any_resume_position(epoch, batch):
    from harness.data_stream import ResidentData
    data = _uint8_set(captions=True)
    got = list(itertools.islice(ResidentData(data, CPU).batches(5, 3, epoch, batch), 12))  # crosses epochs
    _same_batches(got, _loader_batches(data, batch_size=5, seed=3, epoch=epoch, batch=batch, count=12))


def test_resident_batches_of_a_generic_dataset_equal_the_dataloaders():
    from harness.data_stream import ResidentData
    from tests.harness.toy_plugin import _Blobs
    data = _Blobs(19, 0)
    got = list(itertools.islice(ResidentData(data, CPU).batches(4, 11, 1, 2), 9))
    _same_batches(got, _loader_batches(data, batch_size=4, seed=11, epoch=1, batch=2, count=9))


def test_resident_batches_of_a_set_smaller_than_a_batch_repeat_it_like_the_dataloader():
    from harness.data_stream import ResidentData
    data = _uint8_set(n=3)
    got = list(itertools.islice(ResidentData(data, CPU).batches(8, 0, 0, 0), 3))
    _same_batches(got, _loader_batches(data, batch_size=8, seed=0, epoch=0, batch=0, count=3))


def test_auto_keeps_the_dataloader_on_cpu_and_on_holds_the_set_resident():
    from harness.data_stream import batch_source
    data = _uint8_set()
    assert batch_source("auto", data, batch_size=4, seed=0, num_workers=0, device=CPU)[1] == "loader"
    assert batch_source("on", data, batch_size=4, seed=0, num_workers=0, device=CPU)[1] == "resident"


def test_a_trial_with_resident_data_ends_with_the_same_weights_and_loss(tmp_path, registries):
    from harness.trial import run_trial
    a = run_trial(_spec(tmp_path, train={"steps": 12}), registries, trial_dir=tmp_path / "a", device=CPU,
                  cache_dir=tmp_path / "c")
    b = run_trial(_spec(tmp_path, train={"steps": 12, "data_on_device": "on"}), registries,
                  trial_dir=tmp_path / "b", device=CPU, cache_dir=tmp_path / "c")
    assert a["metrics"]["final_train_loss"] == b["metrics"]["final_train_loss"]
    wa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["ema"]
    wb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["ema"]
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_a_trial_resumed_from_background_checkpoints_equals_an_uninterrupted_synchronous_one(tmp_path,
                                                                                             registries):
    from harness.trial import run_trial
    sync = _spec(tmp_path, train={"steps": 20, "checkpoint_every": 5})
    bg = _spec(tmp_path, train={"steps": 20, "checkpoint_every": 5, "checkpoint_async": True})
    straight = run_trial(sync, registries, trial_dir=tmp_path / "a", device=CPU, cache_dir=tmp_path / "c")
    resumed = interrupted_then_resumed(bg, registries, tmp_path / "b", tmp_path / "c", stop_at=13, device=CPU)
    assert resumed["resumed_from_step"] == 10
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    for part in ("net", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert resumed["metrics"]["final_train_loss"] == straight["metrics"]["final_train_loss"]


def test_a_background_checkpoint_holds_the_state_at_the_time_it_was_taken(tmp_path):
    from harness.checkpoint_async import wait_pending, write_in_background
    weights = torch.arange(4.0)
    write_in_background({"w": weights, "meta": {"step": [1, 2]}}, tmp_path / "ck.pt")
    weights.add_(100.0)                                    # the training thread moves on at once
    wait_pending(tmp_path / "ck.pt")
    blob = torch.load(tmp_path / "ck.pt", weights_only=False)
    assert blob["w"].tolist() == [0.0, 1.0, 2.0, 3.0] and blob["meta"] == {"step": [1, 2]}
    assert not (tmp_path / "ck.tmp").exists()


def test_an_unknown_compile_setting_is_refused():
    from harness.compile import compile_mode
    assert compile_mode(False) is None and compile_mode(True) == "default"
    with pytest.raises(ValueError, match="unknown compile setting"):
        compile_mode("fast")


def _compile_works() -> bool:
    try:
        torch.compile(torch.nn.Linear(2, 2))(torch.ones(1, 2))
        return True
    except Exception:  # noqa: BLE001 - no C compiler or an unsupported platform
        return False


class _Tiny(torch.nn.Module):
    """x (N, 1, 4, 4), t (N,) -> (N, 1, 4, 4): an MLP on the flattened image and the time."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(17, 32), torch.nn.SiLU(), torch.nn.Linear(32, 16))

    def forward(self, x, t):
        return self.net(torch.cat([x.flatten(1), t[:, None]], dim=1)).view_as(x)


@pytest.mark.slow
def test_compiled_and_eager_training_steps_give_the_same_losses():
    from harness.study import TrainConfig
    from harness.training import Stepper
    from zigma.interpolants import LinearPath, Transport
    if not _compile_works():
        pytest.skip("torch.compile does not work on this machine")
    transport = Transport(LinearPath(), prediction="velocity")
    losses = {}
    for setting in (False, "max-autotune-no-cudagraphs"):
        torch.manual_seed(0)
        net = _Tiny()
        ema = _Tiny().requires_grad_(False)
        stepper = Stepper(net, ema, transport, TrainConfig(lr=0.01, precision="fp32", compile=setting), CPU)
        g, data = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
        losses[setting] = [stepper(torch.randn(8, 1, 4, 4, generator=data), {}, s, g).item() for s in range(4)]
    assert losses[False][0] != losses[False][-1], "the steps trained nothing"
    assert losses["max-autotune-no-cudagraphs"] == pytest.approx(losses[False], rel=1e-4, abs=1e-6)


def test_buffered_training_metrics_reach_mlflow_as_the_same_history(tmp_path):
    from mlflow.tracking import MlflowClient

    from harness.metric_buffer import MetricBuffer
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    exp = client.create_experiment("buf")
    runs = {n: client.create_run(exp).info.run_id for n in ("direct", "buffered")}
    logs = [({"train_loss": 1.0 / (s + 1), "lr": 0.1}, s) for s in range(0, 50, 5)]
    for metrics, step in logs:     # the oracle: one log_metric call per value
        for k, v in metrics.items():
            client.log_metric(runs["direct"], k, v, step=step)
    buffer = MetricBuffer(client, runs["buffered"], every=4)
    for metrics, step in logs:
        buffer(metrics, step)
    buffer.flush()
    for key in ("train_loss", "lr"):
        hist = {n: sorted((m.step, m.value) for m in client.get_metric_history(r, key)) for n, r in runs.items()}
        assert hist["buffered"] == hist["direct"] and len(hist["direct"]) == 10


_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@_CUDA
def test_resident_batches_on_the_gpu_equal_the_dataloaders():
    from harness.data_stream import ResidentData
    data = _uint8_set(captions=True)
    got = [{k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in b.items()}
           for b in itertools.islice(ResidentData(data, torch.device("cuda")).batches(5, 3, 1, 2), 10)]
    _same_batches(got, _loader_batches(data, batch_size=5, seed=3, epoch=1, batch=2, count=10))


@pytest.mark.gpu
@_CUDA
def test_label_dropout_takes_labels_already_on_the_gpu():
    from harness.model import Conditioning
    data = type("D", (), {"info": type("I", (), {"num_classes": 10})()})()
    cuda = torch.device("cuda")
    y = torch.arange(8) % 10
    on_host = Conditioning("class", 0.5, data, cuda).train_kwargs({"x": torch.zeros(8, 1), "y": y},
                                                                   torch.Generator().manual_seed(0))
    on_gpu = Conditioning("class", 0.5, data, cuda).train_kwargs({"x": torch.zeros(8, 1), "y": y.to(cuda)},
                                                                  torch.Generator().manual_seed(0))
    assert torch.equal(on_host["y"], on_gpu["y"]) and on_gpu["y"].device.type == "cuda"
