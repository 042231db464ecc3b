"""Issue 22's comparison: the one-GPU and the two-GPU trial of benchmarks/gpu/multi_gpu.yaml (one study folder).
Reads each trial's per-step `train_loss` from the study's MLflow store and its results.json / provenance.json
(benchmarks/gpu/torchrun_compare.py's readers) and writes multi_gpu.json and .md: the loss curves' largest
difference, training images per second on 1 and 2 GPUs and the scaling efficiency (img/s on 2 / (2 x img/s on 1)),
peak memory (rank 0's GPU: the ranks hold the same model and equal shares of the batch), FD of each; asserts nothing.

    python3 -m benchmarks.gpu.multi_gpu_compare runs/multi_gpu --out $OUT
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.gpu.torchrun_compare import curve_diff, trials, write

ONE, TWO = "train.devices=1 seed=0", "train.devices=2 seed=0"


def compare(folder: Path, metric: str = "fd-effnet") -> dict[str, Any]:
    got = trials(folder)
    missing = [k for k in (ONE, TWO) if k not in got]
    if missing:
        return {"error": f"no completed trial for {missing} in {folder}", "found": sorted(got)}
    one, two = got[ONE], got[TWO]

    def get(key: str) -> dict[str, Any]:
        return {"1": one["results"].get(key), "2": two["results"].get(key)}

    out: dict[str, Any] = {
        "study": str(folder), "metric": metric, "device": one["provenance"].get("device"),
        "git_sha": one["provenance"].get("git_sha"), "torch": one["provenance"].get("versions", {}).get("torch"),
        "distributed": two["provenance"].get("distributed"), "loss_1_vs_2": curve_diff(one["loss"], two["loss"]),
        "quality": get(metric), "train_images_per_s": get("train_images_per_s"), "train_seconds": get("train_seconds"),
        "peak_memory_gb": get("peak_memory_gb"),
    }
    ips = out["train_images_per_s"]
    if ips["1"] and ips["2"]:
        out["speedup"] = ips["2"] / ips["1"]
        out["scaling_efficiency"] = out["speedup"] / 2
    return out


def _f(x: Any, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def markdown(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"# One trial on 1 and 2 GPUs\n\n{r['error']}\n"
    d = r["loss_1_vs_2"]
    lines = [f"# One trial on 1 GPU and on 2 GPUs ({(r['distributed'] or {}).get('backend')})", "",
             (f"Device: {r['device']}; torch {r['torch']}; commit `{r['git_sha']}`; two-GPU trial: "
              f"{json.dumps(r['distributed'])}. Same seed and global batch."), "",
             "| loss curves | steps compared | max abs diff | max rel diff | final loss 1 GPU / 2 GPUs |",
             "|---|---|---|---|---|",
             (f"| 1 vs 2 GPUs | {d['steps_compared']} | {d['max_abs_diff']:.3g} | {d['max_rel_diff']:.3g} | "
              f"{d['final_a']:.5f} / {d['final_b']:.5f} |"), "",
             f"| GPUs | train img/s | train seconds | peak memory per GPU (GB, rank 0) | {r['metric']} |",
             "|---|---|---|---|---|"]
    for k in ("1", "2"):
        lines.append(f"| {k} | {_f(r['train_images_per_s'][k], '.0f')} | {_f(r['train_seconds'][k], '.1f')} | "
                     f"{_f(r['peak_memory_gb'][k], '.2f')} | {_f(r['quality'][k], '.4g')} |")
    if "speedup" in r:
        lines += ["", (f"Speed-up on 2 GPUs: {r['speedup']:.2f}x, scaling efficiency "
                       f"{100 * r['scaling_efficiency']:.0f} % (img/s on 2 / (2 x img/s on 1); img/s from each "
                       "trial's timed training steps).")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="the study folder (runs/multi_gpu)")
    parser.add_argument("--metric", default="fd-effnet", help="the quality metric to compare")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    write(args.out / "multi_gpu", compare(args.study, args.metric), markdown)


if __name__ == "__main__":
    main()
