"""Study throughput: N trials of a study on one device, in this process, today's path ("baseline") beside each
speed-up switch, with the wall time and GPU busy time of every trial phase and trials per GPU-hour.

    python -m benchmarks.study_throughput studies/scan_ablation.yaml --preset smoke --trials 1 \
        --variants baseline,resident --out /tmp/st

Variants are study-key overrides (VARIANTS below); trials run round-robin over the variants (trial i of every
variant, then trial i+1), the same study trials (axis values, seed) for every variant, each in a fresh folder,
tracked in a throwaway MLflow store as the runner tracks them. A warm-up trial (a few steps, full evaluation)
runs first and is reported apart: it pays what a worker pays once (CUDA context, dataset, metric weights,
reference statistics). --budget-s stops starting trials that would not finish in time; results are written after
every trial. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import kernel_mix, phase_clock
from benchmarks.bench_config import STUDY_VARIANTS
from benchmarks.phase_clock import PHASES, PhaseClock, UtilSampler, instrument, kernel_busy_us
from benchmarks.step_probe import GRAPHED, probe_settings, step_probe

_FAST = "max-autotune-no-cudagraphs"
#: name -> (description, dotted overrides; a callable value gets the trial's config as a dict)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "baseline": ("today's defaults", {}),
    "resident": ("training set held on the device", {"train.data_on_device": "on"}),
    "compile": (f"torch.compile {_FAST} of the training model", {"train.compile": _FAST}),
    "compile-ro": ("torch.compile reduce-overhead (CUDA graphs) of the training model",
                   {"train.compile": "reduce-overhead"}),
    "eval-compile": (f"torch.compile {_FAST} of the sampler's model call", {"eval.compile": _FAST}),
    "eval-batch": ("one sampling batch for all samples; feature batches of 500",
                   {"eval.batch_size": lambda c: c["eval"]["num_samples"],
                    "eval.metric_options": lambda c: {m: {**c["eval"]["metric_options"].get(m, {}),
                                                          "batch_size": 500}
                                                      for m in c["eval"]["metrics"] if m != "cond-accuracy"}}),
    "ckpt-async": ("checkpoints written from a background thread", {"train.checkpoint_async": True}),
    "ckpt-end": ("one checkpoint, at the end", {"train.checkpoint_every": lambda c: c["train"]["steps"]}),
    "no-cost": ("without the side cost probe (eval.cost: false)", {"eval.cost": False}),
    "log-batch": ("training metrics sent to MLflow in one batch at the end", {"train.log_buffer": 10**6}),
    "graph": ("the whole training step replayed as one CUDA graph", {"train.cuda_graph": True}),
    "graph-compile": ("graph of the torch.compile'd (mode default) step: Triton kernels in the graph",
                      {"train.cuda_graph": True, "train.compile": "default"}),
    "packed": ("Mamba-1 segments packed one row per sample (segmented video layers)",
               {"backbone.mixer.segment_layout": "packed"}),
    "batch": ("Mamba-1 segments folded into the batch (segmented video layers)",
              {"backbone.mixer.segment_layout": "batch"}),
}
VARIANTS["all"] = ("resident + compile + eval-batch + ckpt-async", {
    k: v for name in ("resident", "compile", "eval-batch", "ckpt-async") for k, v in VARIANTS[name][1].items()})
VARIANTS["fast"] = ("graph + resident + eval-batch + ckpt-async + log-batch", {
    k: v for name in ("graph", "resident", "eval-batch", "ckpt-async", "log-batch") for k, v in VARIANTS[name][1].items()})
VARIANTS["all-eager"] = ("resident + eval-batch + ckpt-async + log-batch, no compile", {
    k: v for name in ("resident", "eval-batch", "ckpt-async", "log-batch") for k, v in VARIANTS[name][1].items()})


def with_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """TrialConfig with dotted keys replaced (validated again)."""
    from harness.study import TrialConfig
    raw = config.model_dump(mode="json")
    for key, value in overrides.items():
        *path, last = key.split(".")
        node = raw
        for part in path:
            node = node[part]
        node[last] = value(raw) if callable(value) else value
    return TrialConfig.model_validate(raw)


class Profiled:
    """Profiles `window` training steps of one trial from step `first`: exact kernel busy time, step time and the
    kernel mix (benchmarks/kernel_mix.py)."""

    def __init__(self, clock: PhaseClock, device: torch.device, first: int, window: int) -> None:
        self.clock, self.device, self.first, self.window = clock, device, first, window
        self.steps, self.prof, self.t0, self.result = 0, None, 0.0, None
        self.armed = device.type == "cuda" and window > 0

    def on_step(self) -> None:
        if not self.armed or "train_loop" not in self.clock.stack or "cost" in self.clock.stack:
            return
        if self.steps == self.first:
            with self.clock.phase("profiler"):
                torch.cuda.synchronize(self.device)
                self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                               torch.profiler.ProfilerActivity.CUDA])
                self.prof.__enter__()
                torch.cuda.synchronize(self.device)
                self.t0 = time.perf_counter()
        elif self.steps == self.first + self.window and self.prof is not None:
            with self.clock.phase("profiler"):
                torch.cuda.synchronize(self.device)
                wall = time.perf_counter() - self.t0
                self.prof.__exit__(None, None, None)
                busy_us, kernels = kernel_busy_us(self.prof)
                mix = kernel_mix.breakdown(((name, hi - lo) for name, lo, hi in kernel_mix.device_events(self.prof)),
                                           self.window)
                self.result = {"steps": self.window, "wall_ms_per_step": 1e3 * wall / self.window,
                               "busy_fraction": busy_us / 1e6 / wall if busy_us > 0 else None,  # None: no CUPTI
                               "kernels_per_step": kernels / self.window, "kernels": mix}
                self.prof, self.armed = None, False
        self.steps += 1


def run_one(spec: Any, registries: Any, *, variant: str, index: int, folder: Path, device: torch.device,
            cache: Path, tracker: Any, parent: str, profile_window: int, steps: int | None = None) -> dict:
    """One instrumented trial; returns its record (phases, utilisation, metrics, profiled window)."""
    from dataclasses import replace

    from harness.cuda_graph import release_cuda_memory
    from harness.metric_buffer import MetricBuffer
    from harness.trial import TrialHooks, run_trial
    overrides = dict(VARIANTS[variant][1])
    if steps is not None:
        overrides.update({"train.steps": steps, "train.checkpoint_every": steps, "train.warmup_steps": 0})
    spec = replace(spec, config=with_overrides(spec.config, overrides))
    from plugins.metrics import clear_fake_feature_cache
    clear_fake_feature_cache()   # exact switches give the same samples; a study's never repeat
    trial_dir = folder / "trials" / f"{variant}-{index}"
    shutil.rmtree(trial_dir, ignore_errors=True)
    clock = PhaseClock(device)
    first = min(max(spec.config.train.steps // 4, 10), max(spec.config.train.steps - profile_window - 1, 0))
    prof = Profiled(clock, device, first, profile_window if spec.config.train.steps > profile_window + 2 else 0)
    with instrument(clock, on_step=prof.on_step), UtilSampler(clock, device) as util:
        clock.start()
        t0 = time.perf_counter()
        with clock.phase("tracking"):
            run_id = tracker.start_trial(parent_id=parent, key=spec.key, label=f"{variant}:{spec.label}",
                                         params={"variant": variant})
        buffer = MetricBuffer(tracker.client, run_id, spec.config.train.log_buffer)   # as harness/runner/worker.py
        try:
            result = run_trial(spec, registries, trial_dir=trial_dir, device=device, cache_dir=cache,
                               hooks=TrialHooks(log=buffer))
        finally:
            buffer.flush()
        tracker.log_metrics(run_id, result["metrics"], spec.config.train.steps)
        tracker.log_artifacts(run_id, [trial_dir / "results.json"])
        tracker.end_trial(run_id, status="completed")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
        phases = clock.stop()
    busy = util.take()
    if device.type == "cuda":                 # as harness.runner.run_worker does between trials
        release_cuda_memory()
    else:
        gc.collect()
    return {"variant": variant, "index": index, "label": spec.label, "seed": spec.seed, "wall_s": wall,
            "phases_s": phases, "util": busy, "profiled_steps": prof.result,
            "metrics": {k: v for k, v in result["metrics"].items()
                        if k in ("final_train_loss", *spec.config.eval.metrics)},
            "train_steps": spec.config.train.steps}


def summarise(records: list[dict], warmup: dict | None, study_trials: int) -> dict:
    """Per variant: mean phase seconds, mean trial wall, trials per GPU-hour, projected study minutes."""
    out: dict[str, Any] = {}
    for variant in dict.fromkeys(r["variant"] for r in records):
        rs = [r for r in records if r["variant"] == variant]
        # the benchmark's own profiling window is not part of a real trial: left out of the wall and projections
        walls = [r["wall_s"] - r["phases_s"].get("profiler", 0.0) for r in rs]
        mean = statistics.fmean(walls)
        utils = {p: [r["util"][p] for r in rs if r["util"].get(p) is not None] for p in PHASES}
        prof = [r["profiled_steps"] for r in rs if r["profiled_steps"]]
        out[variant] = {
            "n": len(rs), "wall_s_mean": mean, "wall_s_sd": statistics.stdev(walls) if len(walls) > 1 else None,
            "phases_s_mean": {p: statistics.fmean(r["phases_s"][p] for r in rs) for p in PHASES},
            "util_mean": {p: (statistics.fmean(v) if v else None) for p, v in utils.items()},
            "trials_per_gpu_hour": 3600.0 / mean,
            "study_minutes": study_trials * mean / 60 + (warmup["wall_s"] / 60 if warmup else 0.0),
            "train_busy_fraction": statistics.fmean(b) if (b := [p["busy_fraction"] for p in prof
                                                                  if p["busy_fraction"] is not None]) else None,
            "train_ms_per_step": statistics.fmean(p["wall_ms_per_step"] for p in prof) if prof else None,
            # the kernel mix of the variant's last profiled trial (a mix is not averaged across trials)
            "kernels": next((p["kernels"] for p in reversed(prof) if p.get("kernels")), None),
            "metrics": {k: [r["metrics"].get(k) for r in rs] for k in rs[0]["metrics"]},
        }
    return out


def markdown(result: dict) -> str:
    """The side-by-side table (one row per variant) and the phase split."""
    s, env = result["summary"], result["env"]
    lines = [f"# Study throughput: {env['study']} ({env['preset'] or 'full budget'}) on {env['device_name']}",
             "", f"{env['when']}; torch {env['torch']}; {env['trials_in_study']} trials in the study; "
             f"warm-up trial {result['warmup']['wall_s']:.1f} s (paid once per worker)." if result["warmup"]
             else "", "",
             "| variant | n | trial wall, profiling window left out (s) | trials / GPU-h | study (min) | train busy (profiled) | ms/step |"
             " " + " | ".join(result["metric_names"]) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(result["metric_names"])]
    for v, r in s.items():
        sd = f" ± {r['wall_s_sd']:.1f}" if r["wall_s_sd"] is not None else ""
        busy = f"{100 * r['train_busy_fraction']:.0f} %" if r["train_busy_fraction"] is not None else "n/a"
        ms = f"{r['train_ms_per_step']:.2f}" if r["train_ms_per_step"] is not None else "n/a"
        mets = [", ".join(f"{x:.4g}" for x in r["metrics"].get(m, []) if x is not None)
                for m in result["metric_names"]]
        lines.append(f"| {v} | {r['n']} | {r['wall_s_mean']:.1f}{sd} | {r['trials_per_gpu_hour']:.0f} | "
                     f"{r['study_minutes']:.1f} | {busy} | {ms} | " + " | ".join(mets) + " |")
    lines += ["", "Mean seconds per phase (NVML utilisation in brackets where a GPU reported it):", "",
              "| variant | " + " | ".join(PHASES) + " |", "|---|" + "---|" * len(PHASES)]
    for v, r in s.items():
        cells = []
        for p in PHASES:
            u = r["util_mean"][p]
            cells.append(f"{r['phases_s_mean'][p]:.2f}" + (f" ({100 * u:.0f} %)" if u is not None else ""))
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += kernel_mix.markdown({v: r["kernels"] for v, r in s.items() if r.get("kernels")})
    if result.get("step_probe"):
        lines += ["", "Steady-state training step of the same model (random batch, warm-up excluded):", ""]
        lines += [f"- {p['mode']}: {p['ms_per_step']:.2f} ms/step ({p['iters']} steps; warm-up {p['warmup_s']:.1f} s)"
                  if "error" not in p else f"- {p['mode']}: failed: {p['error']}" for p in result["step_probe"]]
    if result.get("failures"):
        lines += ["", "Failed trials:", ""] + [f"- {f['variant']} #{f['index']}: {f['error']}"
                                              for f in result["failures"]]
    lines += ["", phase_clock.__doc__.split("\n\n")[1].replace("\n", " ")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("study", type=Path)
    p.add_argument("--preset", default=None)
    p.add_argument("--variants", default=STUDY_VARIANTS,
                   help="comma separated: " + ", ".join(VARIANTS))
    p.add_argument("--trials", type=int, default=2, help="trials per variant (the study's first N trials)")
    p.add_argument("--budget-s", type=float, default=None, help="start no trial that would end after this")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--profile-steps", type=int, default=20, help="training steps profiled per trial (CUDA only)")
    p.add_argument("--probe", default="", help="step probe settings, comma separated: false (eager), a "
                   "train.compile mode, " + ", ".join(GRAPHED) + " (e.g. false,cuda-graph,cuda-graph-compile); "
                   "empty: none")
    p.add_argument("--probe-iters", type=int, default=50)
    p.add_argument("--no-warmup", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    t_start = time.perf_counter()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from harness.study import load_study, validate_study
    from harness.tracking import Tracker
    from plugins.registry import load_registries

    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"--variants: unknown {unknown}; available: {', '.join(VARIANTS)}", file=sys.stderr)
        raise SystemExit(2)
    settings = probe_settings(a.probe)
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    registries = load_registries()
    loaded = load_study(a.study, preset=a.preset)
    study = loaded.study
    specs = validate_study(loaded, registries)
    for v in variants:            # every override validates before any work
        with_overrides(specs[0].config, VARIANTS[v][1])
    a.out.mkdir(parents=True, exist_ok=True)
    work = a.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(f"sqlite:///{work / 'mlflow.db'}", f"throughput-{study.name}",
                      artifact_root=work / "mlartifacts")
    parent = tracker.start_study(study=study.name, preset=a.preset, params={"benchmark": "study_throughput"})
    env = {"study": study.name, "preset": a.preset, "device": str(device), "torch": torch.__version__,
           "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "trials_in_study": len(specs),
           "load_avg": os.getloadavg(), "cpu_count": os.cpu_count(), "variants": {v: VARIANTS[v][0] for v in variants}}
    result: dict[str, Any] = {"env": env, "warmup": None, "records": [], "failures": [], "summary": {},
                              "step_probe": [],
                              "metric_names": list(specs[0].config.eval.metrics) + ["final_train_loss"]}

    def write() -> None:
        result["summary"] = summarise(result["records"], result["warmup"], len(specs)) if result["records"] else {}
        result["env"]["elapsed_s"] = time.perf_counter() - t_start
        (a.out / "study_throughput.json").write_text(json.dumps(result, indent=2, default=str))
        if result["records"]:
            (a.out / "study_throughput.md").write_text(markdown(result))

    common = dict(registries=registries, folder=work, device=device, cache=work / "cache", tracker=tracker,
                  parent=parent)
    if not a.no_warmup:
        result["warmup"] = run_one(specs[0], variant="baseline", index=-1, profile_window=0,
                                   steps=min(10, specs[0].config.train.steps), **common)
        print(f"warm-up trial: {result['warmup']['wall_s']:.1f} s", flush=True)
        write()
    def probe(setting: Any) -> None:
        try:
            out = step_probe(specs[0], registries, device, setting, warm=10, iters=a.probe_iters)
        except Exception as exc:  # noqa: BLE001 - one shot on the GPU: record it and go on
            out = {"mode": str(setting), "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
            print(f"step probe {setting}: {out['error']}", flush=True)
        else:
            print(f"step probe {out['mode']}: {out['ms_per_step']:.2f} ms/step", flush=True)
        result["step_probe"].append(out)
        write()

    for setting in [s for s in settings if s is False]:       # eager first; compiled ones after the first round,
        probe(setting)                                          # when the compile caches are warm
    for i in range(min(a.trials, len(specs))):
        for v in variants:
            done = [r["wall_s"] for r in result["records"] if r["variant"] in (v, "baseline")] or \
                [result["warmup"]["wall_s"] if result["warmup"] else 0.0]
            if a.budget_s is not None and time.perf_counter() - t_start + max(done) > a.budget_s:
                print(f"budget: skipping {v} trial {i}", flush=True)
                continue
            try:
                rec = run_one(specs[i], variant=v, index=i, profile_window=a.profile_steps, **common)
            except Exception as exc:  # noqa: BLE001 - one shot on the GPU: record it and go on
                result["failures"].append({"variant": v, "index": i, "error": f"{type(exc).__name__}: {exc}"[:800]})
                print(f"{v} trial {i} failed: {result['failures'][-1]['error']}", flush=True)
                write()
                continue
            result["records"].append(rec)
            print(f"{v} trial {i} ({rec['label']} seed {rec['seed']}): {rec['wall_s']:.1f} s "
                  + " ".join(f"{p}={s:.1f}" for p, s in rec["phases_s"].items() if s >= 0.05), flush=True)
            write()
            if "train.compile" in VARIANTS[v][1] or (i == 0 and v == variants[-1]):
                compiled, settings = [s for s in settings if s is not False], [s for s in settings if s is False]
                for setting in compiled:       # once, right after the first compiled trial (warm caches)
                    if a.budget_s is None or time.perf_counter() - t_start < a.budget_s:
                        probe(setting)
    tracker.end_study(parent)
    write()
    print((a.out / "study_throughput.md").read_text() if result["records"] else "no trial ran")
    return result


def from_bench(study: Path, *, preset: str | None, trials: int, variants: str | None, device: str,
                      budget: float | None, out: Path) -> int:
    """`bench --study`: check the options (ValueError naming the bad one), then run main()."""
    if not study.is_file():
        raise ValueError(f"--study: no such file: {study}")
    if trials < 1:
        raise ValueError(f"--trials: at least 1, got {trials}")
    names = variants or STUDY_VARIANTS
    unknown = [v for v in names.split(",") if v.strip() and v.strip() not in VARIANTS]
    if unknown:
        raise ValueError(f"--variants: unknown study variant(s) {unknown}; available: {', '.join(VARIANTS)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--study: no CUDA device is visible (use --device cpu)")
    argv = [str(study), "--variants", names, "--trials", str(trials), "--device", device, "--out", str(out)]
    argv += ["--preset", preset] if preset else []
    argv += ["--budget-s", str(budget)] if budget is not None else []
    main(argv)
    return 0


if __name__ == "__main__":
    main()
