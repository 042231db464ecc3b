"""CPU benchmark of the pure-PyTorch Mamba mixer (issues 4 and 11). Prints tables; asserts nothing.

1. The reference (parallel) selective scan vs the step-by-step loop, side by side at 256 / 1024 / 4096 tokens.
2. The reference MambaMixer vs a plain nn.Linear stack with the same parameter count per token.

    python -m benchmarks.mixer_cpu --threads 2 [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time

import torch
from torch import nn

from zigma.mixer import MambaMixer, selective_scan_naive, selective_scan_ref


def scan_inputs(batch, width, d_state, length, generator):
    """Mixer-like scan inputs (fp32, requires_grad): dt ~ softplus(N(-4, 1)) as at init, A = -[1..N]."""
    def r(*shape):
        return torch.randn(*shape, generator=generator)

    t = {"u": r(batch, width, length), "delta": r(batch, width, length) - 4.0,
         "A": -torch.arange(1, d_state + 1.0).expand(width, d_state).contiguous(),
         "B": r(batch, d_state, length), "C": r(batch, d_state, length), "D": torch.ones(width),
         "z": r(batch, width, length), "delta_bias": torch.zeros(width)}
    return {k: v.requires_grad_() for k, v in t.items()}


def timer(forward, leaves, backward):
    """A closure timing forward() (and the backward of its sum) once: (wall s, process CPU s)."""
    def run():
        for v in leaves:
            v.grad = None
        wall, cpu = time.perf_counter(), time.process_time()
        out = forward()
        if backward:
            out.sum().backward()
        return time.perf_counter() - wall, time.process_time() - cpu
    return run


def best_of(runs, repeats, warmup):
    """Interleave the closures `repeats` times (after one warm-up each); the minimum wall and CPU time of each."""
    if warmup:
        for run in runs.values():
            run()
    best = {k: (float("inf"), float("inf")) for k in runs}
    for _ in range(repeats):
        for k, run in runs.items():
            wall, cpu = run()
            best[k] = (min(best[k][0], wall), min(best[k][1], cpu))
    return {k: v[0] for k, v in best.items()}, {k: v[1] for k, v in best.items()}


def linear_stack(d_model, params):
    """Linear(D, H) -> GELU -> Linear(H, D) with H chosen so the parameter count matches `params`."""
    hidden = max(1, round((params - d_model) / (2 * d_model + 1)))
    return nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))


def bench_scan(args, g):
    rows = []
    for length in args.tokens:
        inputs = scan_inputs(args.batch, 2 * args.d_model, args.d_state, length, g)
        ref = functools.partial(selective_scan_ref, **inputs, delta_softplus=True)
        loop = functools.partial(selective_scan_naive, **inputs, delta_softplus=True)
        leaves = list(inputs.values())
        runs = {"ref fwd": timer(ref, leaves, False), "ref fwd+bwd": timer(ref, leaves, True),
                "loop fwd": timer(loop, leaves, False), "loop fwd+bwd": timer(loop, leaves, True)}
        t, cpu = best_of(runs, args.repeats, warmup=length == args.tokens[0])
        rows.append({"tokens": length, **{k: v * 1e3 for k, v in t.items()},
                     "speedup fwd": t["loop fwd"] / t["ref fwd"], "speedup fwd+bwd": t["loop fwd+bwd"] / t["ref fwd+bwd"],
                     "cpu_ms": {k: v * 1e3 for k, v in cpu.items()},
                     "cpu speedup fwd": cpu["loop fwd"] / cpu["ref fwd"],
                     "cpu speedup fwd+bwd": cpu["loop fwd+bwd"] / cpu["ref fwd+bwd"]})
    return rows


def bench_mixer(args, g):
    rows = []
    for d_model in args.widths:
        mixer = MambaMixer(d_model, d_state=args.d_state, backend="reference")
        params = sum(p.numel() for p in mixer.parameters())
        stack = linear_stack(d_model, params)
        for length in args.tokens:
            batch = max(1, args.batch_tokens // length)
            x = torch.randn(batch, length, d_model, generator=g, requires_grad=True)
            leaves = [x, *mixer.parameters(), *stack.parameters()]
            run_mixer, run_stack = functools.partial(mixer, x), functools.partial(stack, x)
            runs = {"mixer fwd": timer(run_mixer, leaves, False), "mixer fwd+bwd": timer(run_mixer, leaves, True),
                    "linear fwd": timer(run_stack, leaves, False), "linear fwd+bwd": timer(run_stack, leaves, True)}
            t, cpu = best_of(runs, args.repeats, warmup=True)
            rows.append({"d_model": d_model, "tokens": length, "batch": batch, "params": params,
                         "linear params": sum(p.numel() for p in stack.parameters()),
                         **{k: v * 1e3 for k, v in t.items()},
                         "ratio fwd": t["mixer fwd"] / t["linear fwd"],
                         "ratio fwd+bwd": t["mixer fwd+bwd"] / t["linear fwd+bwd"],
                         "cpu_ms": {k: v * 1e3 for k, v in cpu.items()},
                         "cpu ratio fwd+bwd": cpu["mixer fwd+bwd"] / cpu["linear fwd+bwd"]})
    return rows


def table(rows, columns):
    """A markdown table of the chosen columns (floats with 1-2 decimals)."""
    def fmt(v):
        return (f"{v:.2f}" if v < 10 else f"{v:.1f}") if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--batch", type=int, default=4, help="scan benchmark batch")
    p.add_argument("--d-model", type=int, default=64, help="scan benchmark: width d_inner = 2 * d_model")
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--widths", type=int, nargs="+", default=[64, 192, 384], help="mixer vs linear stack widths")
    p.add_argument("--batch-tokens", type=int, default=8192, help="mixer benchmark tokens per batch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip", choices=["scan", "mixer"], default=None)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(), "loadavg_before": os.getloadavg()}
    print(f"torch {env['torch']}, {env['threads']} threads, load average {env['loadavg_before']}")
    result = {"env": env, "args": vars(args)}
    if args.skip != "scan":
        result["scan"] = bench_scan(args, g)
        print(f"\nSelective scan, fp32, batch {args.batch}, width {2 * args.d_model}, d_state {args.d_state} (wall ms, best "
              f"of {args.repeats}; 'cpu speedup' = the same ratio on process CPU time):")
        print(table(result["scan"], ["tokens", "ref fwd", "loop fwd", "speedup fwd", "ref fwd+bwd", "loop fwd+bwd",
                                     "speedup fwd+bwd", "cpu speedup fwd", "cpu speedup fwd+bwd"]))
    if args.skip != "mixer":
        result["mixer"] = bench_mixer(args, g)
        print(f"\nReference MambaMixer vs Linear-GELU-Linear of equal parameter count, fp32, {args.batch_tokens} tokens a "
              "batch (ms):")
        print(table(result["mixer"], ["d_model", "tokens", "batch", "params", "mixer fwd", "linear fwd", "ratio fwd",
                                      "mixer fwd+bwd", "linear fwd+bwd", "ratio fwd+bwd", "cpu ratio fwd+bwd"]))
    env["loadavg_after"] = os.getloadavg()
    print(f"\nload average after: {env['loadavg_after']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
