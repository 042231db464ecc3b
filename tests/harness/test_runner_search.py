"""Search studies: a sampler proposes n_trials configurations; constraints, intermediate values recorded."""

from __future__ import annotations

import pytest
import yaml
from optuna.trial import TrialState

from tests.harness.runner_support import BASE, journal, mlflow_runs, optuna_trials, seed_mlflow_db
from tests.harness.test_runner_faults import _main


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    base = {k: dict(v) for k, v in BASE.items()}
    base["eval"]["every"] = 10
    doc = {"name": "search", "base": base, "seeds": [5],
           "search": {"space": {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                "backbone.width": {"choices": [8, 16]}},
                      "n_trials": 3, "sampler": "random"},
           "objective": {"metric": "toy-gap", "prune": True,
                         "constraints": [{"metric": "toy-gap", "max": 1.0}]}}
    (root / "search.yaml").write_text(yaml.safe_dump(doc))
    seed_mlflow_db(root / "runs" / "search", root)
    _main(["run", str(root / "search.yaml"), "--runs", str(root / "runs"), "--quiet", "--no-report"])
    return root


def test_a_search_study_runs_n_trials_sampled_from_its_space(searched):
    trials = optuna_trials("search", journal(searched / "runs" / "search"))
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for t in trials:
        assert 1e-4 <= t.params["train.lr"] <= 1e-2 and t.params["backbone.width"] in (8, 16)
        assert t.user_attrs["params"] == t.params and t.user_attrs["seed"] == 5
    assert len({t.user_attrs["trial_key"] for t in trials}) == 3


def test_constraints_are_recorded_as_value_minus_budget(searched):
    for t in optuna_trials("search", journal(searched / "runs" / "search")):
        assert t.constraints == {"toy-gap": pytest.approx(t.value - 1.0)}


def test_intermediate_evaluations_reach_optuna_and_the_mlflow_history(searched):
    from mlflow.tracking import MlflowClient
    trials = optuna_trials("search", journal(searched / "runs" / "search"))
    assert all(list(t.intermediate_values) == [10] for t in trials)
    _, children = mlflow_runs(searched / "runs" / "search", "search")
    client = MlflowClient(tracking_uri=f"sqlite:///{searched / 'runs' / 'search' / 'mlflow.db'}")
    steps = sorted(m.step for m in client.get_metric_history(children[0].info.run_id, "toy-gap"))
    assert steps == [10, 20]
    assert {c.data.params["axis.backbone.width"] for c in children} <= {"8", "16"}
