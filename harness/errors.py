"""The error a trial ends with when it has no result; the runner records its reason and the study goes on."""

from __future__ import annotations

__all__ = ["TrialFailed", "failure_reason"]


class TrialFailed(Exception):
    """A trial ended without a result (non-finite loss, out of memory, memory limit); `step`: where; `detail`:
    more for the trial's error.txt (a distributed trial: the failing rank's traceback)."""

    def __init__(self, reason: str, *, step: int | None = None, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.step, self.detail = reason, step, detail


def failure_reason(exc: BaseException) -> str:
    """The one line a failed trial is recorded with: TrialFailed's reason, else 'Type: message' (first line)."""
    reason = exc.reason if isinstance(exc, TrialFailed) else f"{type(exc).__name__}: {exc}"
    return reason.strip().splitlines()[0] if reason.strip() else type(exc).__name__
