"""The ratios issues 11 and 18 set goals on, a printed summary, and the log-log plot of a results document.

The goals compare ZigMa and DiT run the same way. Activation checkpointing (the `-ckpt` variants) and the kernel
ceiling are extra lines beside them, never a goal's value:
- `zigma_ckpt_over_dit_*`: checkpointed ZigMa vs plain DiT (the memory lever a ZigMa user has);
  `zigma_ckpt_over_dit_ckpt_*`: both checkpointed (same settings again);
- `kernel_ceiling_zigma_over_dit_throughput` = DiT step / (ZigMa depth x one MambaMixer fwd+bwd): the ZigMa/DiT
  throughput ratio if everything in ZigMa but its mixers were free; `blocks_only_zigma_over_dit_throughput` =
  (DiT depth x one DiT block) / (ZigMa depth x one ZigMa block): the ratio of the stacked blocks alone.
"""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["goal_ratios", "goals", "summary_lines", "plot", "GOALS"]

#: (ratio key, tokens or None for every measured count, comparison, target, what it means)
GOALS = (
    ("zigma_over_dit_throughput", 1024, ">=", 1.0, "ZigMa training throughput vs DiT at 1K tokens"),
    ("zigma_over_dit_throughput", 16384, ">=", 4.0, "ZigMa training throughput vs DiT at 16K tokens"),
    ("zigma_over_dit_peak_memory", 16384, "<=", 0.6, "ZigMa peak training memory vs DiT at 16K tokens"),
    ("scan_overhead_pct", None, "<=", 2.0, "zigzag-8 step time over no permutation (%)"),
    ("mixer_over_linear", None, "<=", 3.0, "reference mixer vs nn.Linear stack, fwd+bwd (CPU goal)"),
    # the token-mixer issue (#18): each backbone in its fastest measured configuration, and the scan order's cost
    # with the Mamba-2 mixer too
    ("best_zigma_over_best_dit_throughput", 4096, ">=", 1.0, "fastest ZigMa vs fastest DiT throughput at 4K tokens"),
    ("best_zigma_over_best_dit_throughput", 16384, ">=", 2.0, "fastest ZigMa vs fastest DiT throughput at 16K tokens"),
    ("scan_overhead_pct_mamba2", None, "<=", 2.0, "zigzag-8 step time over no permutation, Mamba-2 (%)"),
)


def _ok(rows: list[dict]) -> dict[tuple[str, int], dict]:
    return {(r["variant"], r["tokens"]): r for r in rows if r.get("status") == "ok"}


def _pairwise(ok: dict, num: str, den: str, key: str, fn) -> dict[int, float]:
    """{tokens: fn(row_num, row_den)} where both variants have an ok row at those tokens."""
    return {n: fn(r, ok[(den, n)]) for (v, n), r in sorted(ok.items(), key=lambda kv: kv[0][1])
            if v == num and (den, n) in ok and r.get(key) and ok[(den, n)].get(key)}


#: ratio keys printed in their own, labelled summary sections (not the goals' same-settings comparison)
CKPT_KEYS = ("zigma_ckpt_over_dit_throughput", "zigma_ckpt_over_dit_peak_memory",
             "zigma_ckpt_over_dit_ckpt_throughput", "zigma_ckpt_over_dit_ckpt_peak_memory",
             "ckpt_step_time_zigma", "ckpt_step_time_dit", "ckpt_peak_memory_zigma", "ckpt_peak_memory_dit")
CEILING_KEYS = ("kernel_ceiling_zigma_over_dit_throughput", "blocks_only_zigma_over_dit_throughput",
                "zigma_mixers_share_of_step")


def _ceiling_ratios(doc: dict, ok: dict) -> dict[str, dict[int, float]]:
    """The ceiling ratios at every tokens with an ok ceiling row (and the rows they need)."""
    out: dict[str, dict[int, float]] = {k: {} for k in CEILING_KEYS}
    for c in doc.get("ceiling", []):
        if c.get("status") != "ok":
            continue
        n, mixers = c["tokens"], c["zigma_depth"] * c["mixer_ms"]
        out["blocks_only_zigma_over_dit_throughput"][n] = (c["dit_depth"] * c["dit_block_ms"]
                                                           / (c["zigma_depth"] * c["zigma_block_ms"]))
        if ("attention", n) in ok:
            out["kernel_ceiling_zigma_over_dit_throughput"][n] = ok[("attention", n)]["step_ms"] / mixers
        if ("zigzag-8", n) in ok:
            out["zigma_mixers_share_of_step"][n] = mixers / ok[("zigzag-8", n)]["step_ms"]
    return out


#: each backbone's configurations for the goal comparison (each in its fastest measured one, eager or compiled)
_ZIGMA_BEST = ("zigzag-8", "zigzag-8-compiled", "zigzag-8-mamba2", "zigzag-8-mamba2-compiled")
_DIT_BEST = ("attention", "attention-compiled")


def _best(ok: dict) -> tuple[dict[int, float], dict[int, str]]:
    """tokens -> the fastest zigzag-8 ZigMa (any mixer, eager or compiled) over the fastest DiT (eager or
    compiled) in training images/s, and tokens -> 'zigma variant / dit variant' that were fastest."""
    ratio, which = {}, {}
    for tokens in sorted({n for _, n in ok}):
        z = [ok[(v, tokens)] for v in _ZIGMA_BEST if (v, tokens) in ok]
        d = [ok[(v, tokens)] for v in _DIT_BEST if (v, tokens) in ok]
        if z and d:
            bz = max(z, key=lambda r: r["train_images_per_s"])
            bd = max(d, key=lambda r: r["train_images_per_s"])
            ratio[tokens] = bz["train_images_per_s"] / bd["train_images_per_s"]
            which[tokens] = f"{bz['variant']} / {bd['variant']}"
    return ratio, which


def goal_ratios(doc: dict) -> dict:
    """Ratios between variants measured at the same tokens (keys: tokens), the checkpointing and ceiling ratios,
    plus the mixer-check ratios."""
    ok = _ok(doc.get("rows", []))
    pct = lambda a, b: 100.0 * (a["step_ms"] - b["step_ms"]) / b["step_ms"]
    img = lambda a, b: a["train_images_per_s"] / b["train_images_per_s"]
    mem = lambda a, b: a["peak_memory_gb"] / b["peak_memory_gb"]
    step = lambda a, b: a["step_ms"] / b["step_ms"]
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
        "zigma_mamba2_over_dit_throughput": _pairwise(ok, "zigzag-8-mamba2", "attention", "train_images_per_s", img),
        "zigma_mamba2_over_zigma_throughput": _pairwise(ok, "zigzag-8-mamba2", "zigzag-8", "train_images_per_s", img),
        "scan_overhead_pct_mamba2": _pairwise(ok, "zigzag-8-mamba2", "no-scan-mamba2", "step_ms", pct),
        "compile_speedup_zigma_mamba2": _pairwise(ok, "zigzag-8-mamba2", "zigzag-8-mamba2-compiled", "step_ms", step),
        # Mamba-2's SSD by flash-linear-attention (ssd 'fla') vs mamba-ssm's: the same model, another kernel
        "zigma_mamba2_fla_over_dit_throughput": _pairwise(ok, "zigzag-8-mamba2-fla", "attention",
                                                          "train_images_per_s", img),
        "fla_speedup_over_mamba_ssm_ssd": _pairwise(ok, "zigzag-8-mamba2", "zigzag-8-mamba2-fla", "step_ms", step),
        "fla_speedup_over_mamba_ssm_ssd_compiled": _pairwise(ok, "zigzag-8-mamba2-compiled",
                                                             "zigzag-8-mamba2-fla-compiled", "step_ms", step),
        "best_zigma_over_best_dit_throughput": _best(ok)[0],
        "best_configs": _best(ok)[1],
        "compile_speedup_dit": _pairwise(ok, "attention", "attention-compiled", "step_ms",
                                         lambda a, b: a["step_ms"] / b["step_ms"]),
        "zigma_over_dit_params": _pairwise(ok, "zigzag-8", "attention", "params_m",
                                           lambda a, b: a["params_m"] / b["params_m"]),
        "vim_over_dit_params": _pairwise(ok, "sweep-2", "attention", "params_m",
                                         lambda a, b: a["params_m"] / b["params_m"]),
        "mixer_over_linear": {r["tokens"]: r["ratio"] for r in doc.get("mixer_vs_linear", [])
                              if r.get("status") == "ok" and r.get("backend") == "reference"},
        "zigma_ckpt_over_dit_throughput": _pairwise(ok, "zigzag-8-ckpt", "attention", "train_images_per_s", img),
        "zigma_ckpt_over_dit_peak_memory": _pairwise(ok, "zigzag-8-ckpt", "attention", "peak_memory_gb", mem),
        "zigma_ckpt_over_dit_ckpt_throughput": _pairwise(ok, "zigzag-8-ckpt", "attention-ckpt",
                                                         "train_images_per_s", img),
        "zigma_ckpt_over_dit_ckpt_peak_memory": _pairwise(ok, "zigzag-8-ckpt", "attention-ckpt", "peak_memory_gb",
                                                          mem),
        "ckpt_step_time_zigma": _pairwise(ok, "zigzag-8-ckpt", "zigzag-8", "step_ms", step),
        "ckpt_step_time_dit": _pairwise(ok, "attention-ckpt", "attention", "step_ms", step),
        "ckpt_peak_memory_zigma": _pairwise(ok, "zigzag-8-ckpt", "zigzag-8", "peak_memory_gb", mem),
        "ckpt_peak_memory_dit": _pairwise(ok, "attention-ckpt", "attention", "peak_memory_gb", mem),
        **_ceiling_ratios(doc, ok),
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


def _mixer_path(doc: dict) -> str:
    """Which mixer the ZigMa rows ran: 'fused: <kernel path>' or 'reference (pure PyTorch)'."""
    used = [r.get("mixer_backend") for r in (*doc.get("rows", []), *doc.get("ceiling", []))
            if r.get("status") == "ok" and r.get("mixer_backend")]
    path = doc.get("mixer_fused_path")
    if "fused" in used:
        return f"fused: {path}" if path else "fused"
    if used:
        return "reference (pure PyTorch)" + ("" if path else "; mamba-ssm not importable")
    return f"not run (fused path here: {path or 'none, mamba-ssm not importable'})"


def _values(values: dict) -> str:
    return "  ".join(f"{n}: {v:.3g}" for n, v in values.items())


def _ceiling_lines(doc: dict, ratios: dict) -> list[str]:
    """Per tokens: the measured ZigMa/DiT throughput beside the blocks-only ratio and the kernel ceiling."""
    def ratio(key: str, n: int) -> str:
        values = ratios.get(key, {})
        v = values.get(n, values.get(str(n)))                           # str keys: a document read from JSON
        return "n/a" if v is None else f"{v:.3g}x"

    lines = []
    for c in doc.get("ceiling", []):
        if c.get("status") != "ok":
            lines.append(f"  ceiling {c.get('status')}: {str(c.get('reason', ''))[:140]}")
            continue
        n = c["tokens"]
        lines.append(f"  @ {n:>6}: measured {ratio('zigma_over_dit_throughput', n)}  blocks only "
                     f"{ratio('blocks_only_zigma_over_dit_throughput', n)}  kernel ceiling "
                     f"{ratio('kernel_ceiling_zigma_over_dit_throughput', n)}   (one mixer {c['mixer_ms']:.3g} ms "
                     f"x {c['zigma_depth']}, one zigma block {c['zigma_block_ms']:.3g} ms x {c['zigma_depth']}, "
                     f"one dit block {c['dit_block_ms']:.3g} ms x {c['dit_depth']})")
    return lines


def summary_lines(doc: dict) -> list[str]:
    """The ratios and goals as text (printed at the end of a run)."""
    ratios = doc.get("ratios", {})
    cfg = doc["config"]
    lines = [(f"== bench on {doc.get('device')} ({doc.get('precision')}, size {cfg.get('size')}, "
              f"{cfg.get('batch_tokens')} tokens a batch; mixer {_mixer_path(doc)})")]
    bad = [r for r in doc.get("rows", []) if r.get("status") != "ok"]
    for r in bad:
        lines.append(f"  {r['status']:>7}: {r['variant']} @ {r['tokens']}: {str(r.get('reason', ''))[:140]}")
    for key, values in ratios.items():
        if key == "goals" or key in CKPT_KEYS or key in CEILING_KEYS or not values:
            continue
        if key == "best_configs":
            lines.append(f"  {'fastest zigma / dit':<30} " + "  ".join(f"{n}: {v}" for n, v in values.items()))
            continue
        lines.append(f"  {key:<30} " + _values(values))
    ckpt = [(k, ratios[k]) for k in CKPT_KEYS if ratios.get(k)]
    if ckpt:
        lines.append("  -- with activation checkpointing (extra lines; the goals below compare ZigMa and DiT "
                     "without it) --")
        lines += [f"  {k:<36} " + _values(v) for k, v in ckpt]
    ceiling = _ceiling_lines(doc, ratios)
    if ceiling:
        lines.append("  -- ZigMa/DiT training throughput vs what its blocks and its mixer kernel allow "
                     "(kernel ceiling: DiT step / (depth x one mixer)) --")
        lines += ceiling
        if ratios.get("zigma_mixers_share_of_step"):
            lines.append(f"  {'zigma_mixers_share_of_step':<36} " + _values(ratios["zigma_mixers_share_of_step"]))
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


#: the ZigMa/DiT throughput lines of the plot's last panel: (ratio key, label, style)
_RATIO_LINES = (("zigma_over_dit_throughput", "measured, same settings (the goal)", "-"),
                ("zigma_ckpt_over_dit_ckpt_throughput", "both checkpointed", "--"),
                ("zigma_ckpt_over_dit_throughput", "ZigMa checkpointed vs DiT", ":"),
                ("blocks_only_zigma_over_dit_throughput", "blocks only (one block x depth)", "-."),
                ("kernel_ceiling_zigma_over_dit_throughput", "kernel ceiling (DiT step / depth x mixer)", "-"))


def plot(doc: dict, path: Path) -> None:
    """Log-log: train throughput, sampling ms/image and peak memory vs tokens, one line per variant (dashed DiT,
    dotted with checkpointing); last panel: the ZigMa/DiT throughput ratio beside the ceiling and the goals."""
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
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.4))
    cmap = plt.get_cmap("tab10")
    for i, (label, rows) in enumerate(sorted(series.items())):
        rows = sorted(rows, key=lambda r: r["tokens"])
        dit = "dit" in label.split(" ·")[0]
        style = ("-." if dit else ":") if rows[0].get("checkpointing") else ("--" if dit else "-")
        for ax, (key, _) in zip(axes, panels):
            pts = [(r["tokens"], r[key]) for r in rows if r.get(key)]
            if pts:
                ax.plot(*zip(*pts), style, marker="o", ms=3.5, color=cmap(i % 10), label=label)
    ratios, ax = doc.get("ratios", {}), axes[3]
    for j, (key, label, style) in enumerate(_RATIO_LINES):
        pts = sorted(ratios.get(key, {}).items(), key=lambda kv: int(kv[0]))
        if pts:
            ax.plot([int(n) for n, _ in pts], [v for _, v in pts], style, marker="o", ms=3.5,
                    color="black" if j == 0 else cmap((j + 4) % 10), label=label)
    goal_pts = [(g["tokens"], float(g["target"].split()[1])) for g in ratios.get("goals", [])
                if g["key"] == "zigma_over_dit_throughput"]
    if goal_pts:
        ax.plot(*zip(*goal_pts), "*", ms=11, color="crimson", label="goal")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.legend(fontsize=6.5, loc="best")
    panels = (*panels, (None, "ZigMa / DiT training throughput ↑"))
    for ax, (_, title) in zip(axes, panels):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1024:g}K" if v >= 1024 else f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("tokens per sample")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    mantissa = lambda v: round(v / 10 ** math.floor(math.log10(v)), 6) if v > 0 else 0
    axes[3].yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if mantissa(v) in (2, 5) else ""))
    cfg = doc["config"]
    fig.suptitle(f"{doc.get('device')} · {doc.get('precision')} · size {cfg.get('size')} · "
                 f"{cfg.get('batch_tokens')} tokens a batch", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
