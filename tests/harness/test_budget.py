"""Training budgets (harness/budget.py): each kind stops on the step that reaches it; eval.every in its unit."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tests.harness.runner_support import write_study

torch.set_num_threads(1)
CPU = torch.device("cpu")


def _run(tmp_path, registries, *, train, eval_=None, width=8):
    """Run one toy trial; -> (result, logs [(metrics, step)], reports [(values, step)], histories {name: points})."""
    from harness.study import expand_trials, load_study
    from harness.trial import TrialHooks, run_trial
    ev = {"intermediate_samples": 8, **(eval_ or {})}
    path = write_study(tmp_path / "s.yaml", "budget", axes={"backbone.width": [width]}, seeds=(0,),
                       train={"log_every": 5, "checkpoint_every": 100, **train}, eval=ev)
    spec = expand_trials(load_study(path))[0]
    logs, reports, hist = [], [], {}
    hooks = TrialHooks(log=lambda m, s: logs.append((dict(m), s)), report=lambda v, s: reports.append((v, s)),
                       history=lambda name, pts: hist.setdefault(name, []).extend(pts))
    out = run_trial(spec, registries, trial_dir=tmp_path / "t", device=CPU, cache_dir=tmp_path / "c", hooks=hooks)
    return out, logs, reports, hist


def _train_steps(logs):
    return max(s for m, s in logs if "train_loss" in m)


def test_an_images_budget_of_100_at_batch_16_stops_on_step_7(tmp_path, registries):
    out, logs, _, _ = _run(tmp_path, registries, train={"steps": 50, "batch_size": 16,
                                                        "budget": {"kind": "images", "value": 100}})
    # 6 steps see 96 images (< 100), the 7th reaches 112
    assert out["metrics"]["steps_run"] == 7 and _train_steps(logs) == 7
    assert out["budget_kind"] == "images" and out["metrics"]["images_seen"] == 112


def test_a_steps_budget_replaces_train_steps(tmp_path, registries):
    out, logs, _, _ = _run(tmp_path, registries, train={"steps": 20, "budget": {"kind": "steps", "value": 7}})
    assert out["metrics"]["steps_run"] == 7 and _train_steps(logs) == 7 and out["budget_kind"] == "steps"


def test_a_flops_budget_stops_on_the_step_that_reaches_it_by_a_hand_count(tmp_path, registries):
    w, batch = 8, 8
    # toy-mlp forward, multiply-adds per image: Linear(16 + 1 + w -> w) and Linear(w -> 16); the embedding is a lookup
    per_image = (16 + 1 + w) * w + w * 16                    # 328
    per_step = 3 * per_image * batch                          # forward + backward (2x) per training image
    budget = 50_000
    expected = next(k for k in itertools.count(1) if k * per_step >= budget)    # 7
    out, logs, _, _ = _run(tmp_path, registries, width=w,
                           train={"steps": 100, "batch_size": batch, "budget": {"kind": "flops", "value": budget}})
    assert out["metrics"]["steps_run"] == expected == 7 and _train_steps(logs) == expected
    assert out["metrics"]["train_flops"] == expected * per_step
    assert out["budget_kind"] == "flops"


def test_a_gpu_seconds_budget_on_cpu_stops_on_the_first_step_whose_timed_seconds_reach_it(tmp_path, registries):
    from harness.training import warmup_steps
    budget, ceiling = 0.12, 20_000          # a ceiling no machine reaches within the budget
    out, _, _, hist = _run(tmp_path, registries, width=8,
                           train={"steps": ceiling, "batch_size": 8, "budget": {"kind": "gpu_seconds",
                                                                                "value": budget}})
    # the oracle: the run's own per-step durations, summed here; warm-up steps are not timed, so not charged
    points = sorted(hist["train_step_s"])
    assert points[0][0] == warmup_steps(ceiling) + 1
    cum = list(itertools.accumulate(s for _, s in points))
    expected = next(step for (step, _), c in zip(points, cum) if c >= budget)
    assert out["metrics"]["steps_run"] == expected == points[-1][0] < ceiling
    assert out["budget_kind"] == "gpu_seconds"
    assert out["metrics"]["budget_used"] == pytest.approx(cum[-1]) and cum[-2] < budget <= cum[-1]


def test_train_steps_is_the_ceiling_of_a_larger_budget_and_is_recorded_as_what_bound_it(tmp_path, registries):
    out, _, _, _ = _run(tmp_path, registries, train={"steps": 5, "batch_size": 8,
                                                     "budget": {"kind": "images", "value": 1000}})
    assert out["metrics"]["steps_run"] == 5 and out["budget_kind"] == "steps"
    assert out["metrics"]["budget_value"] == 5 and out["metrics"]["budget_used"] == 5     # steps, not images


def test_the_steps_an_images_or_flops_budget_plans_are_rounded_up_to_the_step_that_reaches_it():
    from harness.budget import Budget, BudgetConfig
    assert Budget(BudgetConfig(kind="images", value=100), max_steps=50).planned_steps(16) == 7     # 6 x 16 = 96 < 100
    assert Budget(BudgetConfig(kind="images", value=96), max_steps=50).planned_steps(16) == 6
    assert Budget(BudgetConfig(kind="images", value=10**6), max_steps=50).planned_steps(16) == 50  # the ceiling
    # flops: batch 4 x 3 x 10 forward FLOPs = 120 a step; 1,000 FLOPs need ceil(8.33) = 9 steps
    assert Budget(BudgetConfig(kind="flops", value=1000), max_steps=50, flops_per_image=10.0).planned_steps(4) == 9
    assert Budget(BudgetConfig(kind="gpu_seconds", value=5), max_steps=50).planned_steps(4) is None


def test_a_checkpoint_from_before_budgets_existed_counts_its_steps_as_full_batches():
    from harness.budget import Budget, BudgetConfig
    budget = Budget(BudgetConfig(kind="images", value=1000), max_steps=50)
    extras: dict = {}
    budget.bind(extras, step=10, batch_size=8)
    assert extras["budget"] == {"steps": 10, "images": 80, "seconds": 0.0, "evals": 0} and budget.used is extras["budget"]
    every = Budget(BudgetConfig(kind="steps", value=40), max_steps=50, every=4)
    every.bind(extras := {}, step=10, batch_size=8)
    assert extras["budget"]["evals"] == 2                         # the evaluations at steps 4 and 8 were made


def test_eval_every_in_images_logs_one_during_point_per_multiple_reached(tmp_path, registries):
    batch, budget, every = 16, 100, 32
    steps = math.ceil(budget / batch)                                    # 7
    # the first step at or past each multiple of `every`: floor(images / every) grows
    expected = [k for k in range(1, steps + 1) if (k * batch) // every > ((k - 1) * batch) // every]   # 2, 4, 6
    _, logs, reports, _ = _run(tmp_path, registries, train={"steps": 50, "batch_size": batch,
                                                          "budget": {"kind": "images", "value": budget}},
                             eval_={"every": every})
    during = [(m, s) for m, s in logs if "during/toy-gap" in m]
    assert [s for _, s in during] == expected == [2, 4, 6]
    assert [m["during/images"] for m, _ in during] == [k * batch for k in expected]
    assert all(m["during/train_tflops"] == pytest.approx(m["during/images"] * 3 * ((17 + 8) * 8 + 8 * 16) / 1e12)
               for m, _ in during)
    assert [s for _, s in reports] == expected, "every point but the last reaches Optuna"


def test_the_last_during_point_is_not_reported_to_the_pruner(tmp_path, registries):
    _, logs, reports, _ = _run(tmp_path, registries, train={"steps": 6}, eval_={"every": 3})
    assert [s for m, s in logs if "during/toy-gap" in m] == [3, 6]
    assert [s for _, s in reports] == [3]


_PRE_BUDGET_STUDY = """\
name: scan_ablation
base:
  dataset: {name: fashion-mnist, resolution: 32, num_train: 10000, num_reference: 4000}
  backbone: {name: zigma, size: XS, patch_size: 2, pos_embed: learned}
  interpolant: {path: linear, prediction: velocity}
  sampler: {name: euler, steps: 50}
  train: {steps: 1000, batch_size: 128, lr: 0.0005, warmup_steps: 100, ema_decay: 0.999, checkpoint_every: 250}
  eval: {num_samples: 1000, batch_size: 500, metrics: [fd-effnet, kid]}
axes:
  scan.name: [sweep-1, sweep-2]
seeds: [0]
"""


def test_trial_keys_of_a_study_without_a_budget_are_those_from_before_budgets_existed(tmp_path):
    from harness.study import expand_trials, load_study
    path = tmp_path / "scan_ablation.yaml"
    path.write_text(_PRE_BUDGET_STUDY)
    # the first trial key of studies/scan_ablation.yaml at b9d2e3c (before train.budget existed), whose base and
    # first axis value this study repeats
    assert expand_trials(load_study(path))[0].key == "387ab524fb42"


def test_a_fractional_images_budget_is_refused_naming_the_dotted_key(tmp_path):
    from harness.study import load_study
    from plugins.errors import HarnessError
    path = write_study(tmp_path / "s.yaml", "b", axes={"backbone.width": [8]}, seeds=(0,),
                       train={"budget": {"kind": "images", "value": 3.5}})
    with pytest.raises(HarnessError, match=r"s\.yaml: base\.train\.budget: .*whole numbers, got 3\.5"):
        load_study(path)


def _simulate(exact: bool, *, step_s: float, budget: float, log_every: int) -> int:
    """The training loop's budget protocol (harness/training.py) with fixed step durations; -> steps run."""
    from harness.budget import Budget, BudgetConfig
    b = Budget(BudgetConfig(kind="gpu_seconds", value=budget), max_steps=1000, exact_seconds=exact)
    b.bind({}, step=0, batch_size=4)
    pending, step = 0.0, 0
    while b.bound() is None:
        step += 1
        pending += step_s
        b.step(4, pending if exact else None)        # CPU: the timer's pending seconds are known; CUDA: not
        if b.needs_flush(step, log_every) or (exact and step % log_every == 0):
            b.add_seconds(pending)
            pending = 0.0
    return step


def test_gpu_seconds_on_cuda_stop_at_the_first_log_point_past_the_budget_and_on_cpu_exactly():
    # 0.1 s steps, budget 0.72 s: the 8th step reaches it (0.8 s); with log points every 5 steps, CUDA sees it at 10
    assert _simulate(True, step_s=0.1, budget=0.72, log_every=5) == 8
    assert _simulate(False, step_s=0.1, budget=0.72, log_every=5) == 10


def test_a_resumed_trial_continues_its_budget_counters_from_the_checkpoint(tmp_path, registries, monkeypatch):
    import harness.trial
    monkeypatch.setattr(harness.trial, "config_hash", lambda cfg: "same")   # let the second run resume the first
    budget = {"kind": "images", "value": 200}
    first, _, _, _ = _run(tmp_path, registries, train={"steps": 10, "batch_size": 8, "checkpoint_every": 5,
                                                       "budget": budget})
    assert first["budget_kind"] == "steps" and first["metrics"]["steps_run"] == 10     # the ceiling came first
    second, logs, _, _ = _run(tmp_path, registries, train={"steps": 100, "batch_size": 8, "checkpoint_every": 5,
                                                           "budget": budget})
    # 200 images at batch 8: step 25, of which steps 11..25 ran in the second segment
    assert second["resumed_from_step"] == 10 and second["metrics"]["steps_run"] == 25
    assert second["metrics"]["images_seen"] == 200 and second["budget_kind"] == "images"
    assert min(s for m, s in logs if "train_loss" in m) > 10
