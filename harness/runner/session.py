"""Opening a study's storage: the Optuna study and MLflow experiment of a study, the coordinator's queue, and the
standing of its trials (counts, status). Workers claim from it in harness/runner/worker.py."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from harness import queue
from harness.study import LoadedStudy, Study, TrialSpec, as_loaded, expand_trials
from harness.tracking import Tracker, default_tracking_uri
from plugins.errors import HarnessError, suggest

__all__ = ["Session", "counts", "current_trials", "load_from_storage", "open_session", "prepare", "study_file_text"]

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


@dataclass
class Session:
    """One process's view of a study: schema (with its source), Optuna study, tracker and folder."""

    loaded: LoadedStudy
    optuna: optuna.Study
    tracker: Tracker | None          # None for read-only views (`harness status`)
    folder: Path
    parent_run_id: str
    specs: dict[str, TrialSpec] = field(default_factory=dict)    # grid: trial_key -> spec
    storage: str | None = None       # as given (None: the journal in `folder`); ranks of a trial open it again

    @property
    def study(self) -> Study:
        return self.loaded.study

    @property
    def is_search(self) -> bool:
        return self.study.search is not None


def _sampler(study: Study, worker_index: int) -> optuna.samplers.BaseSampler:
    """The search sampler, seeded per worker so concurrent workers do not propose the same point."""
    seed = (study.seeds[0] * 1000 + worker_index) % 2**32   # samplers take 32-bit seeds
    kind = study.search.sampler if study.search is not None else "tpe"
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise HarnessError(f"unknown search sampler {kind!r}")


def _pruner(study: Study) -> optuna.pruners.BasePruner:
    if study.objective.prune:
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def open_session(study: Study | LoadedStudy, *, folder: Path, storage: str | None, tracking_uri: str | None,
                 worker_index: int = 0, create: bool = False, track: bool = True) -> Session:
    """Open (create=True: create) the Optuna study and (track=True) the MLflow experiment of `study`."""
    loaded = as_loaded(study)
    study = loaded.study
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    store = queue.open_storage(storage, folder)
    kwargs = dict(study_name=study.name, storage=store, sampler=_sampler(study, worker_index),
                  pruner=_pruner(study))
    if create:
        osd = optuna.create_study(direction=study.objective.direction, load_if_exists=True, **kwargs)
        if osd.direction.name.lower() != study.objective.direction:
            raise HarnessError(f"study {study.name!r} exists in {queue.storage_label(storage)} with "
                               f"direction {osd.direction.name.lower()}; objective.direction is "
                               f"{study.objective.direction}")
    else:
        try:
            osd = optuna.load_study(**kwargs)
        except KeyError:
            raise HarnessError(f"no study {study.name!r} in {queue.storage_label(storage)}; start it with "
                               "`harness run STUDY.yaml --storage ...` first") from None
    stored = osd.user_attrs.get("tracking_uri")
    if stored == default_tracking_uri(Path(osd.user_attrs.get("out_dir") or folder)):
        stored = None    # the default store follows the study folder, wherever it was moved
    uri = tracking_uri or stored or default_tracking_uri(folder)
    artifacts = folder / "mlartifacts" if uri.startswith("sqlite") else None
    tracker = Tracker(uri, study.name, artifact_root=artifacts) if track else None
    parent = osd.user_attrs.get("mlflow_parent_run_id", "")
    session = Session(loaded, osd, tracker, folder, parent, storage=storage)
    if not session.is_search:
        session.specs = {s.key: s for s in expand_trials(loaded)}
    return session


def study_file_text(text: str, preset: str | None) -> str:
    """The study file as run, with the preset recorded as a top-level `preset:` key."""
    if preset is None:
        return text
    raw = yaml.safe_load(text)
    raw["preset"] = preset
    return f"# written by `harness run --preset {preset}`\n" + yaml.safe_dump(raw, sort_keys=False)


def prepare(session: Session, *, yaml_text: str, preset: str | None, retry_failed: bool = False,
            say: Callable[[str], None] = print, devices: set[str] | None = None) -> None:
    """Coordinator work before workers start: study attrs, parent run, dead workers, the queue, retries.
    devices: the devices this run's trials will use ({'cpu'} for CPU workers; None: this machine's GPUs, else the
    CPU), for the note on finished trials that ran elsewhere."""
    osd, study = session.optuna, session.study
    stored = osd.user_attrs.get("study_yaml")
    changed = stored is not None and (stored != yaml_text or osd.user_attrs.get("preset") != preset)
    for k, v in (("study_yaml", yaml_text), ("preset", preset), ("out_dir", str(session.folder)),
                 ("tracking_uri", session.tracker.uri)):
        if osd.user_attrs.get(k) != v:
            osd.set_user_attr(k, v)
    session.parent_run_id = session.tracker.start_study(
        study=study.name, preset=preset, run_id=osd.user_attrs.get("mlflow_parent_run_id"),
        params={"study": study.name, "preset": preset or "", "objective": study.objective.metric})
    osd.set_user_attr("mlflow_parent_run_id", session.parent_run_id)
    session.tracker.keep_study(session.parent_run_id, study_file_text(yaml_text, preset))
    recovered = queue.recover_stale(osd)
    if recovered:
        say(f"re-queued {len(recovered)} trial(s) whose worker died: {recovered}")
    running = osd.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    live = {t.user_attrs.get("mlflow_run_id") for t in running}
    ended = session.tracker.end_orphans(session.parent_run_id, live, "interrupted (runner stopped)")
    if ended:
        say(f"ended {ended} MLflow run(s) left running by an interrupted runner")
    if not session.is_search:
        seed_rank = {s: i for i, s in enumerate(study.seeds)}
        # every variant's first seed first, so a partial study already covers every variant
        specs = sorted(session.specs.values(), key=lambda s: seed_rank[s.seed])
        added = queue.enqueue(osd, specs)
        if added:
            say(f"queued {added} trial(s)")
    if retry_failed:
        say(f"re-queued {queue.retry_failed(osd)} failed trial(s)")
    if changed:    # a trial's key is its axis values, seed and resolved configuration
        other = current_trials(session)[1]
        say(f"note: the study file (or preset) changed since {study.name!r} started: finished trials whose "
            "configuration it still gives are kept"
            + (f"; {other} recorded under the earlier file ran another configuration (a changed base setting or "
               "axis value makes a new trial) and are left out of the counts and the report" if other else ""))
    if stored is not None:      # a rerun: say where the study stands before its trials start
        if note := card_note(session.folder, devices):
            say(note)
        c = counts(session)
        say(f"resuming {study.name}: {c['done']} of {c['total']} done, {c['pending'] + c['running']} to run"
            + (f", {c['failed'] + c['pruned']} failed or pruned (--retry-failed runs them again)"
               if c["failed"] + c["pruned"] else ""))


def card_note(folder: Path, here: set[str] | None = None) -> str | None:
    """A note when the study's finished trials ran on cards this machine does not have (`here`: its CUDA device
    names, or {'cpu'}): continuing mixes devices in the cost columns."""
    import json

    finished = set()
    for prov in folder.glob("trials/*/provenance.json"):
        if (prov.parent / "results.json").exists():
            try:
                info = json.loads(prov.read_text()).get("device_info") or {}
            except (OSError, ValueError):
                continue
            finished.add(info.get("gpu") or info.get("device") or "unrecorded")
    finished.discard("unrecorded")
    if here is None:
        import torch

        here = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())} or {"cpu"}
    if not finished or finished <= here:
        return None
    return (f"note: finished trials ran on {', '.join(sorted(finished))}; this machine has {', '.join(sorted(here))}:"
            " the trials run here put another device in the cost columns (throughput, latency, memory), and the "
            "report will say how many trials ran on each")


def current_trials(session: Session) -> tuple[dict[str, FrozenTrial], int]:
    """(trial_key -> the trial standing for it, number of keys from an earlier version of the study file).
    Trial keys include the resolved config, so editing the file (or another preset) makes new keys."""
    trials = session.optuna.get_trials(deepcopy=False)
    latest = queue.latest_by_key(trials)
    if session.is_search:  # every sampled trial counts, also one that failed before it had a key
        gone, out = queue.superseded(trials), {}
        for t in trials:
            if t.number in gone or "duplicate_of" in t.user_attrs:
                continue
            key = t.user_attrs.get("trial_key")
            out[key if key is not None and latest.get(key) is t else f"#{t.number}"] = t
        return out, 0
    current = {k: t for k, t in latest.items() if k in session.specs}
    return current, len(latest) - len(current)


def counts(session: Session) -> dict[str, int]:
    """done / failed / pruned / running / pending of this study file's trials (or of the search budget)."""
    current = list(current_trials(session)[0].values())
    out = {"done": 0, "failed": 0, "pruned": 0, "running": 0, "pending": 0}
    names = {TrialState.COMPLETE: "done", TrialState.FAIL: "failed", TrialState.PRUNED: "pruned",
             TrialState.RUNNING: "running", TrialState.WAITING: "pending"}
    for t in current:  # a trial whose worker died is not running: the next `harness run` queues it again
        out["pending" if queue.worker_died(t) else names[t.state]] += 1
    if session.is_search:
        out["pending"] += max(0, session.study.search.n_trials - len(current))
    else:
        out["pending"] += len(set(session.specs) - {t.user_attrs.get("trial_key") for t in current})
    out["total"] = sum(out.values())
    return out


def load_from_storage(storage: str, name: str, out: Path | None) -> tuple[LoadedStudy, Path]:
    """(Study, study folder) from the YAML text and preset kept in the Optuna study's user attrs."""
    from harness.study import parse_study, read_yaml

    journal = Path(storage) / queue.JOURNAL if Path(storage).is_dir() else Path(storage)
    if "://" not in storage and not journal.is_file():   # opening it would leave an empty journal there
        raise HarnessError(f"--storage: no Optuna journal at {journal}; give the study folder or journal that "
                           "`harness run` wrote")
    store = queue.open_storage(storage, Path(out or ".") / name)
    try:
        attrs = optuna.load_study(study_name=name, storage=store).user_attrs
    except KeyError:
        names = optuna.get_all_study_names(store)
        raise HarnessError(f"{queue.storage_label(storage)}: {suggest(name, names, what='study')} (a study that "
                           "has not run yet starts with `harness run STUDY.yaml --storage ...`)") from None
    if "study_yaml" not in attrs:
        raise HarnessError(f"study {name!r} in {queue.storage_label(storage)} was not created by "
                           "`harness run`")
    source = f"{name} (study file kept in the storage)"
    study = parse_study(read_yaml(attrs["study_yaml"], source), preset=attrs.get("preset"), source=source)
    folder = (Path(out) / name) if out is not None else Path(attrs.get("out_dir") or Path("runs") / name)
    return study, folder
