"""The ratios issue 11 sets goals on, a printed summary, and the log-log plot of a results document."""

from __future__ import annotations

from pathlib import Path

__all__ = ["goal_ratios", "goals", "summary_lines", "plot", "GOALS"]

#: (ratio key, tokens or None for every measured count, comparison, target, what it means)
GOALS = (
    ("zigma_over_dit_throughput", 1024, ">=", 1.0, "ZigMa training throughput vs DiT at 1K tokens"),
    ("zigma_over_dit_throughput", 16384, ">=", 4.0, "ZigMa training throughput vs DiT at 16K tokens"),
    ("zigma_over_dit_peak_memory", 16384, "<=", 0.6, "ZigMa peak training memory vs DiT at 16K tokens"),
    ("scan_overhead_pct", None, "<=", 2.0, "zigzag-8 step time over no permutation (%)"),
    ("mixer_over_linear", None, "<=", 3.0, "reference mixer vs nn.Linear stack, fwd+bwd (CPU goal)"),
)


def _ok(rows: list[dict]) -> dict[tuple[str, int], dict]:
    return {(r["variant"], r["tokens"]): r for r in rows if r.get("status") == "ok"}


def _pairwise(ok: dict, num: str, den: str, key: str, fn) -> dict[int, float]:
    """{tokens: fn(row_num, row_den)} where both variants have an ok row at those tokens."""
    return {n: fn(r, ok[(den, n)]) for (v, n), r in sorted(ok.items(), key=lambda kv: kv[0][1])
            if v == num and (den, n) in ok and r.get(key) and ok[(den, n)].get(key)}


def goal_ratios(doc: dict) -> dict:
    """Ratios between variants measured at the same tokens (keys: tokens), plus the mixer-check ratios."""
    ok = _ok(doc.get("rows", []))
    pct = lambda a, b: 100.0 * (a["step_ms"] - b["step_ms"]) / b["step_ms"]
    out = {
        "zigma_over_dit_throughput": _pairwise(ok, "zigzag-8", "attention", "train_images_per_s",
                                               lambda a, b: a["train_images_per_s"] / b["train_images_per_s"]),
        "zigma_over_dit_peak_memory": _pairwise(ok, "zigzag-8", "attention", "peak_memory_gb",
                                                lambda a, b: a["peak_memory_gb"] / b["peak_memory_gb"]),
        "zigma_over_dit_sample_time": _pairwise(ok, "zigzag-8", "attention", "sample_ms_per_image",
                                                lambda a, b: a["sample_ms_per_image"] / b["sample_ms_per_image"]),
        "vim_over_zigma_step_time": _pairwise(ok, "sweep-2", "zigzag-8", "step_ms",
                                              lambda a, b: a["step_ms"] / b["step_ms"]),
        "scan_overhead_pct": _pairwise(ok, "zigzag-8", "no-scan", "step_ms", pct),
        "around_overhead_pct": _pairwise(ok, "zigzag-8-around", "no-scan", "step_ms", pct),
        "relative_speedup_over_around": _pairwise(ok, "zigzag-8-around", "zigzag-8", "step_ms",
                                                  lambda a, b: a["step_ms"] / b["step_ms"]),
        "fused_speedup_over_reference": _pairwise(ok, "zigzag-8-reference", "zigzag-8-fused", "step_ms",
                                                  lambda a, b: a["step_ms"] / b["step_ms"]),
        "compile_speedup_zigma": _pairwise(ok, "zigzag-8", "zigzag-8-compiled", "step_ms",
                                           lambda a, b: a["step_ms"] / b["step_ms"]),
        "compile_speedup_dit": _pairwise(ok, "attention", "attention-compiled", "step_ms",
                                         lambda a, b: a["step_ms"] / b["step_ms"]),
        "zigma_over_dit_params": _pairwise(ok, "zigzag-8", "attention", "params_m",
                                           lambda a, b: a["params_m"] / b["params_m"]),
        "vim_over_dit_params": _pairwise(ok, "sweep-2", "attention", "params_m",
                                         lambda a, b: a["params_m"] / b["params_m"]),
        "mixer_over_linear": {r["tokens"]: r["ratio"] for r in doc.get("mixer_vs_linear", [])
                              if r.get("status") == "ok" and r.get("backend") == "reference"},
    }
    out["goals"] = goals(out, doc.get("device", ""))
    return out


def goals(ratios: dict, device: str) -> list[dict]:
    """One entry per goal and measured tokens: value, target, met."""
    out = []
    for key, tokens, op, target, what in GOALS:
        if key == "mixer_over_linear" and not device.startswith("cpu"):
            continue  # a CPU goal
        values = ratios.get(key, {})
        for n in ([tokens] if tokens is not None else sorted(values)):
            value = values.get(n)
            met = None if value is None else (value >= target if op == ">=" else value <= target)
            out.append({"goal": what, "key": key, "tokens": n, "target": f"{op} {target:g}", "value": value,
                        "met": met})
    return out


def summary_lines(doc: dict) -> list[str]:
    """The ratios and goals as text (printed at the end of a run)."""
    ratios = doc.get("ratios", {})
    cfg = doc["config"]
    lines = [(f"== bench on {doc.get('device')} ({doc.get('precision')}, size {cfg.get('size')}, "
              f"{cfg.get('batch_tokens')} tokens a batch)")]
    bad = [r for r in doc.get("rows", []) if r.get("status") != "ok"]
    for r in bad:
        lines.append(f"  {r['status']:>7}: {r['variant']} @ {r['tokens']}: {str(r.get('reason', ''))[:140]}")
    for key, values in ratios.items():
        if key == "goals" or not values:
            continue
        lines.append(f"  {key:<30} " + "  ".join(f"{n}: {v:.3g}" for n, v in values.items()))
    perm: dict[tuple[int, str], dict[str, float]] = {}
    for r in doc.get("permute", []):
        if r.get("status") == "ok":
            perm.setdefault((r["tokens"], r["dtype"]), {})[r["method"]] = r["fwd_bwd_ms"]
    for (n, dt), ms in perm.items():
        lines.append(f"  one permutation fwd+bwd @ {n} ({dt}): " + "  ".join(f"{k} {v:.3f} ms" for k, v in ms.items()))
    for g in ratios.get("goals", []):
        mark = {True: "MET ", False: "MISS", None: "n/a "}[g["met"]]
        value = "not measured" if g["value"] is None else f"{g['value']:.3g}"
        lines.append(f"  [{mark}] {g['goal']} @ {g['tokens']}: {value} (goal {g['target']})")
    return lines


def plot(doc: dict, path: Path) -> None:
    """Log-log: train throughput, sampling ms/image and peak memory vs tokens, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    series: dict[str, list[dict]] = {}
    for r in doc.get("rows", []):
        if r.get("status") == "ok":
            series.setdefault(f"{r['backbone']} · {r['variant']}", []).append(r)
    panels = (("train_images_per_s", "train throughput (img/s) ↑"),
              ("sample_ms_per_image", f"sampling ms / image ({doc['config'].get('nfe')} NFE) ↓"),
              ("peak_memory_gb", "peak training memory (GB) ↓"))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    cmap = plt.get_cmap("tab10")
    for i, (label, rows) in enumerate(sorted(series.items())):
        rows = sorted(rows, key=lambda r: r["tokens"])
        style = "--" if "dit" in label.split(" ·")[0] else "-"
        for ax, (key, _) in zip(axes, panels):
            pts = [(r["tokens"], r[key]) for r in rows if r.get(key)]
            if pts:
                ax.plot(*zip(*pts), style, marker="o", ms=3.5, color=cmap(i % 10), label=label)
    for ax, (_, title) in zip(axes, panels):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1024:g}K" if v >= 1024 else f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("tokens per sample")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    cfg = doc["config"]
    fig.suptitle(f"{doc.get('device')} · {doc.get('precision')} · size {cfg.get('size')} · "
                 f"{cfg.get('batch_tokens')} tokens a batch", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
