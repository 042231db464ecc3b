"""`python -m harness.launch_ranks <torchrun options> -m harness.rank TICKET`: torch.distributed.run (torchrun) as it
is, which also records how each failed rank ended (exit code or signal, pid) as JSON in the file named by
$ZIGMA_HARNESS_TORCHRUN_FAILURES, for the worker that started it (harness/runner/torchrun.py). It gets SIGTERM when
that worker dies (Linux PR_SET_PDEATHSIG), and torchrun's agent then stops every rank: no rank outlives its worker.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1


def _end_with_parent() -> None:
    """SIGTERM to this process when the worker ($ZIGMA_HARNESS_TORCHRUN_PARENT) ends (Linux; a no-op elsewhere)."""
    parent = os.environ.get("ZIGMA_HARNESS_TORCHRUN_PARENT")
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):                     # it ended before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _write(record: dict[str, Any]) -> None:
    path = os.environ.get("ZIGMA_HARNESS_TORCHRUN_FAILURES")
    if path:
        Path(path).write_text(json.dumps(record, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    _end_with_parent()
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(sys.argv[1:] if argv is None else argv))
    except ChildFailedError as exc:
        _write({"failures": {str(rank): {"exitcode": f.exitcode, "pid": f.pid, "local_rank": f.local_rank,
                                         "message": str(f.message)[:2000]} for rank, f in exc.failures.items()}})
        return 1
    except SignalException as exc:
        _write({"error": f"the launcher was stopped by {signal.Signals(exc.sigval).name}"})
        return 1
    except Exception as exc:  # rendezvous and agent errors: recorded for the worker, then shown
        text = str(exc).strip()
        _write({"error": f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"})
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
