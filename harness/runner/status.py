"""The standing of a study's trials as a table: done / running / failed (with reason) / pending."""

from __future__ import annotations

import statistics

from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["print_status", "time_left"]

_STYLE = {"COMPLETE": "green", "FAIL": "red", "RUNNING": "yellow", "WAITING": "dim", "PRUNED": "magenta"}
_NAME = {"COMPLETE": "done", "FAIL": "failed", "RUNNING": "running", "WAITING": "pending", "PRUNED": "pruned"}


def print_status(session, *, brief: bool = False, console: Console | None = None) -> None:
    """A table of the trial standing for each combination, then the counts."""
    from harness import queue, runner

    console = console or Console()
    trials = session.optuna.get_trials(deepcopy=False)
    current, other = runner.current_trials(session)
    c = runner.counts(session)
    order = list(session.specs) or [t.user_attrs.get("trial_key") for t in trials]
    rank = {k: i for i, k in enumerate(order)}
    rows = sorted(current.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[1].number))
    if not brief:
        metric = session.study.objective.metric
        table = Table(title=escape(f"{session.study.name} ({session.folder})"), title_justify="left")
        for col in ("#", "key", "trial", "state", metric, "took", "worker"):
            table.add_column(col, overflow="fold", no_wrap=col in ("#", "key", "took"))
        for key, t in rows:
            state = t.state.name
            dead = state == "RUNNING" and queue.worker_died(t)
            state = "WAITING" if dead else state
            w = t.user_attrs.get("worker", {})
            value = f"{t.value:.4g}" if t.value is not None else ""
            tries = len(t.user_attrs.get("attempts", [])) + 1
            label = "worker died: re-queued" if dead else _NAME[state] + (f" (try {tries})" if tries > 1 else "")
            table.add_row(str(t.number), escape(str(key)), escape(str(t.user_attrs.get("label", ""))),
                          f"[{_STYLE[state]}]{label}[/{_STYLE[state]}]", value, "" if dead else _took(t),
                          f"{w.get('host')}:{w.get('pid')}" if w else "")
        console.print(table)
    for key, t in rows:
        if t.state.name in ("FAIL", "PRUNED"):
            reason = t.user_attrs.get("failure", "(no reason recorded)")
            console.print(f"{_NAME[t.state.name]}: {t.user_attrs.get('label', key)} [{key}]: {reason}",
                          highlight=False, soft_wrap=True, markup=False)
    console.print(f"{session.study.name}: {c['done']} done, {c['running']} running, {c['failed']} failed, "
                  f"{c['pruned']} pruned, {c['pending']} pending (of {c['total']})"
                  + (f"; {other} more from an earlier version of the study file" if other else ""),
                  highlight=False, markup=False)
    if (rough := time_left(session)) is not None:
        left, pace, n = rough
        console.print(f"{left} trial(s) left; at the median wall-clock time of the {n} done "
                      f"({pace:.0f} s, start to end as they ran, a worker's start-up and any shared device "
                      f"included), about {left * pace / 60:.0f} worker-minute(s); a rough guide, as variants "
                      "differ in cost", highlight=False, markup=False)


def _took(t) -> str:
    """A finished trial's wall-clock time from its (last) start to its end, as it ran; a running one's so far."""
    import datetime

    if t.datetime_start is None:
        return ""
    end = t.datetime_complete
    if end is None and t.state.name != "RUNNING":
        return ""
    seconds = ((end or datetime.datetime.now()) - t.datetime_start).total_seconds()
    text = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return text if end is not None else f"{text} so far"


def time_left(session) -> tuple[int, float, int] | None:
    """(trials pending or running, the median start-to-end seconds of the study's done trials, how many are done);
    None when nothing is left or nothing is done yet."""
    from harness import runner

    c = runner.counts(session)
    left = c["pending"] + c["running"]
    took = [(t.datetime_complete - t.datetime_start).total_seconds()
            for t in runner.current_trials(session)[0].values()
            if t.state.name == "COMPLETE" and t.datetime_start and t.datetime_complete]
    return (left, statistics.median(took), len(took)) if left and took else None
