"""Which gather should `zigma.scans.permute_tokens` use? One GPU call, side by side in one process.

1. One permutation of a (batch, tokens, 768) stream, forward and forward + backward, fp32 and bf16, for every
   method of `zigma.scans.base._GATHER` ("index_select", "rows", "advanced").
2. The bench's zigzag-8 and no-scan rows (ZigMa-B, 65,536 tokens a step) under each method, the methods interleaved
   over two rounds: the scan-order overhead (issue 11: <= 2 % of the step) each method gives.

    PYTHONPATH=. python3 -m benchmarks.gpu.permute_probe --out $OUT/probe      # on the GPU machine

Writes probe.json and prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

import zigma.scans.base as scans_base
from plugins.measure import time_calls
from zigma.scans import inverse, permute_tokens, relative_order, zigzag_paths

from ..bench import make_config, run

METHODS = ("index_select", "rows", "advanced")  # zigma.scans.base._GATHER values ("auto" picks rows on CUDA)


def _gather_ms(x: torch.Tensor, idx: torch.Tensor, inv: torch.Tensor, grad: torch.Tensor,
               device: torch.device) -> tuple[float, float]:
    """Median ms of permute_tokens(x, idx, inv): forward, and forward + backward."""
    def fwd() -> None:
        with torch.no_grad():
            permute_tokens(x, idx, inv)

    def fwd_bwd() -> None:
        x.grad = None
        permute_tokens(x, idx, inv).backward(grad)

    return (time_calls(fwd, device=device, warmup=3, iters=20).median,
            time_calls(fwd_bwd, device=device, warmup=3, iters=20).median)


def _median_step_ms(model_rows: list[dict], method: str, tokens: int, variant: str) -> float:
    """Median step time of one variant at one token count and gather method, over rounds (NaN if none)."""
    v = sorted(m["step_ms"] for m in model_rows if m["method"] == method and m["tokens"] == tokens
               and m["variant"] == variant and m["step_ms"])
    return v[len(v) // 2] if v else float("nan")


def gather_times(tokens: list[int], batch_tokens: int, width: int, device: torch.device) -> list[dict]:
    rows = []
    for n_tok in tokens:
        side = round(n_tok ** 0.5)
        paths = zigzag_paths(side, side)
        idx = relative_order(paths[0], paths[1]).to(device)
        inv = inverse(idx)
        batch = max(1, batch_tokens // n_tok)
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(batch, n_tok, width, device=device).to(dtype).requires_grad_()
            grad = torch.randn_like(x)
            for method in METHODS:
                scans_base._GATHER = method
                f, fb = _gather_ms(x, idx, inv, grad, device)
                moved = 2 * x.numel() * x.element_size()
                rows.append({"tokens": n_tok, "batch": batch, "dtype": str(dtype).replace("torch.", ""),
                             "method": method, "fwd_ms": f, "fwd_bwd_ms": fb, "fwd_gb_per_s": moved / f / 1e6})
                print(f"gather {n_tok:>6} tok {rows[-1]['dtype']:>8} {method:>12}: fwd {f:.3f} ms "
                      f"({rows[-1]['fwd_gb_per_s']:.0f} GB/s)  fwd+bwd {fb:.3f} ms", flush=True)
    scans_base._GATHER = "auto"
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="probe-out")
    p.add_argument("--tokens", default="1024,4096,16384")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", default="B")
    p.add_argument("--batch-tokens", type=int, default=65536)
    p.add_argument("--width", type=int, default=768)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    tokens = [int(t) for t in args.tokens.split(",")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    doc = {"device": name, "torch": torch.__version__,
           "gather": gather_times(tokens, args.batch_tokens, args.width, device), "model": []}
    cfg = make_config(tokens=args.tokens, variants="zigzag-8,no-scan", device=args.device, size=args.size,
                      batch_tokens=args.batch_tokens, mixer_check=False, permute_check=False, ceiling=False,
                      time_budget_s=math.inf)
    for r in range(args.rounds):
        for method in METHODS:
            scans_base._GATHER = method
            res = run(cfg, log=lambda s: None)
            for row in res["rows"]:
                doc["model"].append({"round": r, "method": method, "variant": row["variant"],
                                     "tokens": row["tokens"], "step_ms": row.get("step_ms"),
                                     "status": row.get("status")})
            over = res["ratios"].get("scan_overhead_pct", {})
            print(f"round {r} {method:>12}: scan overhead % " +
                  "  ".join(f"{k}: {v:.2f}" for k, v in over.items()), flush=True)
            (out / "probe.json").write_text(json.dumps(doc, indent=1))
    scans_base._GATHER = "auto"
    # summary: per method and tokens, overhead from the median over rounds of each variant's step time
    print("== scan overhead (zigzag-8 over no-scan, %), step times pooled over rounds (median)")
    for method in METHODS:
        cells = []
        for t in tokens:
            z, n = (_median_step_ms(doc["model"], method, t, v) for v in ("zigzag-8", "no-scan"))
            cells.append(f"{t}: {100 * (z - n) / n:.2f} (zigzag-8 {z:.1f} ms)")
        print(f"  {method:>12}  " + "  ".join(cells))
    (out / "probe.json").write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
