"""Progress of `harness run` (harness/progress.py): the time-left text, the one-line-per-trial output and the
rich bars' clocks."""

from __future__ import annotations

import math
import time
import types

from rich.progress import Progress

from harness.progress import LineProgress, RichProgress, _StudyEta, left_text
from harness.trial import loss_text

COUNTS = {"done": 3, "failed": 0, "pruned": 0, "running": 1, "pending": 4, "total": 8}


def test_time_left_is_the_trials_left_times_the_median_trial_time():
    assert left_text((5, 120.0, 3)) == "about 10 min left"           # 5 x 120 s = 600 s


def test_time_left_under_a_minute_says_so():
    assert left_text((1, 40.0, 2)) == "under a minute left"


def test_time_left_is_empty_before_any_trial_is_done():
    assert left_text(None) == ""


def test_the_loss_is_left_out_before_the_first_log_point_reads_one():
    assert loss_text(math.nan) == "" and loss_text(0.25) == "loss 0.2500"


def test_a_finished_trial_line_says_how_many_are_done_and_the_time_left(capsys):
    line = LineProgress(total=lambda: COUNTS, left=lambda: (5, 120.0, 3))
    spec = types.SimpleNamespace(key="abc", label="scan.name=zigzag-8 seed=0")
    line.hooks().finished(spec, "completed", "fd=1")
    assert capsys.readouterr().out.rstrip().endswith("[3/8 done, about 10 min left]")


def test_the_study_bar_shows_the_time_left_from_done_trials_not_rich_s_estimate():
    progress = Progress()
    task = progress._tasks[progress.add_task("study", total=8, completed=3, left="about 10 min left")]  # noqa: SLF001
    assert _StudyEta().render(task).plain == "about 10 min left"


def test_the_trial_bar_clock_starts_again_at_each_trial():
    bars = RichProgress(lambda: COUNTS)
    hooks = bars.hooks()
    task = bars.progress._tasks[bars.trial_task]                              # noqa: SLF001
    hooks.started(None, types.SimpleNamespace(label="first", key="a"))
    first = task.start_time
    time.sleep(0.05)
    hooks.started(None, types.SimpleNamespace(label="second", key="b"))
    assert task.start_time >= first + 0.05 and task.description == "second"
