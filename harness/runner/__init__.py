"""The runner: a study becomes an Optuna study (session.py: storage, queue, counts), workers claim and run its
trials (worker.py), and its standing is shown as a table (status.py)."""

from harness.runner.session import (
           Session,
           counts,
           current_trials,
           load_from_storage,
           open_session,
           prepare,
           study_file_text,
)
from harness.runner.status import print_status, time_left
from harness.runner.worker import (
           MAX_AUTO_ATTEMPTS,
           WorkerHooks,
           WorkerStopped,
           expected_trial_seconds,
           run_one,
           run_worker,
           time_left_for_a_trial,
)

__all__ = ["MAX_AUTO_ATTEMPTS", "Session", "WorkerHooks", "WorkerStopped", "counts", "current_trials",
           "expected_trial_seconds", "load_from_storage", "open_session", "prepare", "print_status", "run_one",
           "run_worker", "study_file_text", "time_left", "time_left_for_a_trial"]
