"""The error a trial ends with when it has no result; the runner records its reason and the study goes on."""

from __future__ import annotations

__all__ = ["TrialFailed"]


class TrialFailed(Exception):
    """A trial ended without a result (non-finite loss, out of memory, memory limit); `step`: where."""

    def __init__(self, reason: str, *, step: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.step = reason, step
