"""harness report: tables checked against the MLflow data, determinism, the CLI, and the page in real Chromium."""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from report_study import BACKBONE_BASE, FAILURE, make_backbone_study, make_study

from harness.provenance import git_info
from harness.report import build_report
from harness.report.plots import frame_strip
from harness.report.stats import pareto_front
from harness.report.tables import Cell, metric_infos
from plugins.errors import HarnessError

CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("study"))


@pytest.fixture(scope="module")
def report(study, tmp_path_factory) -> Path:
    return build_report(study, tmp_path_factory.mktemp("report") / "toy_scans")


@pytest.fixture(scope="module")
def summary(report) -> dict:
    return json.loads((report / "summary.json").read_text())


def _mlflow_values(study: Path) -> dict[str, dict[str, list[float]]]:
    """scan -> metric -> values of the completed runs, read straight from the MLflow store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{study / 'mlflow.db'}")
    exp = client.get_experiment_by_name("toy_scans")
    out: dict[str, dict[str, list[float]]] = {}
    for run in client.search_runs([exp.experiment_id], "tags.`harness.kind` = 'trial'"):
        if run.data.tags["harness.status"] == "completed":
            for k, v in run.data.metrics.items():
                out.setdefault(run.data.params["axis.scan.name"], {}).setdefault(k, []).append(v)
    return out


def _rows(summary: dict) -> dict[str, dict]:
    return {r["variant"]: r for r in summary["tables"][0]["rows"]}


def test_table_means_and_stds_equal_those_recomputed_from_mlflow(study, report, summary):
    values = _mlflow_values(study)
    rows = _rows(summary)
    readme = (report / "README.md").read_text()
    for scan in ("sweep-1", "zigzag-8", "hilbert-8"):
        for metric in ("fd-effnet", "kid", "train_images_per_s", "sample_ms_per_image"):
            vals = values[scan][metric]
            cell = rows[scan]["metrics"][metric]
            assert cell["n"] == len(vals)
            assert cell["mean"] == pytest.approx(statistics.fmean(vals), rel=1e-12)
            if len(vals) > 1:
                assert cell["std"] == pytest.approx(statistics.stdev(vals), rel=1e-12)
            else:
                assert cell["std"] is None
    fd = values["zigzag-8"]["fd-effnet"]
    assert f"{statistics.fmean(fd):.1f} ± {statistics.stdev(fd):.1f}" in readme  # 31.0 ± 1.8
    kid = values["sweep-1"]["kid"]
    assert f"{statistics.fmean(kid):.4f} ± {statistics.stdev(kid):.4f}" in readme


def test_deltas_are_against_the_named_baseline_and_marked_within_noise(study, summary):
    values = _mlflow_values(study)
    rows = _rows(summary)
    assert summary["tables"][0]["baseline"] == "sweep-1" and rows["sweep-1"]["baseline"]
    zz = rows["zigzag-8"]["metrics"]["fd-effnet"]
    expected = statistics.fmean(values["zigzag-8"]["fd-effnet"]) - statistics.fmean(values["sweep-1"]["fd-effnet"])
    assert zz["delta"] == pytest.approx(expected, rel=1e-12)
    assert zz["rel_delta"] == pytest.approx(expected / statistics.fmean(values["sweep-1"]["fd-effnet"]), rel=1e-12)
    assert zz["within_noise"] is False                      # -9.0 against SE ~1.7
    assert rows["zigzag-8"]["metrics"]["train_seconds"]["within_noise"] is True   # identical means
    assert rows["hilbert-8"]["metrics"]["fd-effnet"]["within_noise"] is None      # one seed: cannot tell


def test_best_value_follows_each_metrics_direction(summary):
    rows = _rows(summary)
    best = {m: [v for v, r in rows.items() if r["metrics"][m]["best"]]
            for m in ("fd-effnet", "train_images_per_s", "sample_ms_per_image", "params_m")}
    assert best == {"fd-effnet": ["zigzag-8"], "train_images_per_s": ["sweep-1"],
                    "sample_ms_per_image": ["sweep-1"], "params_m": []}   # equal everywhere: nothing to highlight


def test_failed_trial_is_listed_with_its_reason_and_left_out_of_the_means(report, summary):
    assert summary["failed"] == [{"study": "toy_scans", "variant": "hilbert-8", "seed": 1, "status": "failed",
                                  "reason": FAILURE, "run_id": summary["failed"][0]["run_id"]}]
    assert _rows(summary)["hilbert-8"]["n_seeds"] == 1 and _rows(summary)["hilbert-8"]["n_failed"] == 1
    readme = (report / "README.md").read_text()
    assert f"| hilbert-8 | 1 | failed | {FAILURE} |" in readme
    assert "1 (+1 not completed)" in readme


def test_report_folder_has_html_readme_data_and_the_pictures(report, summary):
    files = sorted(p.name for p in report.iterdir())
    for name in ("index.html", "README.md", "results.csv", "summary.json", "curve-train_loss.png",
                 "curve-fd-effnet.png", "pareto.png", "bench.png", "samples-sweep-1.png"):
        assert name in files
    html = (report / "index.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(summary["figures"])
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # nothing outside the file
    readme = (report / "README.md").read_text()
    for fig in summary["figures"]:
        assert fig in readme
    assert "is not FID" in readme and "64 generated samples" in readme
    # sweep-1 is 0.3 ms/img faster (Welch p ~0.2, noise) and 9 FD worse at Welch p ~0.04 with two seeds a side, which
    # Holm over the two testable comparisons (hilbert-8 has one seed) does not keep: neither dominates the other
    assert summary["pareto"]["front"] == ["sweep-1", "zigzag-8"]


def test_results_csv_has_one_tidy_row_per_trial(report):
    import pandas as pd

    frame = pd.read_csv(report / "results.csv")
    assert len(frame) == 6
    assert list(frame.columns[:11]) == ["study", "trial_key", "label", "variant", "seed", "status",
                                        "resumed_from_step", "failure", "run_id", "started", "ended"]
    assert {"axis.scan.name", "metrics.fd-effnet", "params.train.lr"} <= set(frame.columns)
    assert sorted(frame["status"]) == ["completed"] * 5 + ["failed"]


def _strip_stamp(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "Generated " not in line and '"generated":' not in line)


def _cli(args: list[str]):
    import typer
    from typer.testing import CliRunner

    from harness.commands.report import register

    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    return CliRunner().invoke(app, args)


def test_rebuilding_with_the_cli_gives_the_same_files_apart_from_the_timestamp(study, report, tmp_path):
    res = _cli(["report", "toy_scans", "--runs", str(study.parent), "--out", str(tmp_path / "again")])
    assert res.exit_code == 0, res.output
    again = tmp_path / "again"
    names = sorted(p.name for p in report.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        a, b = (report / name).read_bytes(), (again / name).read_bytes()
        if name.endswith((".png", ".csv")):
            assert a == b, name
        else:
            assert _strip_stamp(a.decode()) == _strip_stamp(b.decode()), name
            diff = [x for x, y in zip(a.decode().splitlines(), b.decode().splitlines()) if x != y]
            assert len(diff) <= 1, (name, diff)


def test_an_unknown_study_is_a_one_line_error(tmp_path):
    with pytest.raises(HarnessError, match=r"^no study folder \S*nope \(give --runs DIR or --tracking-uri URI\)$"):
        build_report("nope", runs_dir=tmp_path)


def test_a_report_of_a_folder_that_holds_no_study_is_refused_and_writes_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match=r"empty: not a study folder \(no study.yaml, mlflow.db or trials/"):
        build_report(str(tmp_path / "empty"), tmp_path / "out", runs_dir="runs")
    assert not (tmp_path / "out").exists()


def test_a_report_of_a_study_file_names_the_study_folder_to_give_instead(tmp_path):
    (tmp_path / "s.yaml").write_text("name: my_study\n")
    with pytest.raises(HarnessError, match=r"s.yaml is a study file; give its study folder \(runs/my_study;"):
        build_report(str(tmp_path / "s.yaml"), tmp_path / "out", runs_dir="runs")


def test_a_study_without_a_tracking_store_reports_from_results_json_and_names_missing_trials(study, tmp_path):
    copy = tmp_path / "runs" / "toy_scans_b"
    shutil.copytree(study, copy, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    (copy / "study.yaml").write_text((copy / "study.yaml").read_text().replace("name: toy_scans", "name: toy_scans_b"))
    out = build_report("toy_scans_b", tmp_path / "b", runs_dir=tmp_path / "runs")
    summary = json.loads((out / "summary.json").read_text())
    assert _rows(summary)["zigzag-8"]["metrics"]["fd-effnet"]["mean"] == pytest.approx(31.0)
    assert [(f["variant"], f["seed"], f["status"]) for f in summary["failed"]] == [("hilbert-8", 1, "missing")]


def test_a_study_without_axes_gets_one_table_without_delta_columns(tmp_path):
    import yaml

    from harness.study import expand_trials, parse_study

    folder = tmp_path / "runs" / "base_only"
    folder.mkdir(parents=True)
    (folder / "study.yaml").write_text("name: base_only\nseeds: [0, 1]\n")
    for spec in expand_trials(parse_study(yaml.safe_load((folder / "study.yaml").read_text()))):
        (folder / "trials" / spec.key).mkdir(parents=True)
        (folder / "trials" / spec.key / "results.json").write_text(json.dumps({"fd-effnet": 10.0 + spec.seed}))
    out = build_report(folder, tmp_path / "out")
    readme = (out / "README.md").read_text()
    assert "### Base configuration" in readme and "| base      |   2 |         10.5 ± 0.7 |" in readme
    assert "Δ" not in readme.split("## Results")[1].split("## Notes")[0]


def test_two_studies_are_compared_side_by_side_in_reports_a_vs_b(study, tmp_path, monkeypatch):
    copy = tmp_path / "runs" / "toy_scans_b"
    shutil.copytree(study, copy, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    (copy / "study.yaml").write_text((copy / "study.yaml").read_text().replace("name: toy_scans", "name: toy_scans_b"))
    monkeypatch.chdir(tmp_path)
    out = build_report([study, "toy_scans_b"])
    assert out == Path("reports/toy_scans_vs_toy_scans_b")
    table = json.loads((out / "summary.json").read_text())["tables"][0]
    assert table["keys"] == ["study", "scan.name"] and table["baseline"] == "toy_scans: sweep-1"
    assert [(r["values"]["study"], r["variant"]) for r in table["rows"]][:2] == [
        ("toy_scans", "sweep-1"), ("toy_scans_b", "sweep-1")]


@pytest.fixture(scope="module")
def backbones(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("backbones")
    return build_report(make_backbone_study(root), root / "report")


def test_axes_blocks_with_different_keys_share_one_table_with_deltas_against_the_baseline(backbones):
    tables = json.loads((backbones / "summary.json").read_text())["tables"]
    assert len(tables) == 1
    table = tables[0]
    assert table["keys"] == ["backbone.name", "scan.name"] and table["baseline"] == "dit"
    rows = {r["values"]["backbone.name"]: r for r in table["rows"]}
    assert [r["values"] for r in table["rows"]] == [{"backbone.name": "zigma", "scan.name": "zigzag-8"},
                                                    {"backbone.name": "vim", "scan.name": "sweep-2"},
                                                    {"backbone.name": "dit", "scan.name": None}]
    assert [r["baseline"] for r in table["rows"]] == [False, False, True]
    dit = BACKBONE_BASE["dit"][0]  # the fixture's seed noise is +-0.5, so each mean is its base value
    for name in ("zigma", "vim"):
        cell = rows[name]["metrics"]["fd-effnet"]
        assert cell["mean"] == pytest.approx(BACKBONE_BASE[name][0])
        assert cell["delta"] == pytest.approx(BACKBONE_BASE[name][0] - dit)
        assert cell["rel_delta"] == pytest.approx((BACKBONE_BASE[name][0] - dit) / dit)
    assert [r["metrics"]["fd-effnet"]["best"] for r in table["rows"]] == [True, False, False]
    assert [r["metrics"]["train_images_per_s"]["best"] for r in table["rows"]] == [False, False, True]


def test_one_markdown_table_holds_every_backbone_with_a_dash_for_a_key_its_block_does_not_set(backbones):
    results = (backbones / "README.md").read_text().split("## Results")[1].split("## Notes")[0]
    assert results.count("### ") == 1 and "### Axis: backbone × scan (3 axes blocks)" in results
    quality = results.split("\n\n")[2].splitlines()
    assert [line.split("|")[1:3] for line in quality[2:]] == [
        [" zigma           ", " zigzag-8    "], [" vim             ", " sweep-2     "],
        [" dit (baseline)  ", " —           "]]
    assert "−10.0 (−25.0%)" in quality[2] and "**30.0 ± 0.7**" in quality[2] and "−4.0 (−10.0%)" in quality[3]
    assert "—: that row's axes block does not set this key" in results
    html = (backbones / "index.html").read_text()
    assert '<td class="key" data-sort="—">—</td>' in html
    import pandas as pd

    frame = pd.read_csv(backbones / "results.csv")
    assert list(frame["axis.backbone.name"]) == ["zigma"] * 2 + ["vim"] * 2 + ["dit"] * 2
    assert frame["axis.scan.name"].isna().tolist() == [False] * 4 + [True] * 2


def test_without_a_study_file_the_blocks_come_from_the_logged_axis_keys_and_still_share_one_table(tmp_path):
    folder = make_backbone_study(tmp_path)
    (folder / "study.yaml").unlink()  # axes now come from each results.json's 'params' alone
    table = json.loads((build_report(folder, tmp_path / "report") / "summary.json").read_text())["tables"]
    assert len(table) == 1 and table[0]["keys"] == ["backbone.name", "scan.name"]
    assert sorted((r["values"]["backbone.name"], r["values"]["scan.name"], r["n_seeds"]) for r in table[0]["rows"]) \
        == [("dit", None, 2), ("vim", "sweep-2", 2), ("zigma", "zigzag-8", 2)]


@pytest.mark.parametrize("sha", ["feedbeef" * 5, None])
def test_report_header_shows_a_commit_from_zigma_harness_git_sha_and_says_unrecorded_without_one(
        sha, tmp_path, monkeypatch):
    copy = tmp_path / "copy-without-git"
    copy.mkdir()
    if sha is None:
        monkeypatch.delenv("ZIGMA_HARNESS_GIT_SHA", raising=False)
        recorded = None  # what the runner records outside git without the variable
    else:
        monkeypatch.setenv("ZIGMA_HARNESS_GIT_SHA", sha)
        recorded = git_info(copy)["sha"]
        assert recorded == sha
    out = build_report(make_backbone_study(tmp_path, git_sha=recorded), tmp_path / "report")
    readme, html = (out / "README.md").read_text(), (out / "index.html").read_text()
    shown = sha or "unrecorded"
    assert f"| git commit | `{shown}` |" in readme
    assert f'<dt>Git commit</dt><dd class="mono">{shown}</dd>' in html


def test_metric_directions_come_from_the_registry_and_cost_is_lower_is_better_except_throughput(tmp_path, monkeypatch):
    (tmp_path / "my_metric_plugin.py").write_text(
        "from plugins.hookspecs import hookimpl\nfrom plugins.specs import MetricEntry\n"
        "@hookimpl\ndef register_metrics(register):\n"
        "    register(MetricEntry(name='my-score', description='a test metric', label='My score',"
        " higher_is_better=True))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ZIGMA_HARNESS_PLUGINS", "my_metric_plugin")
    infos = {m.name: m for m in metric_infos(["my-score", "fd-effnet", "train_images_per_s", "peak_memory_gb"])}
    assert (infos["my-score"].title, infos["my-score"].arrow) == ("My score", "↑")
    assert infos["fd-effnet"].arrow == "↓"
    assert infos["train_images_per_s"].arrow == "↑" and infos["peak_memory_gb"].arrow == "↓"


def test_pareto_front_of_single_seeds_keeps_exactly_the_non_dominated_means():
    pts = [(Cell(x, math.nan, 1), Cell(y, math.nan, 1))
           for x, y in [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 1.0), (2.0, 3.0)]]
    assert pareto_front(pts, x_higher=False, y_higher=False) == [0, 1, 3, 4]
    assert pareto_front(pts, x_higher=True, y_higher=True) == [0, 2, 3]


def test_pareto_front_ignores_a_quality_edge_inside_the_seed_noise():
    """B is faster beyond the noise (10 vs 9, std 0.1, n 3); A's better quality (5.0 vs 5.2, std 1) is noise."""
    a, b = (Cell(10.0, 0.1, 3), Cell(5.0, 1.0, 3)), (Cell(9.0, 0.1, 3), Cell(5.2, 1.0, 3))
    assert pareto_front([a, b], x_higher=False, y_higher=False) == [1]


def test_video_samples_become_a_frame_strip(tmp_path):
    from PIL import Image

    frames = [Image.new("RGB", (8, 6), (40 * i, 0, 0)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    path = tmp_path / "samples.gif"
    path.write_bytes(buf.getvalue())
    strip = Image.open(io.BytesIO(frame_strip(path))).convert("RGB")
    assert strip.size == (3 * 8 + 2 * 2, 6)
    assert strip.getpixel((2 * 10 + 1, 1))[0] == pytest.approx(80, abs=8)


# ---------------------------------------------------------------------------------------------------------------
# the page in a real browser

_CHECK = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  __errors.push(e.message || ("failed to load " + ((e.target && (e.target.src || e.target.href)) || "?")));
}, true);
document.addEventListener("securitypolicyviolation", function (e) { __errors.push("CSP: " + e.blockedURI); });
["error", "warn"].forEach(function (k) {
  var f = console[k];
  console[k] = function () { __errors.push(k + ": " + Array.prototype.join.call(arguments, " ")); f.apply(console, arguments); };
});
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var th = document.querySelector("table.sortable th:nth-child(3)");
  if (th) { th.click(); th.click(); }
  var out = document.createElement("pre");
  out.id = "__check";
  out.textContent = JSON.stringify({
    images: imgs.length,
    loaded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    sorted: th ? th.getAttribute("aria-sort") : null,
    tables: document.querySelectorAll("table").length,
    errors: __errors});
  document.body.appendChild(out);
});
</script>"""


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_page_renders_in_headless_chromium_with_every_image_and_no_console_error(report, summary, tmp_path):
    html = (report / "index.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("<head>", "<head>" + _CHECK, 1))
    res = _chromium(["--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
                     probe.as_uri()], tmp_path)
    found = re.search(r'<pre id="__check">(.*?)</pre>', res.stdout, re.DOTALL)
    assert found, res.stderr[-2000:]
    check = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert check["images"] == len(summary["figures"]) and check["loaded"] == check["images"], check
    assert check["errors"] == [] and check["sorted"] == "descending" and check["tables"] >= 4, check
    console = [line for line in res.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    shot = tmp_path / "report.png"
    res = _chromium(["--window-size=1280,2200", f"--screenshot={shot}", (report / "index.html").as_uri()], tmp_path)
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 2200)
        colours = len(im.convert("RGB").resize((128, 220)).getcolors(maxcolors=1 << 16))
    assert colours > 50, "the screenshot looks blank"
    if os.environ.get("REPORT_SCREENSHOT"):  # keep it to look at
        shutil.copy(shot, os.environ["REPORT_SCREENSHOT"])


def test_pareto_dominance_needs_a_difference_that_survives_holm_over_all_pairs():
    """B beats A on both axes at p ~ 0.04 each one at a time (x: 10 vs 12.5, y: 5 vs 7.5, std 1, n 3), which Holm
    over the two tests does not keep: neither dominates, both stay on the front; C, far worse on both, is dominated."""
    from scipy import stats

    p = stats.ttest_ind_from_stats(10.0, 1.0, 3, 12.5, 1.0, 3, equal_var=False).pvalue
    assert p < 0.05 < 2 * p
    a, b = (Cell(12.5, 1.0, 3), Cell(7.5, 1.0, 3)), (Cell(10.0, 1.0, 3), Cell(5.0, 1.0, 3))
    assert pareto_front([a, b], x_higher=False, y_higher=False) == [0, 1]
    c = (Cell(40.0, 1.0, 3), Cell(40.0, 1.0, 3))
    assert pareto_front([a, b, c], x_higher=False, y_higher=False) == [0, 1]


def test_the_report_command_reads_a_study_file_as_its_folder_and_a_preset_as_name_dash_preset(study, tmp_path,
                                                                                               capsys):
    from report_study import STUDY_YAML

    from harness.cli import main

    (tmp_path / "s.yaml").write_text(STUDY_YAML)
    runs = study.parent
    main(["report", str(tmp_path / "s.yaml"), "--runs", str(runs), "--out", str(tmp_path / "r")])
    assert (tmp_path / "r" / "summary.json").exists()
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(tmp_path / "s.yaml"), "--preset", "smoke", "--runs", str(runs)])
    assert exit_.value.code == 2
    assert "unknown preset 'smoke'" in capsys.readouterr().err   # the file has none: the preset is read from it


def test_an_exact_cost_axis_does_not_enlarge_holms_family():
    """A and B have the same parameter count (exact: std 0 on every seed, Welch p = 1); B's quality is better at
    Welch p ~ 0.027. Holm over the one real test keeps it (p < 0.05); counting the exact comparison as a second
    test doubles it past 0.05 and leaves B's edge inside the noise."""
    from scipy import stats

    from harness.report.stats import welch_holm

    p = stats.ttest_ind_from_stats(5.0, 0.5, 3, 6.4, 0.5, 3, equal_var=False).pvalue
    assert p < 0.05 < 2 * p
    params = Cell(10.0, 0.0, 3)
    out = welch_holm([(params, params), (Cell(6.4, 0.5, 3), Cell(5.0, 0.5, 3))])
    assert out[0] == (1.0, 1.0) and out[1][1] == pytest.approx(p)
    # on the Pareto plot (lower is better on both): same size, B better beyond the noise, so B dominates A
    a, b = (params, Cell(6.4, 0.5, 3)), (params, Cell(5.0, 0.5, 3))
    assert pareto_front([a, b], x_higher=False, y_higher=False) == [1]


def test_train_time_is_the_timed_steps_when_a_store_has_them_and_the_wall_clock_only_otherwise():
    from types import SimpleNamespace

    import pandas as pd

    from harness.report.tables import _metric_names, metric_infos

    s = SimpleNamespace(name="s", objective="fd-effnet", eval_metrics=["fd-effnet"])
    both = pd.DataFrame({"metrics.fd-effnet": [1.0], "metrics.train_seconds": [81.5],
                         "metrics.train_seconds_timed": [27.1]})
    names = _metric_names([s], both)
    assert "train_seconds_timed" in names and "train_seconds" not in names
    assert {m.name: m.title for m in metric_infos(names)}["train_seconds_timed"] == "Train time"
    older = both.drop(columns=["metrics.train_seconds_timed"])   # a store from before the timed clock
    names = _metric_names([s], older)
    assert "train_seconds" in names
    assert {m.name: m.title for m in metric_infos(names)}["train_seconds"] == "Train wall time"
    from harness.report.provenance import notes
    from harness.report.tables import Table

    timed = [Table("all", [], metric_infos(["fd-effnet", "train_seconds_timed"]), [], "")]
    wall = [Table("all", [], metric_infos(["fd-effnet", "train_seconds"]), [], "")]
    assert any(n.startswith("Train time is the seconds inside the timed training steps") for n in notes([], timed, []))
    assert not any(n.startswith("Train time is") for n in notes([], wall, []))
