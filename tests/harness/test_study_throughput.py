"""benchmarks/study_throughput.py on CPU: every phase accounted for, exact switches give the same results.

No timing is asserted (style rule 20): the phase clock runs on a scripted clock, the runs check structure and sums.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.harness.runner_support import PLUGIN, REPO, write_study

torch.set_num_threads(1)


def test_nested_phases_are_timed_exclusively(monkeypatch):
    from benchmarks import phase_clock
    ticks = iter([0.0, 1.0, 3.0, 6.0, 10.0, 15.0])
    monkeypatch.setattr(phase_clock.time, "perf_counter", lambda: next(ticks))
    clock = phase_clock.PhaseClock(torch.device("cpu"))
    clock.start()                                   # t=0
    with clock.phase("sampling"):                   # t=1: 1 s of "other" before it
        with clock.phase("features"):               # t=3: sampling 2 s
            pass                                    # t=6: features 3 s
    # leaving sampling at t=10: sampling 4 s more; stop at t=15: other 5 s more
    out = clock.stop()
    assert (out["other"], out["sampling"], out["features"]) == (6.0, 6.0, 3.0)


def test_an_override_reaches_the_dotted_key_and_is_validated():
    from benchmarks.study_throughput import VARIANTS, with_overrides
    from harness.study import TrialConfig
    cfg = with_overrides(TrialConfig(), VARIANTS["eval-batch"][1])
    assert cfg.eval.batch_size == cfg.eval.num_samples
    assert cfg.eval.metric_options == {"fd-effnet": {"batch_size": 500}}
    assert with_overrides(TrialConfig(), VARIANTS["ckpt-end"][1]).train.checkpoint_every == cfg.train.steps
    with pytest.raises(Exception, match="data_on_device"):
        with_overrides(TrialConfig(), {"train.data_on_device": "sometimes"})


def test_the_benchmark_accounts_for_every_second_and_exact_switches_keep_the_loss(tmp_path, monkeypatch):
    from benchmarks import study_throughput
    from plugins.registry import load_registries
    monkeypatch.setenv("ZIGMA_HARNESS_PLUGINS", PLUGIN)
    load_registries.cache_clear()
    try:
        study = write_study(tmp_path / "s.yaml", "tp", axes={"backbone.width": [8]}, seeds=(0,),
                            train={"steps": 12, "checkpoint_every": 4})
        result = study_throughput.main([str(study), "--trials", "1", "--variants", "baseline,resident,ckpt-async",
                                        "--device", "cpu", "--out", str(tmp_path / "out")])
    finally:
        load_registries.cache_clear()
    saved = json.loads((tmp_path / "out" / "study_throughput.json").read_text())
    assert [r["variant"] for r in saved["records"]] == ["baseline", "resident", "ckpt-async"]
    assert saved["warmup"] is not None and saved["warmup"]["train_steps"] == 10
    for r in result["records"]:
        assert sum(r["phases_s"].values()) == pytest.approx(r["wall_s"], rel=0.02), r["phases_s"]
        assert r["phases_s"]["step"] > 0 and r["phases_s"]["tracking"] > 0
    assert r["phases_s"]["data"] >= 0
    losses = {r["variant"]: r["metrics"]["final_train_loss"] for r in result["records"]}
    assert losses["resident"] == losses["baseline"] == losses["ckpt-async"]
    table = (tmp_path / "out" / "study_throughput.md").read_text()
    assert "| resident | 1 |" in table and "trials / GPU-h" in table


@pytest.mark.slow
def test_the_smoke_preset_runs_through_the_benchmark(tmp_path):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "benchmarks.study_throughput", "studies/scan_ablation.yaml",
                          "--preset", "smoke", "--trials", "1", "--variants", "baseline", "--no-warmup",
                          "--out", str(tmp_path / "st")], cwd=REPO, capture_output=True, text=True, timeout=1200,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    saved = json.loads(Path(tmp_path / "st" / "study_throughput.json").read_text())
    assert saved["summary"]["baseline"]["n"] == 1 and saved["records"][0]["metrics"]["fd-effnet"] > 0


def test_harness_bench_study_writes_the_throughput_json(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from harness.cli import app
    from plugins.registry import load_registries
    monkeypatch.setenv("ZIGMA_HARNESS_PLUGINS", PLUGIN)
    load_registries.cache_clear()
    try:
        study = write_study(tmp_path / "s.yaml", "tpcli", axes={"backbone.width": [8]}, seeds=(0,),
                            train={"steps": 6, "checkpoint_every": 3})
        res = CliRunner().invoke(app, ["bench", "--study", str(study), "--variants", "baseline", "--trials", "1",
                                       "--device", "cpu", "--out", str(tmp_path / "o")])
    finally:
        load_registries.cache_clear()
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "o" / "study_throughput.json").read_text())
    assert [r["variant"] for r in saved["records"]] == ["baseline"]


def test_an_unknown_study_variant_is_one_line_and_exit_2(tmp_path):
    from tests.harness.runner_support import run_harness
    study = write_study(tmp_path / "s.yaml", "tpbad", axes={"backbone.width": [8]}, seeds=(0,))
    out = run_harness("bench", "--study", str(study), "--variants", "baseline,fastest", "--device", "cpu",
                      "--out", str(tmp_path / "o"), timeout=120)
    assert out.returncode == 2
    assert "unknown study variant(s) ['fastest']" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "o").exists()
