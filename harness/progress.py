"""Progress of `harness run` / `harness worker`: rich bars on a terminal, one line per event when quiet."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Self

from optuna.trial import FrozenTrial
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from harness.runner import WorkerHooks
from harness.study import TrialSpec
from harness.trial import TrialHooks

__all__ = ["LineProgress", "RichProgress", "left_text"]

#: () -> (trials left, median seconds of a done trial, trials done) or None: harness.runner.time_left
Left = Callable[[], "tuple[int, float, int] | None"]


def left_text(rough: tuple[int, float, int] | None) -> str:
    """'about 12 min left' from (trials left, median seconds per trial, done); '' before any trial is done."""
    if rough is None:
        return ""
    seconds = rough[0] * rough[1]
    return "under a minute left" if seconds < 60 else f"about {seconds / 60:.0f} min left"


class _StudyEta(ProgressColumn):
    """The study bar's time left from the done trials' median time (rich's own estimate needs a completion in
    the last 30 s); other bars get rich's estimate."""

    def __init__(self) -> None:
        super().__init__()
        self.rich = TimeRemainingColumn()

    def render(self, task: Task) -> Text:
        if "left" in task.fields:
            rough = task.fields["left"]
            text = "-" if rough is None else "<1 min" if rough[0] * rough[1] < 60 else \
                f"~{rough[0] * rough[1] / 60:.0f} min"
            return Text(text, style="progress.remaining")
        return self.rich.render(task)


class LineProgress:
    """One line per trial start and end (CI logs, worker processes); `prefix` tells workers apart."""

    def __init__(self, prefix: str = "", total: Callable[[], dict[str, int]] | None = None,
                 left: Left | None = None) -> None:
        self.prefix, self.total, self.left, self._t0 = prefix, total, left, 0.0

    def say(self, msg: str) -> None:
        print(f"{self.prefix}{msg}", flush=True)

    def hooks(self) -> WorkerHooks:
        def started(frozen: FrozenTrial, spec: TrialSpec) -> None:
            self._t0 = time.perf_counter()
            attempt = len(frozen.user_attrs.get("attempts", [])) + 1
            self.say(f"trial {frozen.number} [{spec.key}] {spec.label}: started"
                     + (f" (attempt {attempt})" if attempt > 1 else ""))

        def finished(spec: TrialSpec, status: str, detail: str) -> None:
            counts = self.total() if self.total else None
            eta = left_text(self.left()) if self.left else ""
            done = f" [{counts['done']}/{counts['total']} done{', ' + eta if eta else ''}]" if counts else ""
            took = time.perf_counter() - self._t0
            self.say(f"[{spec.key}] {spec.label}: {status} {detail} ({took:.1f} s){done}")

        return WorkerHooks(started=started, finished=finished, trial=TrialHooks)


class RichProgress:
    """A study bar (trials done of total) and a bar for the running trial's phase (train, sample, metrics), each
    with elapsed time and rich's estimate of the time remaining."""

    def __init__(self, total: Callable[[], dict[str, int]], left: Left | None = None) -> None:
        self.total, self.left = total, left
        self.console = Console(file=sys.stderr)
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[info]}", markup=False),
                                 TimeElapsedColumn(), TextColumn("eta"), _StudyEta(),
                                 console=self.console, transient=False)
        c = total()
        self.study_task = self.progress.add_task("study", total=c["total"], completed=c["done"], info="",
                                                 **({"left": left()} if left else {}))
        self.trial_task = self.progress.add_task("", total=None, info="", visible=False)

    def _trial_bar(self, description: str, total: int | None, info: str) -> None:
        """A fresh bar for the running trial's phase: its own count (or none), elapsed time and eta."""
        self.progress.remove_task(self.trial_task)
        self.trial_task = self.progress.add_task(description, total=total, info=info)

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def say(self, msg: str) -> None:
        self.progress.console.print(msg, highlight=False, markup=False)

    def refresh(self) -> None:
        c = self.total()
        finished = c["done"] + c["failed"] + c["pruned"]
        self.progress.update(self.study_task, total=c["total"], completed=finished,
                             info=f"{c['done']} done, {c['failed']} failed, {c['running']} running",
                             **({"left": self.left()} if self.left else {}))

    def hooks(self) -> WorkerHooks:
        label = {"trial": ""}

        def started(frozen: FrozenTrial, spec: TrialSpec) -> None:
            label["trial"] = spec.label
            self._trial_bar(spec.label, None, "")
            self.refresh()

        def finished(spec: TrialSpec, status: str, detail: str) -> None:
            colour = {"completed": "green", "failed": "red"}.get(status, "yellow")
            self.progress.console.print(f"[{colour}]{status}[/{colour}] "
                                        + escape(f"{spec.label} [{spec.key}] {detail}"), highlight=False)
            self.refresh()

        def trial_hooks() -> TrialHooks:
            current = {"phase": ""}

            def phase(name: str, total: int | None) -> None:
                current["phase"] = name
                self._trial_bar(label["trial"], total, name)

            def advance(completed: int, info: str) -> None:
                self.progress.update(self.trial_task, completed=completed, info=f"{current['phase']} {info}")

            return TrialHooks(phase=phase, advance=advance)

        return WorkerHooks(started=started, finished=finished, trial=trial_hooks)
