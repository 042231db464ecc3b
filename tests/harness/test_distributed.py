"""One trial on several processes (issue 20): torchrun + DDP on the CPU with gloo give the one-process trial's
losses, weights and metric; checkpoints move between the two modes; a failing rank fails the trial with its reason,
leaves no process behind, and the study goes on; the launch keys are validated."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import psutil
import pytest
import torch
from optuna.trial import TrialState

from tests.harness.runner_support import (
    REPO,
    env,
    harness_cmd,
    journal,
    mlflow_runs,
    optuna_trials,
    run_harness,
    seed_mlflow_db,
    write_study,
)

CPU = torch.device("cpu")
TOL = 1e-5                                   # DDP sums gradients in buckets, in another order than one process


def _ours(under=None) -> list[psutil.Process]:
    """Live processes of a distributed trial (launcher or rank; whose ticket is under `under` when given)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if ("harness.launch_ranks" in cmd or "harness.rank " in cmd) and (under is None or str(under) in cmd):
            out.append(p)
    return out


def _histories(folder, name: str) -> dict[str, list[tuple[int, float]]]:
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    _, children = mlflow_runs(folder, name)
    return {c.data.tags["harness.label"]: sorted((m.step, m.value) for m in
                                                 client.get_metric_history(c.info.run_id, "train_loss"))
            for c in children}


# -- (a) the same trial on one and on two processes --------------------------------------------------------------
def _run_study(root, name: str, axes, code: int = 0, **base):
    study = write_study(root / f"{name}.yaml", name, axes=axes, seeds=(0,), **base)
    seed_mlflow_db(root / "runs" / name, root)
    proc = run_harness("run", str(study), "--runs", str(root / "runs"), "--quiet", "--no-report", timeout=300)
    assert proc.returncode == code, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "runs" / name


def _same_curves(curves: dict, one: str, other: str) -> None:
    assert [s for s, _ in curves[one]] == list(range(1, 11)), "log_every 1: one point per step"
    assert [s for s, _ in curves[other]] == [s for s, _ in curves[one]]
    worst = max(abs(a - b) for (_, a), (_, b) in zip(curves[one], curves[other]))
    assert worst < TOL, (curves[one], curves[other])


@pytest.fixture(scope="module")
def same(tmp_path_factory):
    """One trial through `harness run` in the worker and on two ranks."""
    return _run_study(tmp_path_factory.mktemp("ddp"), "ddp", {"train.devices": [1, 2]},
                      train={"steps": 10, "log_every": 1, "checkpoint_every": 5})


def test_a_two_process_trial_logs_the_one_process_loss_curve(same):
    _same_curves(_histories(same, "ddp"), "train.devices=1 seed=0", "train.devices=2 seed=0")


@pytest.mark.slow   # about 20 s on 2 cores; the GPU check (benchmarks/gpu/torchrun_check.sh) does this with NCCL
def test_a_one_rank_torchrun_trial_logs_the_plain_trials_loss_curve(tmp_path):
    folder = _run_study(tmp_path, "one", {"train.launcher": ["auto", "torchrun"]},
                        train={"steps": 10, "log_every": 1, "checkpoint_every": 5})
    _same_curves(_histories(folder, "one"), "train.launcher=auto seed=0", "train.launcher=torchrun seed=0")


def test_a_two_process_trial_completes_with_the_one_process_metric_and_records_its_layout(same):
    trials = {t.user_attrs["label"]: t for t in optuna_trials("ddp", journal(same))}
    assert {t.state for t in trials.values()} == {TrialState.COMPLETE}
    one, two = trials["train.devices=1 seed=0"], trials["train.devices=2 seed=0"]
    assert abs(one.value - two.value) < 1e-6, "identical samples give the identical metric"
    prov = json.loads((same / "trials" / two.user_attrs["trial_key"] / "provenance.json").read_text())
    want = {"world_size": 2, "backend": "gloo", "per_rank_batch": 4, "global_batch": 8}
    assert {k: prov["distributed"][k] for k in want} == want
    assert "distributed" not in json.loads(
        (same / "trials" / one.user_attrs["trial_key"] / "provenance.json").read_text())
    assert not _ours(), "no launcher or rank outlives its trial"


# -- (b) checkpoints resume in either mode -----------------------------------------------------------------------
def _spec(tmp_path, steps: int, **train):
    from harness.study import expand_trials, load_study
    path = write_study(tmp_path / f"s{steps}.yaml", "resume", axes={"backbone.width": [8]}, seeds=(0,),
                       train={"steps": steps, "checkpoint_every": 5, "log_every": 5, **train})
    return expand_trials(load_study(path))[0]


def _on_ranks(spec, trial_dir, cache_dir):
    """The spec on spec.config.train.devices CPU ranks under torchrun, without a study (no Optuna, no MLflow)."""
    from harness.runner import torchrun
    ticket = {"key": spec.key, "params": spec.params, "seed": spec.seed, "origin": {}, "source": "test",
              "config": spec.config.model_dump(mode="json"), "trial_dir": str(trial_dir),
              "cache_dir": str(cache_dir), "talk": None}
    folder = trial_dir / torchrun.FOLDER
    rc = torchrun.launch(ticket, folder, spec.config.train, CPU, rdzv_id="test")
    return torchrun.outcome(folder, rc, world=spec.config.train.world_size)


def _stopped_at_step_5(spec5, spec10, trial_dir) -> None:
    """What a run of spec10 stopped after its step-5 checkpoint leaves: spec5's last checkpoint (training does not
    depend on train.steps), relabelled with spec10's configuration hash."""
    from harness.trial import config_hash
    path = trial_dir / "checkpoint.pt"
    blob = torch.load(path, weights_only=True)
    assert blob["state"]["step"] == 5 and blob["config_hash"] == config_hash(spec5.config)
    blob["config_hash"] = config_hash(spec10.config)
    torch.save(blob, path)


def _weights(trial_dir) -> dict[str, torch.Tensor]:
    blob = torch.load(trial_dir / "checkpoint.pt", weights_only=True)
    return {**{f"net.{k}": v for k, v in blob["net"].items()}, **{f"ema.{k}": v for k, v in blob["ema"].items()}}


def test_a_checkpoint_resumes_from_two_processes_to_one_and_from_one_to_two(registries, tmp_path, monkeypatch):
    from harness.trial import run_trial
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one5, one10 = _spec(tmp_path, 5), _spec(tmp_path, 10)
    two5, two10 = _spec(tmp_path, 5, devices=2), _spec(tmp_path, 10, devices=2)
    assert one10.key == two10.key, "how a trial is launched is not part of its key"
    cache = tmp_path / "cache"
    straight = run_trial(one10, registries, trial_dir=tmp_path / "straight", device=CPU, cache_dir=cache)

    _on_ranks(two5, tmp_path / "two-then-one", cache)                      # 2 ranks to step 5
    _stopped_at_step_5(two5, one10, tmp_path / "two-then-one")
    two_one = run_trial(one10, registries, trial_dir=tmp_path / "two-then-one", device=CPU, cache_dir=cache)

    run_trial(one5, registries, trial_dir=tmp_path / "one-then-two", device=CPU, cache_dir=cache)
    _stopped_at_step_5(one5, two10, tmp_path / "one-then-two")
    one_two = _on_ranks(two10, tmp_path / "one-then-two", cache)           # 2 ranks from step 5

    want = _weights(tmp_path / "straight")
    for name, result in (("two-then-one", two_one), ("one-then-two", one_two)):
        assert result["resumed_from_step"] == 5, name
        got = _weights(tmp_path / name)
        assert got.keys() == want.keys()
        worst = max((got[k].float() - want[k].float()).abs().max().item() for k in want)
        assert worst < TOL, f"{name}: weights differ from the uninterrupted trial's by {worst}"
        assert abs(result["metrics"]["toy-gap"] - straight["metrics"]["toy-gap"]) < 1e-6, name
    assert not _ours()


# -- (c) a rank that raises, turns NaN or is killed --------------------------------------------------------------
@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """Two two-rank trials whose rank 1 raises or SIGKILLs itself at step 3, then a good trial (exit code 1)."""
    return _run_study(tmp_path_factory.mktemp("ddp-faults"), "ddpfaults",
                      [{"backbone.fail": ["raise", "kill"], "train.devices": [2]}, {"backbone.width": [8]}], code=1,
                      backbone={"fail_rank": 1}, train={"steps": 10, "checkpoint_every": 5})


def test_a_failing_rank_fails_the_trial_with_its_reason_and_the_study_goes_on(faulty):
    trials = {t.user_attrs["label"]: t for t in optuna_trials("ddpfaults", journal(faulty))}
    reasons = {label: t.user_attrs.get("failure") for label, t in trials.items()}
    assert trials["backbone.width=8 seed=0"].state == TrialState.COMPLETE
    raised = "RuntimeError: toy failure on purpose (rank 1 of 2)"
    assert reasons["backbone.fail=raise, train.devices=2 seed=0"] == raised
    assert reasons["backbone.fail=kill, train.devices=2 seed=0"].startswith("rank 1 of 2 was killed by SIGKILL")
    _, children = mlflow_runs(faulty, "ddpfaults")
    runs = {c.data.tags["harness.label"]: c for c in children}
    assert runs["backbone.fail=raise, train.devices=2 seed=0"].data.tags["harness.failure"] == raised
    key = trials["backbone.fail=raise, train.devices=2 seed=0"].user_attrs["trial_key"]
    error = (faulty / "trials" / key / "error.txt").read_text()
    assert "rank 1's traceback" in error and "RuntimeError: toy failure on purpose" in error


def test_no_rank_or_launcher_outlives_a_failed_trial(faulty):
    assert not _ours()


def test_a_killed_worker_leaves_no_rank_running(tmp_path):
    study = write_study(tmp_path / "kill.yaml", "killw", axes={"train.devices": [2]}, seeds=(0,),
                        backbone={"sleep": 0.05}, train={"steps": 1000, "checkpoint_every": 500})
    seed_mlflow_db(tmp_path / "runs" / "killw", tmp_path)
    proc = subprocess.Popen(harness_cmd("run", str(study), "--runs", str(tmp_path / "runs"), "--quiet", "--no-report"),
                            env=env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 90                     # the launcher and both ranks are up
        while len(_ours(tmp_path)) < 3 and time.time() < deadline:
            assert proc.poll() is None, "the study ended before its worker could be killed"
            time.sleep(0.2)
        assert len(_ours(tmp_path)) >= 3
    finally:
        os.killpg(proc.pid, signal.SIGKILL)             # the worker (harness run itself); the launcher has its own
        proc.wait()                                     # session, so only PR_SET_PDEATHSIG reaches it
    deadline = time.time() + 40
    while _ours(tmp_path) and time.time() < deadline:
        time.sleep(0.2)
    assert not _ours(tmp_path), [p.info["cmdline"] for p in _ours(tmp_path)]


@pytest.mark.slow   # about 15 s on 2 cores
def test_a_nan_on_one_rank_fails_the_trial_at_the_first_bad_step_of_any_rank(tmp_path):
    folder = _run_study(tmp_path, "nan", {"backbone.fail": ["nan"], "train.devices": [2]}, code=1,
                        backbone={"fail_rank": 1}, train={"steps": 10, "checkpoint_every": 5, "log_every": 5})
    (trial,) = optuna_trials("nan", journal(folder))
    # rank 1's loss is NaN from step 3; rank 0's only from step 4, after the averaged gradient reached it
    assert trial.user_attrs["failure"].startswith("non-finite training loss at step 3 (rank "), trial.user_attrs


# -- (d) the schema -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("train,message", [
    ({"devices": 3, "batch_size": 8}, "train.batch_size (8) must be divisible by train.devices x train.nodes (3 x 1"),
    ({"devices": 2, "nodes": 2, "batch_size": 8}, "train.nodes=2 needs train.rdzv_endpoint"),
    ({"rdzv_endpoint": "node0"}, "train.rdzv_endpoint must be HOST:PORT"),
    ({"rdzv_endpoint": "node0:70000"}, "port in 1..65535"),
    ({"devices": 2, "budget": {"kind": "gpu_seconds", "value": 5}}, "gpu_seconds is not supported"),
    ({"devices": 0}, "base.train.devices: Input should be greater than or equal to 1"),
    ({"launcher": "mpirun"}, "base.train.launcher: Input should be 'auto' or 'torchrun'"),
    ({"device": 2}, "Did you mean 'devices'"),
])
def test_bad_launch_keys_are_refused_in_one_line_naming_the_key(train, message):
    from harness.study import parse_study
    from plugins.errors import ConfigError
    with pytest.raises(ConfigError) as err:
        parse_study({"name": "s", "base": {"train": {"batch_size": 8, **train}}}, source="s.yaml")
    text = str(err.value)
    assert message in text and text.startswith("s.yaml: ") and "\n" not in text, text


def test_launch_keys_change_neither_existing_trial_keys_nor_checkpoint_hashes():
    from harness.study import expand_trials, parse_study
    from harness.trial import config_hash
    raw = {"name": "s", "base": {"train": {"steps": 7, "batch_size": 4}}, "axes": {"scan.name": ["sweep-1"]},
           "seeds": [3]}
    plain = expand_trials(parse_study(raw))[0]
    # computed at 4a3e8e6, before the launch keys existed
    assert (plain.key, config_hash(plain.config)) == ("7e2b578a435a", "59498dfa030b9c11")
    raw["base"]["train"].update(devices=2, launcher="torchrun", rdzv_endpoint="localhost:29400")
    launched = expand_trials(parse_study(raw))[0]
    assert (launched.key, config_hash(launched.config)) == ("7e2b578a435a", "59498dfa030b9c11")


def test_validate_and_dry_run_show_the_process_layout(registries, tmp_path, capsys):
    from tests.harness.cli_support import run_cli
    study = write_study(tmp_path / "lay.yaml", "lay", axes={"train.devices": [1, 2]}, seeds=(0,))
    code, out, _ = run_cli(capsys, "validate", str(study), "--no-build")
    assert code == 0 and "1 on torchrun (2 process(es) each)" in out, out
    code, out, _ = run_cli(capsys, "run", str(study), "--dry-run")
    assert code == 0 and "ranks" in out and "2x1" in out, out



# -- GPU groups ----------------------------------------------------------------------------------------------
def test_gpus_0_to_7_with_two_devices_per_trial_start_four_workers_on_disjoint_pairs(monkeypatch):
    from harness.launch import parse_gpus, worker_plan
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    ids = parse_gpus("0-7")
    assert ids == [str(i) for i in range(8)]
    names, envs = worker_plan(gpu_ids=ids, workers=0, per_device=1, group=2)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0,1", "2,3", "4,5", "6,7"]
    assert names == ["gpu0+1", "gpu2+3", "gpu4+5", "gpu6+7"]
    assert parse_gpus("0-2,5") == ["0", "1", "2", "5"]


def test_fewer_gpus_than_a_trial_needs_is_one_clear_error():
    from harness.launch import worker_plan
    from plugins.errors import HarnessError
    with pytest.raises(HarnessError, match=r"--gpus: 1 GPU\(s\) given, but the study's trials need train.devices=2"):
        worker_plan(gpu_ids=["3"], workers=0, per_device=1, group=2)


# -- several hosts (two agents on this one) -------------------------------------------------------------------
def _trials_if_any(name: str, folder) -> list:
    try:
        return optuna_trials(name, journal(folder))
    except KeyError:                                    # the study is not created yet
        return []


@pytest.mark.slow   # about 30 s on 2 cores: two agents, three Python processes each
def test_a_two_node_trial_runs_when_a_node_rank_1_worker_joins_it(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    study = write_study(tmp_path / "nodes.yaml", "nodes", axes={"train.nodes": [2]}, seeds=(0,),
                        train={"steps": 6, "checkpoint_every": 5, "rdzv_backend": "static",
                               "rdzv_endpoint": f"127.0.0.1:{port}"})
    runs = tmp_path / "runs"
    seed_mlflow_db(runs / "nodes", tmp_path)
    node0 = subprocess.Popen(harness_cmd("run", str(study), "--runs", str(runs), "--quiet", "--no-report"),
                             env=env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        deadline = time.time() + 120                   # node 0 has claimed the trial and posted its rendezvous
        while time.time() < deadline and not any(
                "torchrun" in t.user_attrs for t in _trials_if_any("nodes", runs / "nodes")):
            time.sleep(0.5)
        node1 = run_harness("worker", "--storage", str(runs / "nodes"), "--study", "nodes", "--runs", str(runs),
                            "--node-rank", "1", "--quiet", timeout=200)
        out, _ = node0.communicate(timeout=200)
    finally:
        if node0.poll() is None:
            os.killpg(node0.pid, signal.SIGKILL)
    assert node0.returncode == 0 and node1.returncode == 0, out[-3000:] + node1.stdout[-2000:] + node1.stderr[-2000:]
    assert "joined 1 trial(s) as node 1" in node1.stdout + node1.stderr
    (trial,) = optuna_trials("nodes", journal(runs / "nodes"))
    assert trial.state == TrialState.COMPLETE
    prov = json.loads((runs / "nodes" / "trials" / trial.user_attrs["trial_key"] / "provenance.json").read_text())
    assert prov["distributed"]["world_size"] == 2 and prov["distributed"]["nodes"] == 2
    assert not _ours()


# -- the rank helpers in a two-process gloo group --------------------------------------------------------------
def _helpers(rank: int, world: int, store: str, out: str) -> None:
    import torch.distributed as dist

    from harness.distributed import Ranks, RankStopped
    from harness.sampling import sample_images
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    ranks = Ranks(rank, world, rank, CPU, "gloo")
    got: dict = {}
    # earliest: rank 1 marked step 3, rank 0 step 5 -> 3; none marked -> -1
    got["earliest"] = int(ranks.earliest(torch.tensor(5 if rank == 0 else 3)).item())
    got["none"] = int(ranks.earliest(torch.tensor(-1)).item())
    got["mean"] = float(ranks.mean(torch.tensor(float(rank + 1))).item())          # (1 + 2) / 2

    def pruned():
        raise KeyError("pruned on purpose")
    try:
        ranks.on_lead(pruned)
    except KeyError:
        got["on_lead"] = "raised its own error"
    except RankStopped as exc:
        got["on_lead"] = str(exc)
    got["on_lead_value"] = ranks.on_lead(lambda: 7)

    class Sampler:                                    # x1 = noise: the samples are the seeded noise itself
        def sample(self, transport, model_fn, x0, *, seeds):
            from types import SimpleNamespace
            return SimpleNamespace(x1=x0.clamp(-1, 1), nfe=len(seeds))

    class Cond:
        def prompts(self, n, seed):
            return None, None

        def pair(self, net, labels, captions):
            return {}, {}

    net = type("N", (), {"backbone": lambda *a, **k: None})()
    mine = sample_images(net, None, Sampler(), Cond(), n=7, batch_size=2, shape=(1, 2, 2), seed=3, cfg_scale=1.0,
                         device=CPU, amp=None, part=ranks.part)
    whole = ranks.gather_samples(mine)
    if rank == 0:
        alone = sample_images(net, None, Sampler(), Cond(), n=7, batch_size=2, shape=(1, 2, 2), seed=3,
                              cfg_scale=1.0, device=CPU, amp=None)
        got["gathered_equal_alone"] = torch.equal(whole.fake, alone.fake)
        got["mine"] = mine.index.tolist()
        got["nfe"] = (whole.nfe, alone.nfe)
    else:
        got["gathered"] = whole
    dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as f:
        json.dump(got, f)


def test_rank_helpers_reduce_gather_and_stop_the_others_when_rank_0_raises(tmp_path):
    import torch.multiprocessing as mp
    out = str(tmp_path / "got")
    mp.start_processes(_helpers, args=(2, str(tmp_path / "store"), out), nprocs=2, start_method="spawn")
    r0, r1 = (json.loads((tmp_path / f"got.{r}").read_text()) for r in (0, 1))
    for r in (r0, r1):
        assert (r["earliest"], r["none"], r["mean"]) == (3, -1, 1.5)
    assert r0["on_lead"] == "raised its own error"
    assert r1["on_lead"] == "rank 0 ended the trial (KeyError: 'pruned on purpose')"
    assert (r0["on_lead_value"], r1["on_lead_value"]) == (7, None)
    # 7 samples in batches of 2 -> batches 0..3; rank 0 draws batches 0 and 2, rank 1 batches 1 and 3
    assert r0["mine"] == [0, 1, 4, 5] and r0["gathered_equal_alone"] and r1["gathered"] is None
    assert r0["nfe"][0] == pytest.approx(r0["nfe"][1])
