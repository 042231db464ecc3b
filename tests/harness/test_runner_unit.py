"""The runner's parts: data order, EMA, clipping, resume, sampling seeds, the trial queue, MLflow runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tests.harness.runner_support import GRID, PLUGIN, interrupted_then_resumed, write_study

torch.set_num_threads(1)
CPU = torch.device("cpu")


def _spec(tmp_path, **base):
    from harness.study import expand_trials, load_study
    path = write_study(tmp_path / "s.yaml", "unit", axes={"backbone.width": [8]}, seeds=(0,), **base)
    study = load_study(path)
    return expand_trials(study)[0]


# -- training ----------------------------------------------------------------------------------------------
def test_batch_stream_resumed_at_a_position_continues_the_same_sequence():
    from harness.training import BatchStream
    straight = BatchStream(10, 3, seed=4)
    it = iter(straight)
    first = [next(it) for _ in range(7)]
    epoch, batch = 0, 0
    for _ in range(4):
        epoch, batch = BatchStream.advance(epoch, batch, straight.per_epoch)
    resumed = iter(BatchStream(10, 3, seed=4, epoch=epoch, batch=batch))
    assert [next(resumed) for _ in range(3)] == first[4:]
    epoch0 = [i for b in first[:3] for i in b]
    assert len(epoch0) == len(set(epoch0)), "an epoch visits each item at most once"


def test_ema_decay_warms_up_as_the_minimum_of_decay_and_1_plus_n_over_10_plus_n():
    from harness.training import ema_decay
    assert ema_decay(0.9999, 0, True) == pytest.approx(0.1)
    assert ema_decay(0.9999, 90, True) == pytest.approx(91 / 100)
    assert ema_decay(0.9, 1000, True) == 0.9
    assert ema_decay(0.9999, 0, False) == 0.9999


def test_ema_update_moves_each_parameter_by_one_minus_decay():
    from harness.training import update_ema
    model, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = ema.weight.detach().clone()
    update_ema(ema, model, 0.75)
    assert torch.allclose(ema.weight, 0.75 * before + 0.25 * model.weight.detach())


def test_the_optimizer_step_sees_gradients_already_clipped():
    from harness.study import TrainConfig
    from harness.training import Stepper

    class Loud:  # a transport whose loss has a huge gradient
        def loss(self, model_fn, x1, *, generator):
            return 1e4 * model_fn(x1, torch.zeros(len(x1))).pow(2).flatten(1).sum(1)

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 4))
    net_fn = lambda x, t: net(x)
    model = type("M", (torch.nn.Module,), {"forward": lambda self, x, t: net_fn(x, t)})()
    model.add_module("net", net)
    stepper = Stepper(model, type(model)(), Loud(), TrainConfig(grad_clip=0.5, precision="fp32"),
                      torch.device("cpu"))
    seen = []
    step = stepper.opt.step
    grad_norm = lambda: torch.cat([p.grad.flatten() for p in stepper.params]).norm()
    stepper.opt.step = lambda *a, **k: (seen.append(grad_norm()), step(*a, **k))
    stepper(torch.ones(2, 4), {}, 0, torch.Generator())
    assert seen[0] == pytest.approx(0.5, rel=1e-4)


def test_a_resumed_trial_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path, registries):
    from harness.trial import run_trial
    spec = _spec(tmp_path, train={"steps": 20, "checkpoint_every": 10})
    cpu = torch.device("cpu")
    straight = run_trial(spec, registries, trial_dir=tmp_path / "a", device=cpu, cache_dir=tmp_path / "c")
    resumed = interrupted_then_resumed(spec, registries, tmp_path / "b", tmp_path / "c", stop_at=15)
    assert resumed["resumed_from_step"] == 10 and straight["resumed_from_step"] == 0
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for k in a["ema"]:
        torch.testing.assert_close(a["ema"][k], b["ema"][k], rtol=0, atol=0)
    assert resumed["metrics"]["toy-gap"] == straight["metrics"]["toy-gap"]
    assert resumed["metrics"]["final_train_loss"] == straight["metrics"]["final_train_loss"]


def test_train_images_per_s_agrees_with_an_independent_clock_around_each_step(tmp_path, registries, monkeypatch):
    """images / seconds inside the timed steps, warm-up min(5, max(steps // 10, 1)) steps left out."""
    import time

    from harness import training
    from harness.trial import run_trial

    calls: list[float] = []
    step_fn = training.Stepper.__call__

    def clocked(self, *args):
        t0 = time.perf_counter()
        time.sleep(0.003)                    # a step long enough that the clock's own overhead is negligible
        out = step_fn(self, *args)
        calls.append(time.perf_counter() - t0)
        return out

    monkeypatch.setattr(training.Stepper, "__call__", clocked)
    spec = _spec(tmp_path, train={"steps": 30, "checkpoint_every": 30, "batch_size": 8})
    m = run_trial(spec, registries, trial_dir=tmp_path / "t", device=CPU, cache_dir=tmp_path / "c")["metrics"]
    warm = min(5, max(30 // 10, 1))
    independent = 8 * (30 - warm) / sum(calls[warm:])
    assert len(calls) == 30 and m["timed_steps"] == 30 - warm
    assert m["train_images_per_s"] == pytest.approx(independent, rel=0.05)


def test_a_resumed_trials_cost_comes_from_the_segment_that_finished_it(tmp_path, registries):
    spec = _spec(tmp_path, train={"steps": 20, "checkpoint_every": 10})
    res = interrupted_then_resumed(spec, registries, tmp_path / "b", tmp_path / "c", stop_at=15, device=CPU)
    warm = min(5, max(20 // 10, 1))
    assert res["metrics"]["timed_steps"] == 20 - 10 - warm      # steps 11..20 less the segment's warm-up
    assert json.loads((tmp_path / "b" / "cost.json").read_text())["how"]["resumed_from_step"] == 10


def test_a_checkpoint_of_another_configuration_is_not_resumed(tmp_path, registries):
    from harness.trial import run_trial
    spec = _spec(tmp_path, train={"steps": 10, "checkpoint_every": 5})
    run_trial(spec, registries, trial_dir=tmp_path / "t", device=CPU, cache_dir=tmp_path / "c")
    other = _spec(tmp_path, train={"steps": 10, "checkpoint_every": 5, "lr": 0.01})
    again = run_trial(other, registries, trial_dir=tmp_path / "t", device=torch.device("cpu"),
                      cache_dir=tmp_path / "c")
    assert again["resumed_from_step"] == 0


def test_label_dropout_replaces_labels_by_the_null_class_at_its_rate():
    from harness.model import Conditioning
    data = type("D", (), {"info": type("I", (), {"num_classes": 10})()})()
    batch = {"x": torch.zeros(4000, 1), "y": torch.zeros(4000, dtype=torch.long)}
    y = Conditioning("class", 0.25, data, CPU).train_kwargs(batch, torch.Generator().manual_seed(0))
    assert set(y["y"].tolist()) == {0, 10}
    assert (y["y"] == 10).float().mean().item() == pytest.approx(0.25, abs=0.03)


def test_guided_samples_do_not_depend_on_the_eval_batch_size(tmp_path, registries):
    from harness.model import Conditioning, Net
    from harness.sampling import sample_images
    from tests.harness.toy_plugin import DataOptions, ToyMLP, _load
    from zigma.interpolants import Euler, LinearPath, Transport

    data = _load(DataOptions())
    torch.manual_seed(0)
    net = Net(ToyMLP(width=8, num_classes=2, fail="none", fail_step=0, sleep=0.0)).eval()
    cond = Conditioning("class", 0.1, data, torch.device("cpu"))
    kw = dict(n=6, shape=(1, 4, 4), seed=3, cfg_scale=2.0, device=torch.device("cpu"), amp=None)
    one = sample_images(net, Transport(LinearPath()), Euler(steps=3), cond, batch_size=1, **kw)
    six = sample_images(net, Transport(LinearPath()), Euler(steps=3), cond, batch_size=6, **kw)
    assert torch.equal(one.fake, six.fake) and one.labels.tolist() == [0, 1, 0, 1, 0, 1]


# -- the queue ---------------------------------------------------------------------------------------------
def _queue_study(tmp_path):
    from harness.queue import open_storage
    storage = open_storage(None, tmp_path)
    return optuna.create_study(study_name="q", storage=storage), storage


def _specs(tmp_path):
    from harness.study import expand_trials, load_study
    return expand_trials(load_study(write_study(tmp_path / "q.yaml", "q", axes=GRID)))


def test_enqueueing_twice_adds_each_combination_once(tmp_path):
    from harness import queue
    study, _ = _queue_study(tmp_path)
    specs = _specs(tmp_path)
    assert queue.enqueue(study, specs) == 12
    assert queue.enqueue(study, specs) == 0
    assert len(study.get_trials()) == 12


def test_grid_trials_carry_their_combination_as_categorical_optuna_params(tmp_path):
    import itertools

    from optuna.distributions import CategoricalDistribution

    from harness import queue
    study, storage = _queue_study(tmp_path)
    queue.enqueue(study, _specs(tmp_path))
    trials = optuna.load_study(study_name="q", storage=storage).trials
    combos = [dict(zip(GRID, v)) for v in itertools.product(*GRID.values())]  # the grid, written out
    assert sorted(map(str, (t.params for t in trials))) == sorted(map(str, combos * 2))   # 2 seeds
    for t in trials:
        assert t.params == t.user_attrs["params"]
        assert t.distributions == {k: CategoricalDistribution(v) for k, v in GRID.items()}


def test_a_requeued_grid_trial_keeps_its_params(tmp_path):
    from harness import queue
    study, _ = _queue_study(tmp_path)
    queue.enqueue(study, _specs(tmp_path)[:1])
    t = queue.claim(study)
    queue.fail_and_requeue(study, t, "test")
    copy = study.get_trials()[1]
    assert copy.state == TrialState.WAITING and copy.params == t.params and copy.params


def test_a_grid_gaining_an_axis_value_later_still_enqueues_and_claims(tmp_path):
    from harness import queue
    from harness.study import expand_trials, load_study
    study, _ = _queue_study(tmp_path)
    queue.enqueue(study, _specs(tmp_path))
    wider = {**GRID, "train.lr": [0.001, 0.003, 0.01]}
    more = expand_trials(load_study(write_study(tmp_path / "q2.yaml", "q", axes=wider)))
    assert queue.enqueue(study, more) == 6
    claimed = [queue.claim(study) for _ in range(18)]
    assert all(c is not None for c in claimed) and queue.claim(study) is None
    assert {c.params["train.lr"] for c in claimed} == {0.001, 0.003, 0.01}


@pytest.mark.parametrize("reason", ["interrupted", "worker host:123 died", "worker died while claiming the trial",
                                    "worker stopped sending heartbeats"])
def test_a_trial_interrupted_mid_run_is_claimed_again_before_trials_that_never_started(tmp_path, reason):
    """Every way a trial can be stopped while it ran (the reasons the queue itself writes) puts its copy first."""
    from harness import queue
    study, _ = _queue_study(tmp_path)
    queue.enqueue(study, _specs(tmp_path)[:3])                  # trials 0, 1, 2
    first = queue.claim(study)
    queue.fail_and_requeue(study, first, reason)                # its copy is trial 3
    assert [queue.claim(study).number for _ in range(3)] == [3, 1, 2]


def test_a_running_trial_that_never_got_a_worker_stamp_is_requeued_only_once_it_is_old(tmp_path):
    """A worker that died between taking a trial and stamping it leaves a RUNNING trial with no stamp: requeued
    after `unclaimed_after` seconds, left alone before (another worker may be stamping it right now)."""
    from harness import queue
    study, _ = _queue_study(tmp_path)
    queue.enqueue(study, _specs(tmp_path)[:1])
    waiting = study.get_trials(deepcopy=False)[0]
    study._storage.set_trial_state_values(waiting._trial_id, state=optuna.trial.TrialState.RUNNING)  # no stamp
    assert queue.recover_stale(study, unclaimed_after=3600.0) == []                     # fresh: left alone
    assert queue.recover_stale(study, unclaimed_after=0.0) == [waiting.number]          # old: requeued
    assert study.get_trials(deepcopy=False)[0].user_attrs["failure"] == "worker died while claiming the trial"


def test_a_trial_retried_after_failing_waits_its_turn(tmp_path):
    from harness import queue
    study, _ = _queue_study(tmp_path)
    queue.enqueue(study, _specs(tmp_path)[:3])
    first = queue.claim(study)
    queue.fail_and_requeue(study, first, "--retry-failed after: boom")
    assert [queue.claim(study).number for _ in range(3)] == [1, 2, 3]


def test_two_storage_handles_never_claim_the_same_trial(tmp_path):
    from harness import queue
    study, _ = _queue_study(tmp_path)
    queue.enqueue(study, _specs(tmp_path)[:5])
    other = optuna.load_study(study_name="q", storage=queue.open_storage(None, tmp_path))
    claimed = []
    for s in (study, other, other, study, other, study):
        t = queue.claim(s)
        if t is not None:
            claimed.append(t.number)
    assert sorted(claimed) == [0, 1, 2, 3, 4]


def test_a_dead_workers_trial_is_requeued_with_its_identity_and_mlflow_run(tmp_path):
    from harness import queue
    study, storage = _queue_study(tmp_path)
    queue.enqueue(study, _specs(tmp_path)[:1])
    t = queue.claim(study)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stamp = {**queue.worker_stamp(), "pid": int(dead.stdout), "started": 0.0}
    storage.set_trial_user_attr(t._trial_id, "worker", stamp)
    storage.set_trial_user_attr(t._trial_id, "mlflow_run_id", "run123")
    assert queue.recover_stale(study) == [t.number]
    trials = study.get_trials()
    assert [x.state for x in trials] == [TrialState.FAIL, TrialState.WAITING]
    copy = trials[1]
    assert copy.user_attrs["trial_key"] == t.user_attrs["trial_key"]
    assert copy.user_attrs["mlflow_run_id"] == "run123"
    reason = f"worker {stamp['host']}:{stamp['pid']} died"
    assert copy.user_attrs["attempts"] == [{"number": 0, "reason": reason}]
    assert queue.latest_by_key(trials)[t.user_attrs["trial_key"]].number == 1


def test_a_live_workers_trial_is_left_running(tmp_path):
    from harness import queue
    study, _ = _queue_study(tmp_path)
    queue.enqueue(study, _specs(tmp_path)[:1])
    queue.claim(study)
    assert queue.recover_stale(study) == []
    assert study.get_trials()[0].state == TrialState.RUNNING


def test_ending_orphans_kills_running_child_runs_but_spares_live_ones(tmp_path):
    from harness.tracking import Tracker, default_tracking_uri
    tracker = Tracker(default_tracking_uri(tmp_path), "orphans", artifact_root=tmp_path / "art")
    parent = tracker.start_study(study="orphans", preset=None)
    a = tracker.start_trial(parent_id=parent, key="a", label="a", params={"x": "1"})
    b = tracker.start_trial(parent_id=parent, key="b", label="b", params={"x": "2"})
    assert tracker.end_orphans(parent, {b}, "interrupted (runner stopped)") == 1
    run_a = tracker.client.get_run(a)
    assert run_a.info.status == "KILLED"
    assert run_a.data.tags["harness.failure"] == "interrupted (runner stopped)"
    assert tracker.client.get_run(b).info.status == "RUNNING"
    assert tracker.start_trial(parent_id=parent, key="a", label="a", params={}, run_id=a) == a
    assert tracker.client.get_run(a).info.status == "RUNNING"


# -- the command -------------------------------------------------------------------------------------------
def test_dry_run_prints_every_trial_and_writes_nothing(tmp_path, registries, capsys):
    from harness.cli import main
    from harness.study import expand_trials, load_study
    study = write_study(tmp_path / "d.yaml", "dry")
    main(["run", str(study), "--dry-run", "--runs", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert "dry: 12 trial(s)" in out and all(out.count(s.key) == 1 for s in expand_trials(load_study(study)))
    assert not (tmp_path / "runs").exists()


def test_dry_run_says_a_setting_every_trial_shares_once_under_the_table(tmp_path, registries, capsys):
    from harness.cli import main
    study = write_study(tmp_path / "d.yaml", "dry")
    main(["run", str(study), "--dry-run"])
    out = capsys.readouterr().out
    assert out.count("toy-blobs") == 1 and "every trial: training 20 steps, dataset toy-blobs, backbone " in out


def test_dry_run_too_wide_for_the_terminal_gives_one_line_per_trial_with_whole_axis_keys(tmp_path, capsys,
                                                                                            monkeypatch):
    from harness.cli import main
    monkeypatch.setenv("COLUMNS", "80")
    study = Path(__file__).resolve().parents[2] / "studies" / "backbone_comparison.yaml"
    main(["run", str(study), "--preset", "smoke", "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "backbone_comparison-smoke: 7 trial(s) (preset smoke)"
    assert sum("backbone.pos_embed=sincos" in line for line in lines) == 3 and not any("…" in x for x in lines)


def test_dry_run_shows_each_trials_budget_as_written_with_its_step_ceiling(tmp_path, capsys, monkeypatch):
    from harness.cli import main
    monkeypatch.setenv("COLUMNS", "250")     # rich would fold the table at 80 columns
    study = Path(__file__).resolve().parents[2] / "studies" / "backbone_comparison.yaml"
    main(["run", str(study), "--preset", "smoke", "--dry-run", "--runs", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert out.count("1 gpu_seconds (<= 200 steps)") == 2 and out.count("2e+10 flops (<= 200 steps)") == 2
    assert out.count("40 steps") == 3 and "{'kind'" not in out


def test_gpus_on_a_machine_without_cuda_is_one_clear_error(monkeypatch):
    from harness.launch import parse_gpus
    from plugins.errors import HarnessError
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(HarnessError, match="no CUDA device is visible"):
        parse_gpus("0,1")


def test_trials_per_gpu_starts_that_many_workers_on_each_named_gpu():
    from harness.launch import worker_plan
    names, envs = worker_plan(gpu_ids=["4", "6"], workers=0, per_device=2)
    assert names == ["gpu4.0", "gpu4.1", "gpu6.0", "gpu6.1"]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["4", "4", "6", "6"]
    assert [e["ZIGMA_HARNESS_TRIALS_PER_DEVICE"] for e in envs] == ["2"] * 4     # recorded by their trials
    assert worker_plan(gpu_ids=["4"], workers=0, per_device=1) == (
        ["gpu4"], [{"CUDA_VISIBLE_DEVICES": "4", "ZIGMA_HARNESS_TRIALS_PER_DEVICE": "1"}])
    assert worker_plan(gpu_ids=[], workers=0, per_device=1) == ([], [])


def test_a_gpu_id_past_the_visible_devices_is_refused_naming_it(monkeypatch):
    from harness.launch import parse_gpus
    from plugins.errors import HarnessError
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert parse_gpus("0-1") == ["0", "1"]
    with pytest.raises(HarnessError, match=r"device '2' does not exist \(2 visible: 0\.\.1\)"):
        parse_gpus("1,2")


def test_gpus_are_mapped_through_the_visible_devices(monkeypatch):
    from harness.launch import parse_gpus
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert parse_gpus("1,0") == ["6", "4"]
    assert parse_gpus("all") == ["4", "6"]


def test_provenance_names_git_sha_versions_device_precision_and_seeds(tmp_path, registries):
    from harness.trial import run_trial
    spec = _spec(tmp_path, train={"steps": 2, "checkpoint_every": 2})
    run_trial(spec, registries, trial_dir=tmp_path / "p", device=CPU, cache_dir=tmp_path / "c")
    prov = json.loads((tmp_path / "p" / "provenance.json").read_text())
    assert len(prov["git_sha"]) == 40 and prov["versions"]["torch"] == torch.__version__.split("+")[0]
    assert prov["device"].startswith("cpu") and prov["precision"] == "fp32"
    assert prov["seeds"]["trial"] == 0 and prov["plugins"]["backbone"] == PLUGIN
    assert os.path.exists(tmp_path / "p" / "config.json")
    assert json.loads((tmp_path / "p" / "config.json").read_text())["config"]["backbone"]["width"] == 8


def test_results_hold_the_cost_figures(tmp_path, registries):
    from harness.trial import run_trial
    spec = _spec(tmp_path, train={"steps": 4, "checkpoint_every": 4},
                 eval={"cost": True, "cost_iters": 1, "num_samples": 12, "batch_size": 4})
    res = run_trial(spec, registries, trial_dir=tmp_path / "r", device=CPU, cache_dir=tmp_path / "c")
    m = res["metrics"]
    width = 8
    assert m["params_m"] * 1e6 == (16 + 1 + width) * width + width + width * 16 + 16 + 3 * width
    # forward multiply-adds per image of the toy MLP, by hand (tests/harness/test_budget.py): Linear(16 + 1 + w -> w)
    # and Linear(w -> 16); the timings are only checked to exist (speed is measured in benchmarks, not asserted)
    assert m["gflops"] * 1e9 == pytest.approx((16 + 1 + width) * width + width * 16)
    assert m["train_images_per_s"] > 0 and m["sample_ms_per_image"] > 0
    assert m["nfe"] == 4.0 and m["peak_memory_gb"] > 0
    assert json.loads((tmp_path / "r" / "results.json").read_text())["toy-gap"] == m["toy-gap"]
    assert Path(tmp_path / "r" / "samples.png").exists()
    cost = json.loads((tmp_path / "r" / "cost.json").read_text())
    assert m["sample_batches"] == 5 and "2 from the final sampling pass" in cost["how"]["sample_timing"]
    assert m["sample_ms_per_image_std"] >= 0 and m["model_step_images_per_s"] > 0
    assert set(json.loads((tmp_path / "r" / "metrics_meta.json").read_text())) == {"toy-gap"}


def test_the_cost_figures_convert_the_timed_seconds_to_ms_per_image_and_images_per_second(tmp_path, registries,
                                                                                         monkeypatch):
    """Every timed region made to last 0.4 s by the clock: sampling batches of 4 images -> 100 ms per image (std 0);
    the model-only step of a batch of 8 at 400 ms -> 20 images per second."""
    import contextlib

    import harness.costs
    import plugins.measure
    from harness.trial import run_trial

    class Clock:
        def __init__(self, device):
            self._pending = []

        @contextlib.contextmanager
        def region(self):
            yield
            self._pending.append(0.4)

        def peek(self):
            return sum(self._pending)

        def take(self):
            out, self._pending = self._pending, []
            return out

    monkeypatch.setattr(plugins.measure, "Timer", Clock)
    monkeypatch.setattr(harness.costs, "Timer", Clock)
    spec = _spec(tmp_path, train={"steps": 4, "batch_size": 8, "checkpoint_every": 4},
                 eval={"cost": True, "cost_iters": 2, "num_samples": 12, "batch_size": 4})
    m = run_trial(spec, registries, trial_dir=tmp_path / "r", device=CPU, cache_dir=tmp_path / "c")["metrics"]
    assert m["sample_ms_per_image"] == pytest.approx(100.0) and m["sample_ms_per_image_std"] == 0.0
    assert m["model_step_images_per_s"] == pytest.approx(20.0)


def test_git_sha_from_environment_outside_a_checkout(tmp_path, monkeypatch):
    """A copy without .git, or with a stale one (the GPU machine's), takes its commit from ZIGMA_HARNESS_GIT_SHA."""
    from harness.provenance import git_info

    monkeypatch.setenv("ZIGMA_HARNESS_GIT_SHA", "abc123")
    monkeypatch.setenv("ZIGMA_HARNESS_GIT_DIRTY", "0")
    assert git_info(tmp_path) == {"sha": "abc123", "dirty": False}
    monkeypatch.setenv("ZIGMA_HARNESS_GIT_DIRTY", "maybe")
    assert git_info(tmp_path)["dirty"] is None
    assert git_info()["sha"] == "abc123"  # named explicitly: wins over a (possibly stale) .git
    monkeypatch.delenv("ZIGMA_HARNESS_GIT_SHA")
    assert git_info()["sha"] != "abc123"


def test_a_failing_heartbeat_is_said_once_on_stderr_and_the_trial_block_still_runs(capsys):
    import time
    from types import SimpleNamespace

    from harness.queue import heartbeat

    calls = []

    class FlakyStorage:
        def get_heartbeat_interval(self):
            return 0.01

        def record_heartbeat(self, trial_id):
            calls.append(trial_id)
            raise ConnectionError("server closed the connection")

    ran = False
    with heartbeat(SimpleNamespace(_storage=FlakyStorage()), 7):
        deadline = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < deadline:   # several failed beats, one warning
            time.sleep(0.005)
        ran = len(calls) >= 3
    err = capsys.readouterr().err
    assert ran and err.count("warning: trial 7: heartbeat") == 1
    assert "ConnectionError: server closed the connection" in err


def test_a_worker_given_a_storage_path_with_no_journal_says_so_and_creates_nothing(tmp_path, capsys):
    from harness.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(["worker", "--study", "s", "--storage", str(tmp_path / "nowhere")])
    assert exit_.value.code == 2
    assert f"--storage: no Optuna journal at {tmp_path / 'nowhere'}" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_a_worker_given_a_mistyped_study_name_suggests_the_study_in_the_storage(tmp_path, capsys):
    from harness.cli import main
    optuna.create_study(study_name="scan_ablation-smoke",
                        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
                            str(tmp_path / "optuna.journal"))))
    with pytest.raises(SystemExit):
        main(["worker", "--study", "scan_ablation-smok", "--storage", str(tmp_path)])
    assert "unknown study 'scan_ablation-smok'. Did you mean 'scan_ablation-smoke'?" in capsys.readouterr().err
