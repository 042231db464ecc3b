"""Issue 20's GPU check, the comparison: the plain and the one-process torchrun trial of
benchmarks/gpu/torchrun_check.yaml (same study folder), optionally beside a second plain run of the same trial (its
own study folder) as the noise floor of two plain runs on this card. Reads each trial's per-step `train_loss` from
the study's MLflow store and its results.json / provenance.json; writes torchrun_check.json and .md; asserts nothing.

    python3 -m benchmarks.gpu.torchrun_compare runs/torchrun_check --repeat runs-repeat/torchrun_check --out $OUT
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

PLAIN, TORCHRUN = "train.launcher=auto seed=0", "train.launcher=torchrun seed=0"


def trials(folder: Path) -> dict[str, dict[str, Any]]:
    """label -> {loss: [(step, value)], results, provenance} of every completed trial in a study folder."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{folder.resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name(folder.name)
    runs = {r.data.tags.get("harness.trial_key"): r for r in client.search_runs([exp.experiment_id], max_results=100)}
    out = {}
    for path in sorted(folder.glob("trials/*/results.json")):
        results = json.loads(path.read_text())
        run = runs.get(results["trial_key"])
        loss = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss")) if run else []
        out[results["label"]] = {"loss": loss, "results": results,
                                 "provenance": json.loads((path.parent / "provenance.json").read_text())}
    return out


def curve_diff(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> dict[str, Any]:
    """Max |a - b| and max |a - b| / |a| over the steps both logged; the steps each logged."""
    bs = dict(b)
    common = [(s, v, bs[s]) for s, v in a if s in bs]
    return {"steps_a": len(a), "steps_b": len(b), "steps_compared": len(common),
            "max_abs_diff": max((abs(x - y) for _, x, y in common), default=float("nan")),
            "max_rel_diff": max((abs(x - y) / max(abs(x), 1e-12) for _, x, y in common), default=float("nan")),
            "final_a": a[-1][1] if a else float("nan"), "final_b": b[-1][1] if b else float("nan")}


def compare(folder: Path, repeat: Path | None, metric: str = "fd-effnet") -> dict[str, Any]:
    got = trials(folder)
    missing = [k for k in (PLAIN, TORCHRUN) if k not in got]
    if missing:
        return {"error": f"no completed trial for {missing} in {folder}", "found": sorted(got)}
    plain, tr = got[PLAIN], got[TORCHRUN]
    out: dict[str, Any] = {
        "study": str(folder), "metric": metric,
        "device": plain["provenance"].get("device"), "torch": plain["provenance"].get("versions", {}).get("torch"),
        "distributed": tr["provenance"].get("distributed"),
        "plain_vs_torchrun": curve_diff(plain["loss"], tr["loss"]),
        "fd": {"plain": plain["results"].get(metric), "torchrun": tr["results"].get(metric)},
        "train_seconds": {"plain": plain["results"].get("train_seconds"), "torchrun": tr["results"].get("train_seconds")},
        "train_images_per_s": {"plain": plain["results"].get("train_images_per_s"),
                               "torchrun": tr["results"].get("train_images_per_s")},
    }
    out["fd_abs_diff"] = abs(out["fd"]["plain"] - out["fd"]["torchrun"])
    if repeat is not None:
        again = trials(repeat).get(PLAIN)
        if again is not None:
            out["plain_vs_plain_again"] = curve_diff(plain["loss"], again["loss"])
            out["fd"]["plain_again"] = again["results"].get(metric)
    return out


def markdown(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"# torchrun check\n\n{r['error']}\n"
    backend = (r["distributed"] or {}).get("backend")
    d, lines = r["plain_vs_torchrun"], [f"# One trial plainly and under a one-process torchrun ({backend})", ""]
    lines += [f"Device: {r['device']}, torch {r['torch']}; torchrun trial: {json.dumps(r['distributed'])}.", "",
              "| comparison | steps | max abs diff (loss) | max rel diff | final loss a / b |", "|---|---|---|---|---|",
              (f"| plain vs torchrun | {d['steps_compared']} | {d['max_abs_diff']:.3g} | "
               f"{d['max_rel_diff']:.3g} | {d['final_a']:.5f} / {d['final_b']:.5f} |")]
    if "plain_vs_plain_again" in r:
        e = r["plain_vs_plain_again"]
        lines.append(f"| plain vs plain again (noise floor) | {e['steps_compared']} | {e['max_abs_diff']:.3g} | "
                     f"{e['max_rel_diff']:.3g} | {e['final_a']:.5f} / {e['final_b']:.5f} |")
    lines += ["", f"| trial | {r['metric']} | train seconds | train img/s |", "|---|---|---|---|"]
    for k in ("plain", "torchrun"):
        lines.append(f"| {k} | {r['fd'][k]:.4g} | {r['train_seconds'][k]:.1f} | {r['train_images_per_s'][k]:.0f} |")
    if "plain_again" in r["fd"]:
        lines.append(f"| plain again | {r['fd']['plain_again']:.4g} | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="the study folder (runs/torchrun_check)")
    parser.add_argument("--repeat", type=Path, default=None, help="a second study folder with the plain trial again")
    parser.add_argument("--metric", default="fd-effnet", help="the quality metric to compare")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    write(args.out / "torchrun_check", compare(args.study, args.repeat, args.metric), markdown)


def write(stem: Path, result: dict[str, Any], markdown_of) -> None:
    """stem.json (the result) and stem.md (markdown_of(result), also printed)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    text = markdown_of(result)
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
