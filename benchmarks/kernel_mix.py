"""Which kernels a profiled training step spends its GPU time in: the top kernels and totals per kind.

Kinds come from the kernel's name alone (`kind_of`): the first rule of KINDS whose pattern matches, case-insensitive;
nothing matched is "other". The order matters: inductor's Triton kernels (`triton_poi_fused_...`) are claimed first,
whatever they fuse; `index_elementwise_kernel` is an index kernel, not an element-wise one; a cast
(`direct_copy_kernel_cuda`) is a copy; `normal` (random draws) is not a norm. Times are summed kernel durations
(not their union, which is the busy time of benchmarks/phase_clock.py), per step of the profiled window.
(benchmarks/profile_step.py groups one step by its ops as well, for the roofline; this needs names only.)
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

__all__ = ["KINDS", "breakdown", "device_events", "kind_of", "markdown", "short_name"]

KINDS: tuple[tuple[str, str], ...] = (    # (kind, regex on the kernel name), first match wins
    ("triton (inductor)", r"^triton_"),
    ("selective scan bwd", (r"(selective_scan|_chunk_scan|_chunk_state|_state_passing|_bmm_chunk|_chunk_cumsum)"
                            r"\w*bwd")),
    ("selective scan fwd", (r"selective_scan|selective_state_update|_chunk_scan|_chunk_state|_state_passing|"
                            r"_bmm_chunk|_chunk_cumsum")),
    ("conv (causal_conv1d, cuDNN)", r"causal_conv1d|fprop|dgrad|wgrad|convolve|conv2d|conv_depthwise|cudnn"),
    ("gemm", r"gemm|gemv|xmma|cutlass|nvjet|splitkreduce|cublas|wgmma|matmul|bmm"),
    ("foreach / multi_tensor (optimizer, EMA, clip)", r"multi_tensor|foreach|lpnorm_cleanup|fused_adam"),
    ("index / gather / scatter", r"index|gather|scatter|embedding|sort|take_kernel"),
    ("copy / cast / memcpy", r"memcpy|memset|copy|catarray|transpose"),
    ("reduction / norm", r"reduce|norm(?!al)|softmax|welford|gammabeta|cub::"),
    ("elementwise", r"elementwise|vectorized|unrolled|functor|fill"),
)
OTHER = "other"
_COMPILED = tuple((kind, re.compile(pattern, re.IGNORECASE)) for kind, pattern in KINDS)


def kind_of(name: str) -> str:
    """The kind of a CUDA kernel (or memcpy/memset) named `name`."""
    for kind, pattern in _COMPILED:
        if pattern.search(name):
            return kind
    return OTHER


def short_name(name: str, width: int = 90) -> str:
    """`name` without 'void', namespaces and its argument list, cut to `width` characters."""
    if name.startswith(("Memcpy", "Memset")):
        return name
    s = re.sub(r"^void ", "", name.strip())
    s = re.sub(r"\(anonymous namespace\)::|\b(at::native|at::cuda|at|c10|std|cutlass|cub)::", "", s)
    depth = 0
    for i, ch in enumerate(s):                 # the argument list: the first '(' outside template brackets
        depth += (ch == "<") - (ch == ">")
        if ch == "(" and depth == 0 and i > 0:
            s = s[:i]
            break
    s = re.sub(r"\s+", " ", s).strip()
    return s if len(s) <= width else s[:width - 1] + "…"


def breakdown(events: Iterable[tuple[str, float]], steps: int, *, top: int = 15) -> dict[str, Any] | None:
    """Per step of a `steps`-step window, from (kernel name, duration in us) events: total kernel time, kernels,
    the `top` kernels by time (short name, kind, calls, us, share) and every kind's totals (largest first).
    None when there are no events (no CUDA, no CUPTI)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    calls: dict[str, int] = defaultdict(int)
    us: dict[str, float] = defaultdict(float)
    for name, duration in events:
        calls[name] += 1
        us[name] += duration
    total = sum(us.values())
    if not calls:
        return None

    def row(n_calls: int, t: float) -> dict[str, float]:
        return {"calls_per_step": n_calls / steps, "us_per_step": t / steps, "share": t / total if total else 0.0}

    by_kind: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for name, t in us.items():
        k = by_kind[kind_of(name)]
        k[0] += calls[name]
        k[1] += t
    names = sorted(us, key=lambda n: (-us[n], n))[:top]
    return {"steps": steps, "kernels_per_step": sum(calls.values()) / steps, "us_per_step": total / steps,
            "top": [{"name": short_name(n), "kind": kind_of(n), **row(calls[n], us[n])} for n in names],
            "kinds": [{"kind": k, **row(int(c), t)} for k, (c, t) in
                      sorted(by_kind.items(), key=lambda kv: (-kv[1][1], kv[0]))]}


def device_events(prof: Any) -> list[tuple[str, float, float]]:
    """(name, start us, end us) of every device-side event (kernels, memcpy, memset) of a finished profiler."""
    from torch.autograd import DeviceType
    return [(e.name, e.time_range.start, e.time_range.end) for e in prof.events()
            if e.device_type == DeviceType.CUDA]


def markdown(breakdowns: dict[str, dict[str, Any]]) -> list[str]:
    """Lines: the kinds side by side (one column per variant), then each variant's top kernels."""
    if not breakdowns:
        return []
    variants = list(breakdowns)
    kinds = list(dict.fromkeys(k["kind"] for b in breakdowns.values() for k in b["kinds"]))
    lines = ["", ("GPU kernel time per training step by kind (profiled window; summed kernel durations; "
                  "ms, kernels, share; benchmarks/kernel_mix.py says how kinds are told apart):"), "",
             "| kind | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for kind in kinds + ["total"]:
        cells = []
        for v in variants:
            b = breakdowns[v]
            k = next((x for x in b["kinds"] if x["kind"] == kind), None) if kind != "total" else \
                {"us_per_step": b["us_per_step"], "calls_per_step": b["kernels_per_step"], "share": 1.0}
            cells.append("" if k is None else
                         f"{k['us_per_step'] / 1e3:.2f} ms, {k['calls_per_step']:.0f} ({100 * k['share']:.0f} %)")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    for v in variants:
        lines += ["", f"Top kernels of `{v}` per training step:", "",
                  "| kernel | kind | calls | us | share |", "|---|---|---|---|---|"]
        lines += [f"| `{t['name'].replace('|', '/')}` | {t['kind']} | {t['calls_per_step']:.1f} | "
                  f"{t['us_per_step']:.0f} | {100 * t['share']:.1f} % |" for t in breakdowns[v]["top"]]
    return lines
