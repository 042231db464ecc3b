"""The roofline table of a profiled training step (benchmarks/profile_step.py): each kernel group's measured time
beside the time its FLOPs and bytes would take at the card's datasheet peaks, and a saved run recomputed at other
peaks (`retable`)."""

from __future__ import annotations

__all__ = ["ADALN", "CARD_PEAKS", "GROUPS", "card_peaks", "header", "markdown", "retable", "table"]

ADALN = "norms and adaLN"
#: the table's rows, in order
GROUPS = ("GEMMs", "selective scan / SSD", "causal conv", "permutation gathers", ADALN, "optimizer",
          "mixer (other)", "other")

#: datasheet peaks by a substring of torch.cuda.get_device_name(): (dense bf16 tensor-core TFLOP/s, fp32 CUDA-core
#: TFLOP/s, HBM TB/s). NVIDIA H100 and H200 Tensor Core GPU datasheets (SXM; H100 PCIe: 756 / 51 / 2.0); the first
#: substring that matches wins, so the PCIe entry comes before the SXM one.
CARD_PEAKS = {"H100 PCIe": (756.0, 51.0, 2.0), "H100": (989.0, 67.0, 3.35), "H200": (989.0, 67.0, 4.8)}


def card_peaks(card: str, tflops: float | None = None, scalar_tflops: float | None = None,
               tbps: float | None = None) -> tuple[float, float, float]:
    """The peaks to hold a card to: the given ones, the rest from CARD_PEAKS; ValueError for a card not listed."""
    known = next((v for k, v in CARD_PEAKS.items() if k in card), None)
    given = (tflops, scalar_tflops, tbps)
    if known is None and None in given:
        raise ValueError(f"no datasheet peaks for {card!r}: give --peak-tflops, --peak-scalar-tflops and --peak-tbps")
    return tuple(g if g is not None else k for g, k in zip(given, known or given))


def retable(doc: dict, peaks: tuple[float, float, float]) -> dict:
    """A saved run (profile_step.json) with every table recomputed at `peaks`: measured ms, FLOPs, bytes kept."""
    out = {**doc, "args": {**doc["args"], "peak_tflops": peaks[0], "peak_scalar_tflops": peaks[1],
                           "peak_tbps": peaks[2]}, "results": {}}
    for mixer, res in doc["results"].items():
        if "rows" not in res:
            out["results"][mixer] = res
            continue
        by = {r["group"]: r for r in res["rows"]}
        rows = table({g: r["ms"] * 1e3 for g, r in by.items()}, {g: r["gflop"] * 1e9 for g, r in by.items()},
                     {g: r["gbytes"] * 1e9 for g, r in by.items()}, peak_tflops=peaks[0], peak_tbps=peaks[2],
                     peak_scalar_tflops=peaks[1], tensor_groups=tuple(res.get("tensor_core_groups", ("GEMMs",))))
        out["results"][mixer] = {**res, "rows": rows}
    return out


def header(args: dict, mixer: str, batch: int, card: str, tensor: list | tuple) -> str:
    return (f"## ZigMa-{args['size']} ({mixer}, {args['scan']}), {args['tokens']} tokens x {batch}, {args['dtype']}, "
            f"one training step on {card} (peaks {args['peak_tflops']:g} TFLOP/s on tensor cores for "
            f"{' and '.join(tensor)}, {args['peak_scalar_tflops']:g} TFLOP/s fp32 for the rest, "
            f"{args['peak_tbps']:g} TB/s)")


def table(times: dict, flops: dict, bytes_: dict, *, peak_tflops: float, peak_tbps: float,
          peak_scalar_tflops: float | None = None, tensor_groups: tuple[str, ...] = ("GEMMs",)) -> list[dict]:
    """One row per group: measured ms, share, FLOPs, bytes, roofline ms and measured / roofline.

    A group in `tensor_groups` computes at `peak_tflops` (tensor cores), any other at `peak_scalar_tflops` (the
    CUDA cores' fp32 rate; `peak_tflops` when not given)."""
    total = sum(times.values()) or 1.0
    rows = []
    for group in GROUPS:
        f, b = flops.get(group, 0.0), bytes_.get(group, 0.0)
        peak = peak_tflops if group in tensor_groups or peak_scalar_tflops is None else peak_scalar_tflops
        roof = max(f / (peak * 1e12), b / (peak_tbps * 1e12)) * 1e3
        ms = times.get(group, 0.0) / 1e3
        rows.append({"group": group, "ms": ms, "share": times.get(group, 0.0) / total, "gflop": f / 1e9,
                     "gbytes": b / 1e9, "roofline_ms": roof, "over_roofline": ms / roof if roof > 0 else None})
    return rows


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| group | measured ms | share | GFLOP | GB moved | roofline ms | measured / roofline |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "-" if r["over_roofline"] is None else f"{r['over_roofline']:.1f}x"
        lines.append(f"| {r['group']} | {r['ms']:.2f} | {100 * r['share']:.1f} % | {r['gflop']:.1f} | "
                     f"{r['gbytes']:.2f} | {r['roofline_ms']:.3f} | {ratio} |")
    total = sum(r["ms"] for r in rows)
    lines.append(f"| **total** | {total:.2f} | 100 % | | | {sum(r['roofline_ms'] for r in rows):.3f} | |")
    return "\n".join(lines) + "\n"
