"""Why the scan kernels sit far above their roofline: mamba-ssm's selective scan (Mamba-1) and chunked SSD (Mamba-2)
timed alone at ZigMa-B's shapes while one factor moves at a time (issue 18: "each part within 2x of its roofline,
or the reason it cannot be, measured").

    python -m benchmarks.scan_kernels --out DIR          # CUDA with mamba-ssm; about a minute

Mamba-1, `selective_scan_fn` as zigma.mixer.fused calls it (u, delta, z, B, C bf16; A, D, delta_bias fp32;
softplus on delta), batch 16 x 4,096 tokens, d_inner 1,536, forward and forward + backward, with the state size N
in 1 ... 64 and everything else fixed. The bytes the kernel must move grow only by 2N values a token (B and C)
against 4 x d_inner (u, delta, z in, y out): nearly flat in N. Its work grows in proportion to N. A least-squares
line t = a + b N says which dominates: b N / t at N = 16 (ZigMa's d_state) is the share of the time spent in the
per-state recurrence. Beside it, a memory probe: the same tensors read and the outputs written by plain torch
copies, i.e. what this card's HBM needs for the kernel's bytes, measured rather than taken from the datasheet.

Mamba-2, `mamba_chunk_scan_combined` (x bf16 (b, l, 24 heads, 64), dt, B, C one group), forward + backward at
d_state 64, with the chunk size in 64 / 128 / 256 and d_state in 16 / 64 / 128 at chunk 256: the SSD splits its
work into the chunk-local quadratic part (grows with the chunk) and the chunk states (grow with d_state x
headdim a chunk), so the sweep shows which part the time follows.

Every time is the median of `--reps` CUDA-event timings after warm-up (ms), n stated in the output.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from plugins.measure import time_calls


def timed(fn, reps: int, warmup: int = 3) -> float:
    """Median ms of `fn()` over `reps` CUDA-event timings after `warmup` calls (plugins.measure, as the bench)."""
    return time_calls(fn, device="cuda", warmup=warmup, iters=reps).median


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (a, b) of y = a + b x (statistics.linear_regression, in this order)."""
    slope, intercept = statistics.linear_regression(xs, ys)
    return intercept, slope


def mamba1_bytes(batch: int, length: int, e: int, n: int, act: int = 2) -> tuple[float, float]:
    """(forward, backward) bytes the selective scan must move at least: forward reads u, delta, z (B, E, L) and
    B, C (B, N, L), writes y; backward reads those and dy, writes du, ddelta, dz, dB, dC (A, D: negligible)."""
    tokens = batch * length
    fwd = tokens * (4 * e + 2 * n) * act
    bwd = tokens * (4 * e + 2 * n + 3 * e + 2 * n) * act
    return fwd, bwd


def _mamba1_case(scan, u, delta, z, dy, n: int, reps: int, g) -> tuple[float, float]:
    """(forward ms, forward + backward ms) of the selective scan at state size n."""
    b, e, length = u.shape
    A = -torch.rand(e, n, device=u.device, generator=g).add(0.5).requires_grad_()
    B, C = (torch.randn(b, n, length, device=u.device, dtype=u.dtype, generator=g, requires_grad=True)
            for _ in range(2))
    D = torch.ones(e, device=u.device, requires_grad=True)
    bias = torch.full((e,), -4.0, device=u.device, requires_grad=True)
    leaves = [u, delta, z, A, B, C, D, bias]

    def fwd():
        return scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True)

    def fwd_bwd():  # gradients returned, not accumulated into .grad (no extra adds timed)
        torch.autograd.grad(fwd(), leaves, dy)

    with torch.no_grad():
        t_fwd = timed(fwd, reps)
    return t_fwd, timed(fwd_bwd, reps)


def mamba1_sweep(args, dev, rows: list, save) -> dict:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    b, length, e, bf = args.batch, args.tokens, args.d_inner, torch.bfloat16
    g = torch.Generator(dev).manual_seed(0)
    u, delta, z = (torch.randn(b, e, length, device=dev, dtype=bf, generator=g, requires_grad=True) for _ in range(3))
    dy = torch.randn(b, e, length, device=dev, dtype=bf, generator=g)
    for n in args.states:
        t_fwd, t_all = _mamba1_case(selective_scan_fn, u, delta, z, dy, n, args.reps, g)
        fb, bb = mamba1_bytes(b, length, e, n)
        rows.append({"d_state": n, "fwd_ms": t_fwd, "fwd_bwd_ms": t_all, "fwd_gb": fb / 1e9, "bwd_gb": bb / 1e9,
                     "fwd_gflop": 2 * 9 * b * length * e * n / 1e9})
        print(f"mamba1 N={n:3d}: fwd {t_fwd:7.3f} ms, fwd+bwd {t_all:7.3f} ms", flush=True)
        save()
    # the memory probe: the kernel's forward and backward tensors at N = 16, each read once and written once
    n = 16
    ins = ([torch.empty(b, e, length, device=dev, dtype=bf) for _ in range(4)]
           + [torch.empty(b, n, length, device=dev, dtype=bf) for _ in range(2)])
    outs = [torch.empty_like(t) for t in ins[:3] + ins[4:]]   # du, ddelta, dz, dB, dC (the backward's writes)

    def probe():  # reads u, delta, z, dy, B, C; writes five gradients and y: the backward's least traffic + y
        for src, dst in zip(ins[:3] + ins[4:], outs):
            dst.copy_(src)
        ins[3].mul_(1.0)                                  # dy read and y written (as one in-place pass)

    probe_ms = timed(probe, args.reps)
    fwd_gb, bwd_gb = mamba1_bytes(b, length, e, n)
    xs, ys = [r["d_state"] for r in rows], [r["fwd_bwd_ms"] for r in rows]
    a, slope = fit_line(xs, ys)
    at16 = next((r for r in rows if r["d_state"] == 16), rows[-1])
    probe_gb = sum(t.numel() * t.element_size() for t in ins + outs) / 1e9 + ins[3].numel() * 2 / 1e9
    return {"rows": rows, "fit_fwd_bwd": {"a_ms": a, "b_ms_per_state": slope,
                                          "state_share_at_16": slope * 16 / at16["fwd_bwd_ms"]},
            "memory_probe": {"ms": probe_ms, "gb": probe_gb, "tb_per_s": probe_gb / probe_ms,
                             "kernel_gb_at_16": (fwd_gb + bwd_gb) / 1e9,
                             "kernel_bytes_at_probe_rate_ms": (fwd_gb + bwd_gb) / 1e9 / (probe_gb / probe_ms)}}


def mamba2_sweep(args, dev, rows: list, save) -> dict:
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    b, length, heads, p, bf = args.batch, args.tokens, args.d_inner // 64, 64, torch.bfloat16
    g = torch.Generator(dev).manual_seed(0)
    x = torch.randn(b, length, heads, p, device=dev, dtype=bf, generator=g, requires_grad=True)
    dt = torch.randn(b, length, heads, device=dev, dtype=bf, generator=g).mul(0.5).sub(3).requires_grad_()
    A = -torch.rand(heads, device=dev, generator=g).mul(15).add(1).requires_grad_()
    dy = torch.randn(b, length, heads, p, device=dev, dtype=bf, generator=g)
    for n, chunk in [(64, 256), (64, 128), (64, 64), (16, 256), (128, 256)]:  # default first
        B, C = (torch.randn(b, length, 1, n, device=dev, dtype=bf, generator=g, requires_grad=True) for _ in range(2))

        def run(chunk=chunk, B=B, C=C):
            y = mamba_chunk_scan_combined(x, dt, A, B, C, chunk, dt_softplus=True)
            torch.autograd.grad(y, [x, dt, A, B, C], dy)

        ms = timed(run, args.reps)
        # least bytes, bf16: forward reads x, dt, B, C and writes y; backward reads them and dy, writes dx, ddt, dB, dC
        gb = b * length * (5 * heads * p + 3 * heads + 6 * n) * 2 / 1e9
        rows.append({"d_state": n, "chunk": chunk, "fwd_bwd_ms": ms, "gb_least": gb})
        print(f"mamba2 N={n:3d} chunk={chunk:3d}: fwd+bwd {ms:7.3f} ms", flush=True)
        save()
    return {"rows": rows}


def markdown(doc: dict) -> str:
    a = doc["args"]
    title = (f"# Scan kernels alone on {doc['device']} (benchmarks/scan_kernels.py; batch {a['batch']} x "
             f"{a['tokens']} tokens, d_inner {a['d_inner']}, bf16; median of {a['reps']} CUDA-event timings)")
    lines = [title, ""]
    m1 = doc.get("mamba1")
    if m1:
        lines += ["## Mamba-1 selective_scan_fn against its state size N", "",
                  "| N | fwd ms | fwd+bwd ms | least GB fwd+bwd | fwd GFLOP (9BLEN MACs) |", "|---|---|---|---|---|"]
        lines += [(f"| {r['d_state']} | {r['fwd_ms']:.3f} | {r['fwd_bwd_ms']:.3f} | "
                   f"{r['fwd_gb'] + r['bwd_gb']:.2f} | {r['fwd_gflop']:.0f} |") for r in m1["rows"]]
        if "fit_fwd_bwd" in m1:  # absent when the run was cut before the sweep's end
            f, p = m1["fit_fwd_bwd"], m1["memory_probe"]
            fit = (f"Least squares fwd+bwd: t = {f['a_ms']:.3f} ms + {f['b_ms_per_state']:.3f} ms x N; at N = 16 "
                   f"the per-state part is {100 * f['state_share_at_16']:.0f} % of the time.")
            probe = (f"Memory probe (the same tensors copied by torch): {p['gb']:.2f} GB in {p['ms']:.3f} ms = "
                     f"{p['tb_per_s']:.2f} TB/s; the kernel's least bytes at N = 16 ({p['kernel_gb_at_16']:.2f} GB) "
                     f"would take {p['kernel_bytes_at_probe_rate_ms']:.3f} ms at that rate.")
            lines += ["", fit, probe, ""]
    m2 = doc.get("mamba2")
    if m2:
        head = (f"## Mamba-2 mamba_chunk_scan_combined ({a['d_inner'] // 64} heads x 64, one group) against chunk "
                "size and N")
        lines += [head, "",
                  "| N | chunk | fwd+bwd ms | least GB |", "|---|---|---|---|"]
        lines += [f"| {r['d_state']} | {r['chunk']} | {r['fwd_bwd_ms']:.3f} | {r['gb_least']:.2f} |" for r in m2["rows"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scan_kernels", description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--d-inner", type=int, default=1536)
    p.add_argument("--states", default="1,2,4,8,16,32,64", help="Mamba-1 d_state values")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--out", default="scan-kernels-out")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("needs a CUDA device and mamba-ssm's kernels (nothing to time on a CPU)")
    args.states = [int(s) for s in args.states.split(",") if s]
    dev = torch.device("cuda")
    doc = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "args": vars(args)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    def save() -> None:  # after every timing: a run cut by its timeout keeps what it measured
        (out / "scan_kernels.json").write_text(json.dumps(doc, indent=1))
        (out / "scan_kernels.md").write_text(markdown(doc))

    for name, sweep in (("mamba1", mamba1_sweep), ("mamba2", mamba2_sweep)):
        doc[name] = {"rows": []}
        try:
            doc[name].update(sweep(args, dev, doc[name]["rows"], save))
        except Exception as err:  # noqa: BLE001 - the other sweep still runs; the error is kept
            doc[f"{name}_error"] = f"{type(err).__name__}: {err}"
            print(f"{name}: {doc[f'{name}_error']}", flush=True)
        save()
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
