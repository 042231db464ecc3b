"""Checkpoints load with weights_only=True: a crafted pickle never runs, and the trial says it started afresh."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import torch

from tests.harness.runner_support import mlflow_runs, run_harness, seed_mlflow_db, write_study

torch.set_num_threads(1)
CPU = torch.device("cpu")


class _Payload:
    """Unpickling this calls os.system, which creates the marker file (what an attacker's file would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _craft(path, marker) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump({"config_hash": "x", "net": _Payload(marker)}, fh)


def test_the_crafted_pickle_does_run_code_when_loaded_unsafely(tmp_path):
    # the oracle for the tests below: this file really is hostile (in a throwaway subprocess)
    _craft(tmp_path / "evil.pt", tmp_path / "marker")
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(tmp_path / 'evil.pt')!r}, 'rb'))"],
                   check=False, capture_output=True)
    assert (tmp_path / "marker").exists()


def test_a_crafted_checkpoint_is_never_executed_and_the_trial_records_its_refusal(tmp_path, registries):
    from harness.study import expand_trials, load_study
    from harness.trial import run_trial
    path = write_study(tmp_path / "s.yaml", "unit", axes={"backbone.width": [8]}, seeds=(0,),
                       train={"steps": 10, "checkpoint_every": 5})
    spec = expand_trials(load_study(path))[0]
    marker = tmp_path / "marker"
    _craft(tmp_path / "t" / "checkpoint.pt", marker)
    out = run_trial(spec, registries, trial_dir=tmp_path / "t", device=CPU, cache_dir=tmp_path / "c")
    assert not marker.exists()
    assert out["resumed_from_step"] == 0
    assert "refused" in out["checkpoint_refused"] and "weights_only" in out["checkpoint_refused"]
    assert (tmp_path / "t" / "checkpoint.refused.pt").exists(), "the refused file is kept, moved aside"


def test_a_checkpoint_of_the_wrong_structure_is_moved_aside_and_training_starts_afresh(tmp_path, registries):
    from harness.study import expand_trials, load_study
    from harness.trial import run_trial
    path = write_study(tmp_path / "s.yaml", "unit", axes={"backbone.width": [8]}, seeds=(0,),
                       train={"steps": 10, "checkpoint_every": 5})
    spec = expand_trials(load_study(path))[0]
    fresh = run_trial(spec, registries, trial_dir=tmp_path / "a", device=CPU, cache_dir=tmp_path / "c")
    from harness.trial import config_hash
    (tmp_path / "b").mkdir()
    torch.save({"config_hash": config_hash(spec.config), "net": {"w": torch.zeros(3)}, "ema": {}, "opt": {},
                "scaler": None, "state": {"step": 5}, "rng": {}}, tmp_path / "b" / "checkpoint.pt")
    out = run_trial(spec, registries, trial_dir=tmp_path / "b", device=CPU, cache_dir=tmp_path / "c")
    assert "'net' does not hold this model's parameters" in out["checkpoint_refused"]
    assert out["metrics"]["toy-gap"] == fresh["metrics"]["toy-gap"], "a fresh start equals a clean run"
    assert (tmp_path / "b" / "checkpoint.refused.pt").exists()


def test_a_study_with_a_crafted_checkpoint_tags_the_mlflow_run_and_optuna_trial(tmp_path):
    from harness.study import expand_trials, load_study
    from tests.harness.runner_support import journal, optuna_trials
    study = write_study(tmp_path / "s.yaml", "evil", axes={"backbone.width": [8]}, seeds=(0,),
                        train={"steps": 10, "checkpoint_every": 5})
    key = expand_trials(load_study(study))[0].key
    out = tmp_path / "runs"
    folder = out / "evil"
    seed_mlflow_db(folder, tmp_path)
    marker = tmp_path / "marker"
    _craft(folder / "trials" / key / "checkpoint.pt", marker)
    res = run_harness("run", str(study), "--runs", str(out), timeout=300)
    assert res.returncode == 0, res.stderr
    assert not marker.exists()
    assert "checkpoint.pt refused" in res.stderr
    (trial,) = optuna_trials("evil", journal(folder))
    assert "refused" in trial.user_attrs["checkpoint_refused"]
    _, children = mlflow_runs(folder, "evil")
    assert "refused" in children[0].data.tags["harness.checkpoint_refused"]


def test_a_checkpoint_whose_optimizer_state_does_not_fit_is_refused_before_anything_is_restored(tmp_path):
    from harness.checkpoint import TrainState, load_checkpoint, save_checkpoint
    net, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(net.parameters())
    gens = {"noise": torch.Generator()}
    save_checkpoint(tmp_path / "checkpoint.pt", net=net, ema=ema, opt=opt, scaler=None, state=TrainState(step=3),
                    gens=gens, config_hash="h")
    other = torch.nn.Linear(2, 2)
    before = other.weight.detach().clone()
    two_groups = torch.optim.AdamW([{"params": [other.weight]}, {"params": [other.bias]}])
    state = load_checkpoint(tmp_path / "checkpoint.pt", net=other, ema=torch.nn.Linear(2, 2), opt=two_groups,
                            scaler=None, gens=gens, config_hash="h")
    assert state.step == 0 and "'opt' does not fit this optimizer" in state.extras["checkpoint_refused"]
    assert torch.equal(other.weight, before)
    assert (tmp_path / "checkpoint.refused.pt").exists() and not (tmp_path / "checkpoint.pt").exists()


def test_a_saved_checkpoint_loads_with_weights_only_and_resumes_its_step(tmp_path):
    from harness.checkpoint import TrainState, load_checkpoint, save_checkpoint
    net, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(net.parameters())
    gens = {"noise": torch.Generator()}
    save_checkpoint(tmp_path / "checkpoint.pt", net=net, ema=ema, opt=opt, scaler=None,
                    state=TrainState(step=7, extras={"note": "x"}), gens=gens, config_hash="h")
    torch.load(tmp_path / "checkpoint.pt", weights_only=True)   # raises if anything but tensors and primitives
    state = load_checkpoint(tmp_path / "checkpoint.pt", net=net, ema=ema, opt=opt, scaler=None, gens=gens,
                            config_hash="h")
    assert (state.step, state.resumed_from, state.extras) == (7, 7, {"note": "x"})


def test_a_checkpoint_cut_short_is_refused_as_unreadable_and_the_trial_starts_from_step_0(tmp_path):
    from harness.checkpoint import TrainState, load_checkpoint, save_checkpoint
    net, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    opt, gens = torch.optim.AdamW(net.parameters()), {"noise": torch.Generator()}
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, net=net, ema=ema, opt=opt, scaler=None, state=TrainState(step=3), gens=gens,
                    config_hash="h")
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])                 # a disk that filled up mid-write
    state = load_checkpoint(path, net=net, ema=ema, opt=opt, scaler=None, gens=gens, config_hash="h")
    assert state.step == 0 and "checkpoint.pt refused: unreadable: cut short" in state.extras["checkpoint_refused"]
    assert (tmp_path / "checkpoint.refused.pt").read_bytes() == whole[: len(whole) // 2]


def _tampered(tmp_path, change) -> tuple:
    """A good checkpoint of Linear(2, 2) nets, altered by change(blob), then loaded into fresh nets -> (state, net)."""
    from harness.checkpoint import TrainState, load_checkpoint, save_checkpoint
    net, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    gens = {"noise": torch.Generator()}
    save_checkpoint(tmp_path / "checkpoint.pt", net=net, ema=ema, opt=torch.optim.AdamW(net.parameters()),
                    scaler=None, state=TrainState(step=5), gens=gens, config_hash="h")
    blob = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    change(blob)
    torch.save(blob, tmp_path / "checkpoint.pt")
    fresh = torch.nn.Linear(2, 2)
    state = load_checkpoint(tmp_path / "checkpoint.pt", net=fresh, ema=torch.nn.Linear(2, 2),
                            opt=torch.optim.AdamW(fresh.parameters()), scaler=None, gens=gens, config_hash="h")
    return state, fresh


def test_a_checkpoint_with_a_weight_of_the_wrong_shape_is_refused_naming_it(tmp_path):
    state, _ = _tampered(tmp_path, lambda blob: blob["net"].update(weight=torch.zeros(3, 2)))
    assert state.step == 0 and "'net.weight' is not a tensor of shape (2, 2)" in state.extras["checkpoint_refused"]
    assert (tmp_path / "checkpoint.refused.pt").exists()


def test_a_checkpoint_whose_ema_weights_do_not_fit_is_refused_even_when_the_nets_do(tmp_path):
    state, _ = _tampered(tmp_path, lambda blob: blob.update(ema={"weight": torch.zeros(2, 2)}))   # bias missing
    assert state.step == 0 and "'ema' does not hold this model's parameters" in state.extras["checkpoint_refused"]
