"""What a reader judges a report by: the answer first (complete or partial, who leads, by how much, beyond the seed
noise or not, at what cost), a train loss compared only between variants of one training objective, a Pareto line
that is the front of the means, honest units for video samples. Every expected figure is worked by hand here or
computed by scipy from the per-seed values, never read back from the report's own code."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from report_study import write_results_study

from harness.report import build_report
from harness.report.stats import means_front
from harness.report.tables import Cell

SCANS = """\
name: toy_answer
base:
  dataset: {name: digits}
  backbone: {name: zigma, size: tiny}
  eval: {num_samples: 64, metrics: [fd-effnet]}
axes:
  scan.name: [sweep-1, zigzag-8, hilbert-8]
seeds: [0, 1, 2]
baseline: {scan.name: sweep-1}
"""
#: per-seed FD (lower is better) and sampling latency: zigzag-8 leads; sweep-1 is far behind it, hilbert-8 is not
FD = {"sweep-1": [40.0, 41.0, 39.0], "zigzag-8": [30.0, 31.0, 32.0], "hilbert-8": [29.0, 35.0, 35.0]}
MS = {"sweep-1": 2.0, "zigzag-8": 2.5, "hilbert-8": 2.2}


def _results(spec) -> dict:
    scan = spec.params["scan.name"]
    return {"fd-effnet": FD[scan][spec.seed], "sample_ms_per_image": MS[scan]}


def _answer(folder: Path, out: Path) -> list[str]:
    return json.loads((build_report(folder, out) / "summary.json").read_text())["verdict"]["lines"]


@pytest.fixture(scope="module")
def complete(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("answer")
    return _answer(write_results_study(root, SCANS, _results), root / "report")


def test_a_complete_study_says_so_with_its_seed_count(complete):
    assert complete[0] == "Complete: all 9 trials finished, 3 seeds per variant (3 variants)."


def test_the_answer_names_the_leader_its_lead_over_the_baseline_and_the_holm_adjusted_test(complete):
    # zigzag-8: mean 31, std 1; sweep-1: mean 40, std 1 -> delta -9, -22.5 %; Holm over the two baseline tests
    p_zig = stats.ttest_ind(FD["zigzag-8"], FD["sweep-1"], equal_var=False).pvalue
    p_hil = stats.ttest_ind(FD["hilbert-8"], FD["sweep-1"], equal_var=False).pvalue
    q = min(1.0, 2 * p_zig) if p_zig <= p_hil else max(p_zig, min(1.0, 2 * p_hil))
    assert q < 0.05
    assert complete[1] == ("Lowest mean FD-EffNetLite0 (↓): zigzag-8 at 31.0 ± 1.0 (n = 3), against the baseline "
                           f"sweep-1 at 40.0 ± 1.0 (n = 3): −9.0 (−22.5%), beyond the seed noise (Welch's t-test, "
                           f"Holm-adjusted p = {q:.2g}).")


def test_the_answer_says_whom_the_leader_beats_over_all_pairs_and_whom_it_cannot_be_told_from(complete):
    pairs = {k: stats.ttest_ind(FD[a], FD[b], equal_var=False).pvalue
             for k, (a, b) in {"zs": ("zigzag-8", "sweep-1"), "zh": ("zigzag-8", "hilbert-8"),
                               "sh": ("sweep-1", "hilbert-8")}.items()}
    ranked = sorted(pairs.values())
    holm = {k: max(min(1.0, (3 - i) * p) for i, p in enumerate(ranked[:ranked.index(v) + 1]))
            for k, v in pairs.items()}
    assert holm["zs"] < 0.05 <= holm["zh"]
    assert complete[2] == ("Over all 3 pairs of variants (Holm-adjusted), zigzag-8 beats 1 beyond the seed noise "
                           "(sweep-1); the other 1 cannot be told apart from it (hilbert-8).")


def test_the_answer_gives_the_leaders_cost_against_the_baseline(complete):
    # 2.5 ms against 2.0 ms: +25.0 %, every seed the same so Welch's p is 0 (beyond the noise, no '~')
    assert complete[-1] == "Its cost against the baseline: sampling latency +25.0%."


def test_a_baseline_that_leads_gets_its_one_test_counted_in_the_singular(tmp_path):
    # two scans, the baseline sweep-1 best by its mean (hilbert-8 39/45/45 against 40/41/39: within the noise)
    two = SCANS.replace("[sweep-1, zigzag-8, hilbert-8]", "[sweep-1, hilbert-8]")
    fd = {"sweep-1": [40.0, 41.0, 39.0], "hilbert-8": [39.0, 45.0, 45.0]}
    lines = _answer(write_results_study(tmp_path, two, lambda spec: {
        "fd-effnet": fd[spec.params["scan.name"]][spec.seed], "sample_ms_per_image": 2.0}), tmp_path / "report")
    assert lines[1] == "Lowest mean FD-EffNetLite0 (↓): sweep-1 at 40.0 ± 1.0 (n = 3), the baseline itself."
    assert lines[2] == ("Against the baseline (1 test, Holm-adjusted): better beyond the seed noise: none; "
                        "worse: none; within the noise: 1.")


def test_a_partial_one_seed_study_says_it_is_partial_and_names_no_winner(tmp_path):
    folder = write_results_study(tmp_path, SCANS, _results)
    for d in (folder / "trials").iterdir():                   # keep seed 0 of sweep-1 and zigzag-8 only
        spec = json.loads((d / "results.json").read_text())
        if spec["seed"] != 0 or spec["params"]["scan.name"] == "hilbert-8":
            shutil.rmtree(d)
    lines = _answer(folder, tmp_path / "report")
    assert lines[0] == ("Partial study: 2 of 9 trials finished (7 never ran); 0–1 finished seed per variant; "
                        "no finished trial for hilbert-8.")
    assert lines[1].startswith("With one seed per variant no difference below is tested")
    assert lines[2] == ("Lowest FD-EffNetLite0 (↓) of a single run: zigzag-8 at 30.0 (n = 1), against the baseline "
                        "sweep-1 at 40.0 (n = 1): −10.0 (−25.0%), untested (fewer than two seeds on a side).")


def test_a_study_missing_a_single_trial_is_partial(tmp_path):
    folder = write_results_study(tmp_path, SCANS, _results)
    d = next(d for d in sorted((folder / "trials").iterdir())
             if json.loads((d / "results.json").read_text())["params"]["scan.name"] == "hilbert-8")
    shutil.rmtree(d)                                             # 8 of 9 finished
    lines = _answer(folder, tmp_path / "report")
    assert lines[0].startswith("Partial study: 8 of 9 trials finished (1 never ran); 2–3 finished seeds per variant")


def test_a_partial_study_whose_baseline_never_ran_says_nothing_is_compared_with_it(tmp_path):
    folder = write_results_study(tmp_path, SCANS, _results)
    for d in (folder / "trials").iterdir():
        if json.loads((d / "results.json").read_text())["params"]["scan.name"] == "sweep-1":
            shutil.rmtree(d)
    lines = _answer(folder, tmp_path / "report")
    assert "The baseline sweep-1 has no finished trial, so no variant is compared with it." in lines


OBJECTIVES = """\
name: toy_objectives
base:
  dataset: {name: digits}
  backbone: {name: zigma, size: tiny}
  eval: {num_samples: 64, metrics: [fd-effnet]}
axes:
  - {interpolant.prediction: [velocity, noise], sampler: [{name: euler, steps: 4}]}
  - {interpolant.prediction: [velocity], sampler: [{name: heun, steps: 2}]}
seeds: [0, 1]
baseline: {interpolant.prediction: velocity, sampler: {name: euler, steps: 4}}
"""
#: final train loss per seed: the noise target's loss is a different quantity, far below the velocity loss
LOSS = {("velocity", "euler"): [0.30, 0.32], ("noise", "euler"): [0.05, 0.07], ("velocity", "heun"): [0.34, 0.36]}


def test_a_train_loss_is_compared_only_between_variants_of_one_training_objective(tmp_path):
    def results(spec):
        key = (spec.params["interpolant.prediction"], spec.params["sampler"]["name"])
        return {"fd-effnet": 10.0 + spec.seed, "final_train_loss": LOSS[key][spec.seed]}

    folder = write_results_study(tmp_path, OBJECTIVES, results)
    out = build_report(folder, tmp_path / "report")
    rows = {r["label"]: r["metrics"]["final_train_loss"]
            for r in json.loads((out / "summary.json").read_text())["tables"][0]["rows"]}
    noise = next(v for k, v in rows.items() if "noise" in k)
    heun = next(v for k, v in rows.items() if "heun" in k)
    assert noise["delta"] is None and noise["p_welch"] is None            # another objective: no Δ, no test
    assert heun["delta"] == pytest.approx(0.35 - 0.31)                    # same objective as the baseline
    assert not any(v["best"] for v in rows.values())                      # 0.06 is not the 'best' loss
    assert "interpolant.prediction change" in (out / "README.md").read_text()


def test_the_front_of_the_means_keeps_exactly_the_points_no_other_beats_on_both_axes():
    # (cost, quality), both lower is better: (1, 5) (2, 3) (4, 1) trade off; (3, 4) is beaten by (2, 3); the
    # duplicate (2, 3) ties and stays; (4, 2) is beaten by (4, 1) at equal cost
    pts = [(Cell(x, 1.0, 3), Cell(y, 1.0, 3)) for x, y in [(1, 5), (2, 3), (3, 4), (4, 1), (2, 3), (4, 2)]]
    assert means_front(pts, x_higher=False, y_higher=False) == [0, 1, 3, 4]
    # quality higher is better instead: (1, 5) is the cheapest and the best, so it alone is on the front
    assert means_front(pts, x_higher=False, y_higher=True) == [0]


def test_a_pareto_plot_of_many_seeds_joins_only_the_front_of_the_means(tmp_path):
    out = build_report(write_results_study(tmp_path, SCANS, _results), tmp_path / "report")
    pareto = json.loads((out / "summary.json").read_text())["pareto"]
    # means (latency, FD): sweep-1 (2.0, 40), hilbert-8 (2.2, 33), zigzag-8 (2.5, 31): each trades off
    assert pareto["front_of_means"] == ["sweep-1", "zigzag-8", "hilbert-8"]


def test_a_steeply_falling_train_loss_is_drawn_on_log_y(monkeypatch):
    from harness.report import plots
    from harness.report.tables import MetricInfo

    monkeypatch.setattr(plots, "png_bytes", lambda draw: draw().axes[0].get_yscale())
    info = MetricInfo("train_loss", "Train loss", "", False, "quality")
    falls = {"a": [[(1, 1.6), (2, 0.4)]]}                    # 4-fold: the end would be squashed on linear y
    flat = {"a": [[(1, 0.5), (2, 0.3)]]}
    assert plots.history_plot(falls, info, {"a": 1}) == "log"
    assert plots.history_plot(flat, info, {"a": 1}) == "linear"


VIDEO = """\
name: toy_video
base:
  dataset: {name: digits}
  backbone: {name: zigma, size: tiny}
  eval: {num_samples: 64, metrics: [fd-effnet]}
axes:
  scan.name: [sweep-1, zigzag-8]
seeds: [0]
"""


def test_a_video_study_counts_its_samples_as_videos_in_the_header_and_the_notes(tmp_path):
    folder = write_results_study(tmp_path, VIDEO, lambda spec: {
        "fd-effnet": 5.0, "data_frames": 8, "data_num_train": 20, "data_num_reference": 10,
        "train_images_per_s": 3.0 if spec.params["scan.name"] == "sweep-1" else 4.0})
    out = build_report(folder, tmp_path / "report")
    readme = (out / "README.md").read_text()
    assert "(20 train / 10 reference videos)" in readme
    assert "each sample is a video of 8 frames: 'img' in the cost units" in readme


def test_an_error_bar_stops_where_its_metric_ends_and_the_caption_says_so_only_then():
    from harness.report import plots
    from harness.report.figures import _cut_note
    from harness.report.tables import MetricInfo
    assert plots._err(0.2, 0.9, (0.0, 1.0)) == [[0.2], [pytest.approx(0.1)]]   # 0.9 + 0.2 would pass 1
    assert plots._err(0.3, 0.1, (0.0, None)) == [[0.1], [0.3]]                 # an FD cannot go below 0
    assert plots._err(0.2, 0.5, (0.0, 1.0)) == [[0.2], [0.2]]
    assert plots._err(0.2) == 0.2 and plots._err(float("nan"), 0.5, (0.0, 1.0)) is None
    acc = MetricInfo("cond-accuracy", "cond. accuracy", "", True, "quality", bounds=(0.0, 1.0))
    assert _cut_note(acc, [Cell(0.852, 0.199, 3), Cell(0.998, 0.003, 3)]) == \
        "; a bar stops where cond. accuracy ends ([0, 1])"                     # 0.852 + 0.199 = 1.051
    assert _cut_note(acc, [Cell(0.5, 0.1, 3), Cell(0.998, 0.001, 3)]) == ""
    assert _cut_note(MetricInfo("fd", "FD", "", False, "quality"), [Cell(1.0, 5.0, 3)]) == ""


#: a second quality metric: frame FD's leader is sweep-2; temporal FD's lowest mean is video-sst's (worked by hand:
#: video-sst 20, sweep-2 40, zigzag-3d 60) -- the metrics disagree; with KID ordered like FD they agree
VIDEO = """\
name: toy_two_metrics
base:
  dataset: {name: moving-digits, resolution: 16, frames: 4}
  backbone: {name: zigma, size: tiny, patch_size: 4}
  eval: {num_samples: 64, metrics: [frame-fd, temporal-fd]}
axes:
  scan.name: [video-sst, zigzag-3d, sweep-2]
seeds: [0, 1]
baseline: {scan.name: sweep-2}
"""
FRAME = {"video-sst": [101.0, 103.0], "zigzag-3d": [83.0, 85.0], "sweep-2": [73.0, 75.0]}
TEMPORAL = {"video-sst": [19.0, 21.0], "zigzag-3d": [59.0, 61.0], "sweep-2": [39.0, 41.0]}


def _video_answer(tmp_path, study: str) -> list[str]:
    """The answer of the toy video study `study` with FRAME and TEMPORAL as its per-seed values."""
    return _answer(write_results_study(tmp_path, study, lambda s: {
        "frame-fd": FRAME[s.params["scan.name"]][s.seed], "temporal-fd": TEMPORAL[s.params["scan.name"]][s.seed]}),
        tmp_path / "report")


def test_a_second_quality_metric_that_picks_another_variant_is_said_to_disagree(tmp_path):
    lines = _video_answer(tmp_path, VIDEO)
    assert lines[1].startswith("Lowest mean FD-EffNetLite0 per frame (↓): sweep-2 at 74")
    (line,) = [x for x in lines if x.startswith("On ")]
    # the pair's test, independently: Welch on the raw seeds, then Holm over temporal FD's 3 pairs by hand
    from scipy import stats

    t = TEMPORAL
    p = sorted(stats.ttest_ind(t[a], t[b], equal_var=False).pvalue
               for a, b in (("video-sst", "sweep-2"), ("video-sst", "zigzag-3d"), ("zigzag-3d", "sweep-2")))
    holm = max(3 * p[0], 2 * p[1])          # video-sst vs sweep-2 (t = 14.1) is the 2nd smallest, tied with the 3rd
    assert stats.ttest_ind(t["video-sst"], t["sweep-2"], equal_var=False).pvalue == pytest.approx(p[1])
    assert line == ("On FD-EffNetLite0 of frame changes (↓) the lowest mean is video-sst's, 20.0 ± 1.4 (n = 2), not "
                    "sweep-2's (40.0 ± 1.4 (n = 2)): the quality metrics do not pick the same variant by their means "
                    f"(video-sst vs sweep-2 on FD-EffNetLite0 of frame changes: beyond the seed noise, Holm-adjusted "
                    f"p = {holm:.2g} over its 3 pairs).")
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "differ in FD-EffNetLite0 per frame beyond the seed noise" in readme      # the objective's pairs first
    assert readme.index("in FD-EffNetLite0 per frame beyond") < readme.index("in FD-EffNetLite0 of frame changes "
                                                                              "beyond")
    assert "| video-sst | zigzag-3d | −40.0 |" in readme          # temporal FD's pairs, a − b by hand


def test_a_second_quality_metric_with_the_same_leader_says_so(tmp_path):
    kid = {"sweep-1": 0.40, "zigzag-8": 0.30, "hilbert-8": 0.35}
    lines = _answer(write_results_study(tmp_path, SCANS.replace("[fd-effnet]", "[fd-effnet, kid]"), lambda s: {
        **_results(s), "kid": kid[s.params["scan.name"]] + 0.01 * s.seed}), tmp_path / "report")
    (line,) = [x for x in lines if x.startswith("On ")]
    assert line.startswith("On KID-EffNetLite0 (↓) zigzag-8 has the lowest mean too: 0.31")


def test_one_seed_a_variant_gives_values_not_means_and_no_noise_claim(tmp_path):
    study = VIDEO.replace("seeds: [0, 1]", "seeds: [0]")
    lines = _video_answer(tmp_path, study)
    (line,) = [x for x in lines if x.startswith("On ")]
    # by hand: temporal FD seed 0 -- video-sst 19, sweep-2 39 (frame FD's lowest, 73)
    assert line.startswith("On FD-EffNetLite0 of frame changes (↓) the lowest value is video-sst's, 19")
    assert line.endswith("do not pick the same variant by their values (one seed a variant: no difference is "
                         "tested).")


def test_with_two_variants_the_other_metric_line_cites_the_tables_test_against_the_baseline(tmp_path):
    from scipy import stats

    study = VIDEO.replace("[video-sst, zigzag-3d, sweep-2]", "[video-sst, sweep-2]")
    lines = _video_answer(tmp_path, study)
    (line,) = [x for x in lines if x.startswith("On ")]
    p = stats.ttest_ind(TEMPORAL["video-sst"], TEMPORAL["sweep-2"], equal_var=False).pvalue   # one test: Holm = p
    assert line.endswith(f"(video-sst vs sweep-2 on FD-EffNetLite0 of frame changes: beyond the seed noise, "
                         f"Holm-adjusted p = {p:.2g} in the table's test against the baseline).")
