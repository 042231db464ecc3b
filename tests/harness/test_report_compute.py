"""The report's quality-vs-compute section: iso-cost cells from the during/* histories, and the page in Chromium."""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from report_study import make_study
from test_report import _CHECK, CHROMIUM, _chromium

from harness.report import build_report

#: seconds and TFLOPs per training step of each scan; during fd = C + 3 * seed - step (steps 5, 10, 15, 20)
SEC = {"sweep-1": 0.1, "zigzag-8": 0.2, "hilbert-8": 0.15}
TFLOP = {"sweep-1": 0.01, "zigzag-8": 0.01, "hilbert-8": 0.02}
C = {"sweep-1": 40.0, "zigzag-8": 30.0, "hilbert-8": 35.0}
STEPS = (5, 10, 15, 20)


def _fd(scan, seed, step):
    return C[scan] + 3 * seed - step


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    folder = make_study(tmp_path_factory.mktemp("study"))
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name("toy_scans")
    for run in client.search_runs([exp.experiment_id], "tags.`harness.kind` = 'trial'"):
        if run.data.tags["harness.status"] != "completed":
            continue
        scan, seed = run.data.params["axis.scan.name"], int(run.data.params["seed"])
        client.log_batch(run.info.run_id, metrics=[
            m for s in STEPS for m in (
                Metric("during/fd-effnet", _fd(scan, seed, s), s, s), Metric("during/images", 16.0 * s, s, s),
                Metric("during/train_seconds", SEC[scan] * s, s, s),
                Metric("during/train_tflops", TFLOP[scan] * s, s, s))])
    return build_report(folder, tmp_path_factory.mktemp("report") / "toy_scans")


def _log_interp(x, x0, y0, x1, y1):
    return y0 + (y1 - y0) * (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))


def test_equal_gpu_time_cells_are_the_seeds_curves_read_at_the_largest_common_budget(report):
    table = json.loads((report / "summary.json").read_text())["iso_cost"][0]
    assert table["title"].endswith("at equal GPU time")
    # every trial covers 1.0 s .. 2.0 s (zigzag-8 starts at 5 x 0.2 s, sweep-1 ends at 20 x 0.1 s): largest = 2 s
    rows = {r["variant"]: r["cells"][-1] for r in table["rows"]}
    sweep = [_fd("sweep-1", s, 20) for s in (0, 1)]                       # 2 s = step 20
    zigzag = [_fd("zigzag-8", s, 10) for s in (0, 1)]                     # 2 s = step 10
    # hilbert-8 (one seed): 2 s lies between step 10 (1.5 s) and step 15 (2.25 s), read linearly in log-seconds
    hilbert = _log_interp(2.0, 1.5, _fd("hilbert-8", 0, 10), 2.25, _fd("hilbert-8", 0, 15))
    assert rows["sweep-1"] == f"{statistics.fmean(sweep):.3g} ± {statistics.stdev(sweep):.3g}"
    assert rows["zigzag-8"] == f"{statistics.fmean(zigzag):.3g} ± {statistics.stdev(zigzag):.3g}"
    assert rows["hilbert-8"] == f"{hilbert:.3g}"
    assert table["heads"][-1] == f"{2.0 / 3600:.3g} GPU-h"


def test_equal_flops_budgets_span_only_the_range_every_trial_covers(report):
    table = json.loads((report / "summary.json").read_text())["iso_cost"][1]
    # TFLOPs ranges: sweep/zigzag 0.05..0.2, hilbert 0.1..0.4 -> common 0.1..0.2
    assert table["heads"][0] == "0.1 TFLOP" and table["heads"][-1] == "0.2 TFLOP"
    assert "n/a" not in {c for r in table["rows"] for c in r["cells"]}


def test_the_readme_names_no_winner_when_a_variant_has_one_seed(report):
    readme = (report / "README.md").read_text()
    assert "## Quality vs compute" in readme and "compute-fd-effnet.png" in readme
    # hilbert-8 has one seed (its seed 1 failed), so no lead can be told from the seed spread at any budget
    assert "At equal GPU time, no variant is ahead by more than the seed spread at any compared budget" in readme


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_compute_curves_render_in_headless_chromium(report, tmp_path):
    html = (report / "index.html").read_text()
    assert 'alt="FD' in html and "Quality vs compute" in html
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("<head>", "<head>" + _CHECK, 1))
    res = _chromium(["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], tmp_path)
    found = re.search(r'<pre id="__check">(.*?)</pre>', res.stdout, re.DOTALL)
    assert found, res.stderr[-2000:]
    check = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    figures = json.loads((report / "summary.json").read_text())["figures"]
    assert "compute-fd-effnet.png" in figures
    assert check["images"] == len(figures) and check["loaded"] == check["images"] and check["errors"] == [], check
