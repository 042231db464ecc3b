"""Browsing a study with the tools researchers already use: Optuna params, the MLflow parent run, a moved study
folder, the CLI conventions, and (marked `browser`) the MLflow UI and optuna-dashboard in headless Chromium."""

from __future__ import annotations

import html
import importlib.util
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import optuna
import pytest

from tests.harness.runner_support import env, harness_cmd, seed_mlflow_db, write_study

AXES = {"backbone.width": [8, 16], "train.lr": [0.001, 0.003]}
CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--hide-scrollbars", "--window-size=1400,1000"]
#: set to write the screenshots into docs/img/ (they are committed; a normal run leaves the tree untouched)
SCREENSHOTS = os.environ.get("ZIGMA_HARNESS_SCREENSHOTS") == "1"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


@pytest.fixture(scope="module")
def ui_study(tmp_path_factory):
    """A 2 x 2 toy grid, one seed, run to the end with its report (root/runs/ui, root/reports/ui)."""
    root = tmp_path_factory.mktemp("ui")
    study = write_study(root / "ui.yaml", "ui", axes=AXES, seeds=(0,))
    seed_mlflow_db(root / "runs" / "ui", root)
    _harness("run", str(study), "--runs", str(root / "runs"), "--quiet")
    return root


def _harness(*args: str) -> subprocess.CompletedProcess:
    res = subprocess.run(harness_cmd(*args), env=env(), capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res


def _client(folder: Path):
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")


def _runs(folder: Path) -> tuple[list, object]:
    client = _client(folder)
    runs = client.search_runs([client.get_experiment_by_name("ui").experiment_id])
    trials = [r for r in runs if r.data.tags.get("harness.kind") == "trial"]
    return trials, next(r for r in runs if r.data.tags.get("harness.kind") == "study")


def test_optuna_params_of_each_trial_equal_its_grid_combination(ui_study):
    from harness.queue import open_storage
    study = optuna.load_study(study_name="ui", storage=open_storage(None, ui_study / "runs" / "ui"))
    combos = [dict(zip(AXES, v)) for v in itertools.product(*AXES.values())]
    assert sorted(map(json.dumps, (t.params for t in study.trials))) == sorted(map(json.dumps, combos))
    assert optuna.importance.get_param_importances(study).keys() == set(AXES)   # what the dashboard plots


def test_the_parent_run_holds_each_variants_mean_metric_and_the_report(ui_study):
    from harness.tracking import PROXY
    folder = ui_study / "runs" / "ui"
    trials, parent = _runs(folder)
    for r in trials:
        name = f"backbone.width:{r.data.params['axis.backbone.width']} train.lr:{r.data.params['axis.train.lr']}"
        assert parent.data.metrics[f"{name}/toy-gap"] == pytest.approx(r.data.metrics["toy-gap"])  # one seed
        assert parent.data.metrics[f"{name}/toy-gap.std"] == 0.0
    report = folder / "mlartifacts" / parent.info.artifact_uri[len(PROXY):] / "report"
    assert (report / "index.html").read_bytes() == (ui_study / "reports" / "ui" / "index.html").read_bytes()


def test_a_moved_study_folder_keeps_its_own_mlflow_store_and_artifacts(ui_study, tmp_path):
    from harness import runner
    from harness.study import load_study
    from harness.tracking import PROXY, default_tracking_uri
    moved = tmp_path / "elsewhere" / "ui"
    shutil.copytree(ui_study / "runs" / "ui", moved)
    session = runner.open_session(load_study(ui_study / "ui.yaml"), folder=moved, storage=None, tracking_uri=None)
    assert session.tracker.uri == default_tracking_uri(moved)
    trials, _ = _runs(moved)
    for r in trials:
        assert r.info.artifact_uri.startswith(PROXY)
        assert (moved / "mlartifacts" / r.info.artifact_uri[len(PROXY):] / "samples.png").is_file()


def test_a_report_from_the_mlflow_store_alone_finds_the_artifacts_under_the_study_folder(ui_study, tmp_path):
    from harness.report import build_report
    moved = tmp_path / "ui"
    shutil.copytree(ui_study / "runs" / "ui", moved, ignore=shutil.ignore_patterns("trials"))
    figures = json.loads((build_report(moved, tmp_path / "report") / "summary.json").read_text())["figures"]
    assert sum(f.startswith("samples-") for f in figures) == 4 and "real-ui.png" in figures


def test_status_takes_the_study_file(ui_study):
    out = _harness("status", str(ui_study / "ui.yaml"), "--runs", str(ui_study / "runs")).stdout
    assert "ui: 4 done, 0 running, 0 failed, 0 pruned, 0 pending (of 4)" in out


def test_status_of_a_study_file_with_a_preset_looks_in_the_presets_folder(tmp_path):
    res = subprocess.run(harness_cmd("status", "studies/scan_ablation.yaml", "--preset", "smoke", "--runs",
                                     str(tmp_path)), env=env(), capture_output=True, text=True, timeout=120, check=False,
                         cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 2 and f"no study folder {tmp_path / 'scan_ablation-smoke'}: " in res.stderr  # README


def test_the_deprecated_out_option_still_names_the_runs_folder(ui_study):
    res = _harness("status", "ui", "--out", str(ui_study / "runs"))
    assert "4 done" in res.stdout and "--out is deprecated" in res.stderr


def test_a_preset_with_a_study_name_instead_of_a_file_is_one_clear_error(ui_study):
    res = subprocess.run(harness_cmd("status", "ui", "--preset", "smoke", "--runs", str(ui_study / "runs")),
                         env=env(), capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "--preset" in res.stderr


def test_version_prints_the_installed_distribution_version():
    from importlib.metadata import version
    assert _harness("--version").stdout.strip() == f"zigma-harness {version('zigma-harness')}"


def test_dash_h_prints_the_same_help_as_dash_dash_help():
    assert _harness("status", "-h").stdout == _harness("status", "--help").stdout


# -- the web UIs in headless Chromium ------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"harness ui exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer in {timeout} s")


@pytest.fixture(scope="module")
def servers(ui_study):
    """`harness ui` on the study folder: (MLflow URL, optuna-dashboard URL)."""
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    if importlib.util.find_spec("flask") is None or importlib.util.find_spec("optuna_dashboard") is None:
        pytest.skip("needs the ui extra: pip install 'zigma-harness[ui]'")
    ports = _free_port(), _free_port()
    proc = subprocess.Popen(harness_cmd("ui", str(ui_study / "runs" / "ui"), "--mlflow-port", str(ports[0]),
                                        "--optuna-port", str(ports[1])), env=env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    urls = f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"
    try:
        _wait(urls[0] + "/health", proc)
        _wait(urls[1] + "/api/studies", proc)
        yield urls
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _render(url: str, tmp: Path, shot: str) -> tuple[str, str]:
    """(page HTML after its scripts ran, visible text); a screenshot goes to tmp (and docs/img/ when asked)."""
    profile = [f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=20000"]
    dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, *profile, "--dump-dom", url], capture_output=True, text=True, check=False,
                         timeout=180).stdout
    subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, *profile, f"--screenshot={tmp / shot}", url], capture_output=True,
                   timeout=180, cwd=tmp, check=False)
    if SCREENSHOTS and (tmp / shot).exists():
        shutil.copy(tmp / shot, DOCS_IMG / shot)
    text = re.sub(r"<style.*?</style>|<script.*?</script>", " ", dom, flags=re.DOTALL)
    return dom, html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)))


@pytest.mark.browser
@pytest.mark.slow
def test_the_mlflow_ui_shows_every_trial_run_with_its_params_and_metrics(ui_study, servers, tmp_path):
    trials, _ = _runs(ui_study / "runs" / "ui")
    ids = urllib.parse.quote(json.dumps([r.info.run_id for r in trials]))
    experiment = urllib.parse.quote(json.dumps([trials[0].info.experiment_id]))
    _, text = _render(f"{servers[0]}/#/compare-runs?runs={ids}&experiments={experiment}", tmp_path,
                      "mlflow-ui-compare-runs.png")
    assert f"Comparing {len(trials)} Runs" in text
    for r in trials:
        assert r.info.run_name in text
        assert f"{r.data.metrics['toy-gap']:.3f}" in text          # the UI shows 3 decimals
    assert "axis.backbone.width" in text and "axis.train.lr" in text and "samples.png" in text


@pytest.mark.browser
@pytest.mark.slow
def test_optuna_dashboard_plots_every_trial_against_each_parameter(ui_study, servers, tmp_path):
    dom, text = _render(f"{servers[1]}/dashboard/studies/0/analytics", tmp_path, "optuna-dashboard-analytics.png")
    assert "Param backbone.width" in text                               # the slice plot, on the first param
    assert len(re.findall(r'class="point"', dom)) >= 4                 # one point per trial at least
    contour = text[text.index("Contour"):]
    assert "backbone.width" in contour and "train.lr" in contour


def test_status_estimates_the_time_left_from_the_done_trials(tmp_path):
    """partial_study/video_scans (a real GPU run, 2 done, 10 pending): the line's pace is the median of the done
    trials' start-to-end times, read here from the Optuna journal directly, and the estimate is 10 x that pace."""
    import statistics

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    store = tmp_path / "video_scans"
    shutil.copytree(Path(__file__).resolve().parent / "partial_study" / "video_scans", store)
    study = optuna.load_study(study_name="video_scans",
                              storage=JournalStorage(JournalFileBackend(str(store / "optuna.journal"))))
    took = [(t.datetime_complete - t.datetime_start).total_seconds() for t in study.get_trials()
            if t.state.name == "COMPLETE"]
    assert len(took) == 2
    pace = statistics.median(took)
    out = " ".join(_harness("status", str(store)).stdout.split())    # rich wraps at the terminal width
    assert f"10 trial(s) left; at the median wall-clock time of the 2 done ({pace:.0f} s," in out
    assert f"about {10 * pace / 60:.0f} worker-minute(s)" in out


def test_status_gives_each_finished_trial_its_time_and_the_worker_that_ran_it(tmp_path, capsys, monkeypatch):
    """partial_study/video_scans' 2 done trials (a real GPU run): start-to-end time and host:pid as the Optuna
    journal records them."""
    monkeypatch.setenv("COLUMNS", "200")                       # one table row a line, whatever the terminal
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from harness.cli import main
    store = tmp_path / "video_scans"
    shutil.copytree(Path(__file__).resolve().parent / "partial_study" / "video_scans", store)
    study = optuna.load_study(study_name="video_scans",
                              storage=JournalStorage(JournalFileBackend(str(store / "optuna.journal"))))
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len(done) == 2
    main(["status", str(store)])
    lines = capsys.readouterr().out.splitlines()
    for t in done:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        took = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
        worker = f"{t.user_attrs['worker']['host']}:{t.user_attrs['worker']['pid']}"
        row = next(line for line in lines if t.user_attrs["trial_key"][:8] in line)
        assert f" {took} " in row and worker[:6] in row, row
    pending = next(line for line in lines if "pending" in line)
    assert " s " not in pending and " min " not in pending


def test_status_of_a_study_file_run_only_under_a_preset_names_the_preset_to_give(tmp_path, capsys):
    from harness.cli import main
    (tmp_path / "t.yaml").write_text("name: t\npresets: {smoke: {seeds: [0]}}\n")
    (tmp_path / "runs" / "t-smoke").mkdir(parents=True)
    (tmp_path / "runs" / "t-smoke" / "optuna.journal").write_text("")
    with pytest.raises(SystemExit) as exit_:
        main(["status", str(tmp_path / "t.yaml"), "--runs", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"no study folder {tmp_path / 'runs' / 't'}: " in err
    assert "(it ran with --preset smoke: give it)" in err
