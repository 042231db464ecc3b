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
from harness.runner.status import print_status
from harness.runner.worker import MAX_AUTO_ATTEMPTS, WorkerHooks, WorkerStopped, run_one, run_worker

__all__ = ["MAX_AUTO_ATTEMPTS", "Session", "WorkerHooks", "WorkerStopped", "counts", "current_trials",
           "load_from_storage", "open_session", "prepare", "print_status", "run_one", "run_worker",
           "study_file_text"]
