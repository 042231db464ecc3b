"""`python -m harness.rank TICKET`: one rank of a distributed trial, started by torchrun (harness/runner/torchrun.py
writes the ticket and launches it).

Every rank joins the group (harness/distributed.py) and runs the trial's code (harness/trial.py) with its share of
the work. Rank 0 alone reaches the study: it opens the Optuna storage and the MLflow store named in the ticket,
logs and reports through the same hooks as a worker (harness/runner/worker.py: tracking_hooks), and writes
`outcome.json` (completed with the results, or pruned) beside the ticket. A rank that raises writes
`rank<r>.json` (the one-line reason, its traceback and the time) and exits non-zero, so torchrun stops the others.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from torch.distributed.elastic.multiprocessing.errors import record


def _spec(ticket: dict[str, Any]) -> Any:
    from harness.study import TrialConfig, TrialSpec
    spec = TrialSpec(params=ticket["params"], seed=ticket["seed"],
                     config=TrialConfig.model_validate(ticket["config"]), origin=ticket.get("origin") or {})
    if spec.key != ticket["key"]:
        raise RuntimeError(f"the ticket's trial resolves to key {spec.key}, not {ticket['key']} (version mismatch "
                           "between the worker and its ranks?)")
    return spec


def _talk(ticket: dict[str, Any], spec: Any, hooks: Any) -> Any:
    """Rank 0: hooks logging to the trial's MLflow run and reporting to its Optuna trial; returns the buffer."""
    import optuna

    from harness.runner import load_from_storage, open_session
    from harness.runner.worker import tracking_hooks
    talk = ticket["talk"]
    loaded, folder = load_from_storage(talk["storage"], talk["study"], Path(talk["runs"]))
    session = open_session(loaded, folder=folder, storage=talk["storage"], tracking_uri=talk["tracking_uri"])
    trial = optuna.Trial(session.optuna, talk["trial_id"])
    return tracking_hooks(session, trial, talk["run_id"], spec, hooks)


def _write(path: Path, blob: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(blob, indent=2, default=str))
    os.replace(tmp, path)


@record
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ticket_path = Path(argv[0])
    ticket = json.loads(ticket_path.read_text())
    out = Path(ticket["trial_dir"]) / "torchrun"                 # rank errors and the outcome, for the worker
    out.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    ranks = buffer = None
    failed = False
    try:
        from harness.distributed import RankStopped, init_ranks
        ranks = init_ranks()                                     # before anything starts CUDA
        import optuna

        from harness.trial import TrialHooks, run_trial
        from plugins.registry import load_registries
        spec = _spec(ticket)
        hooks = TrialHooks()
        if ranks.lead and ticket.get("talk"):
            buffer = _talk(ticket, spec, hooks)
        try:
            result = run_trial(spec, load_registries(), trial_dir=Path(ticket["trial_dir"]), device=ranks.device,
                               cache_dir=Path(ticket["cache_dir"]), hooks=hooks, source=ticket["source"],
                               ranks=ranks)
        except RankStopped:
            return 0                                             # rank 0 ended the trial and says how
        except optuna.TrialPruned as exc:
            _write(out / "outcome.json", {"status": "pruned", "reason": str(exc)})
            return 0
        if ranks.lead:
            _write(out / "outcome.json", {"status": "completed", "result": result})
        return 0
    except BaseException as exc:
        failed = True
        from harness.errors import failure_reason
        _write(out / f"rank{rank}.json", {"rank": rank, "reason": failure_reason(exc), "time": time.time(),
                                          "traceback": traceback.format_exc()})
        raise
    finally:
        if buffer is not None:
            buffer.flush()
        if ranks is not None and not failed:                     # after an error torchrun stops the group
            ranks.close()


if __name__ == "__main__":
    sys.exit(main())
