"""Two-direction Mamba-1 layers (sweep-2, the ViM-style backbone) on the fused kernels: the path they take now
(each direction through mamba_inner_fn on one shared in_proj, `fused.mamba_directions_forward`) beside the path
they took before (token-major reversal, causal_conv1d + selective_scan per direction, then one out_proj:
`over_directions` + `fused.ssm_branch`), and one direction (mamba_inner_fn) for scale, in one run.

    python -m benchmarks.directions --out DIR          # CUDA with mamba-ssm + causal-conv1d; under a minute

One MambaMixer at ZigMa-B's width (d_model 768, d_inner 1,536, d_state 16), batch 16 x 4,096 tokens, bf16 autocast,
forward + backward (gradients of the input and every parameter): the median of `--reps` CUDA-event timings after
warm-up (ms) and the allocator's peak above the inputs (GiB), each path in turn, then the ratios. The outputs and
gradients of the two two-direction paths are compared too (relative L2 error, bf16), so a faster path that computes
something else shows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from plugins.measure import time_calls
from zigma.mixer import MambaMixer, fused
from zigma.mixer.mamba import branch_orders, over_directions


def old_path(mixer: MambaMixer, x: torch.Tensor) -> torch.Tensor:
    """The token-major multi-direction path (kept for segmented layers and installs without causal-conv1d)."""
    xz = torch.nn.functional.linear(x, mixer.in_proj.weight, mixer.in_proj.bias)
    orders = branch_orders(mixer.num_directions, None, x.shape[1], x.device)
    y = over_directions(xz, orders, 1, lambda u, k: fused.ssm_branch(u, *mixer.direction_parameters(k)),
                        mixer.combine)
    return mixer.out_proj(y)


def measure(fn, mixer: MambaMixer, x: torch.Tensor, dy: torch.Tensor, reps: int) -> dict:
    leaves = [x, *mixer.parameters()]

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = fn(x)
        return torch.autograd.grad(out, leaves, dy)

    timing = time_calls(step, device="cuda", warmup=3, iters=reps)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    grads = step()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    return {"ms": timing.median, "n": reps, "peak_gib": peak, "grads": grads}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.directions", description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--out", default="directions-out")
    args = p.parse_args(argv)
    if not (torch.cuda.is_available() and fused.fused_available()
            and fused.fused_kernels()["mamba_inner_fn"] is not None):
        p.error("needs a CUDA device with mamba-ssm and causal-conv1d (the fused paths are what is timed)")
    torch.manual_seed(0)
    one = MambaMixer(args.d_model, num_directions=1, backend="fused", device="cuda")
    two = MambaMixer(args.d_model, num_directions=2, backend="fused", device="cuda")
    x = torch.randn(args.batch, args.tokens, args.d_model, device="cuda", requires_grad=True)
    dy = torch.randn(args.batch, args.tokens, args.d_model, device="cuda", dtype=torch.bfloat16)
    cases = {"one direction (mamba_inner_fn)": (one, one),
             "two directions, now (mamba_inner_fn each)": (two, two),
             "two directions, before (token-major branches)": (lambda u: old_path(two, u), two)}
    rows = {}
    for name, (fn, mixer) in cases.items():
        rows[name] = measure(fn, mixer, x, dy, args.reps)
        print(f"{name}: {rows[name]['ms']:.3f} ms fwd+bwd, {rows[name]['peak_gib']:.2f} GiB peak", flush=True)
    now, before = rows["two directions, now (mamba_inner_fn each)"], rows["two directions, before (token-major branches)"]
    agree = {"grads_max_rel_err": max(rel(a, b) for a, b in zip(now["grads"], before["grads"]))}
    base = rows["one direction (mamba_inner_fn)"]["ms"]
    doc = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "args": vars(args),
           "rows": {k: {kk: vv for kk, vv in v.items() if kk != "grads"} for k, v in rows.items()},
           "before_over_now": before["ms"] / now["ms"], "now_over_one": now["ms"] / base,
           "before_over_one": before["ms"] / base, **agree}
    title = (f"# Two-direction Mamba-1 layer paths on {doc['device']} (benchmarks/directions.py; batch {args.batch} "
             f"x {args.tokens} tokens, d_model {args.d_model}, bf16 autocast, fwd+bwd, median of {args.reps} "
             "CUDA-event timings)")
    lines = [title, "", "| path | ms | peak GiB |", "|---|---|---|"]
    lines += [f"| {k} | {v['ms']:.3f} | {v['peak_gib']:.2f} |" for k, v in doc["rows"].items()]
    summary = (f"Before / now: {doc['before_over_now']:.2f}x; two directions now / one: {doc['now_over_one']:.2f}x "
               f"(before: {doc['before_over_one']:.2f}x). Gradients of the two paths agree within a relative L2 "
               f"error of {agree['grads_max_rel_err']:.1e} (bf16).")
    lines += ["", summary]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "directions.json").write_text(json.dumps(doc, indent=1))
    (out / "directions.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
