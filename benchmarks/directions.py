"""Two-direction layers (sweep-2, the ViM-style backbone) on the fused kernels: the path they take now beside the
path they took before, and one direction for scale, in one run, for each mixer.
- Mamba-1: now each direction through mamba_inner_fn on one shared in_proj (`fused.mamba_directions_forward`);
  before token-major reversal, causal_conv1d + selective_scan per direction, then one out_proj (`over_directions` +
  `fused.ssm_branch`).
- Mamba-2: now each direction through mamba-ssm's split conv + SSD kernel with its gate, then one norm
  (`fused.mamba2_directions_forward`); before conv + SSD per direction, summed, then the gated norm
  (`over_directions` + `Mamba2Mixer._ssm`).

    python -m benchmarks.directions --out DIR          # CUDA with mamba-ssm + causal-conv1d; about a minute

One mixer at ZigMa-B's width (d_model 768, d_inner 1,536; mamba-ssm's default d_state), batch 16 x 4,096 tokens, bf16 autocast,
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
from zigma.mixer import Mamba2Mixer, MambaMixer, fused
from zigma.mixer.mamba import branch_orders, over_directions


def old_path2(mixer: Mamba2Mixer, x: torch.Tensor) -> torch.Tensor:
    """Mamba-2's per-direction path (kept for segmented layers and ssd 'fla')."""
    zxbcdt = mixer.in_proj(x)
    z, xbcdt = zxbcdt[..., : mixer.d_inner], zxbcdt[..., mixer.d_inner:]
    orders = branch_orders(mixer.num_directions, None, x.shape[1], x.device)
    y = over_directions(xbcdt, orders, 1, lambda u, k: mixer._ssm(u, k, True), mixer.combine)
    return mixer.out_proj(mixer.norm(y, z))


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
    p.add_argument("--mixers", default="mamba1,mamba2", help="which mixers' paths to time")
    p.add_argument("--out", default="directions-out")
    args = p.parse_args(argv)
    if not (torch.cuda.is_available() and fused.fused_available() and fused.ssd_available()
            and fused.fused_kernels()["mamba_inner_fn"] is not None):
        p.error("needs a CUDA device with mamba-ssm and causal-conv1d (the fused paths are what is timed)")
    x = torch.randn(args.batch, args.tokens, args.d_model, device="cuda", requires_grad=True)
    dy = torch.randn(args.batch, args.tokens, args.d_model, device="cuda", dtype=torch.bfloat16)
    doc = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "args": vars(args), "rows": {}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every timing: a run cut by its timeout keeps what it measured
        (out / "directions.json").write_text(json.dumps(doc, indent=1))
        (out / "directions.md").write_text(markdown(doc))

    for label, cls, before in (("mamba1", MambaMixer, old_path), ("mamba2", Mamba2Mixer, old_path2)):
        if label not in args.mixers.split(","):
            continue
        try:
            torch.manual_seed(0)
            one = cls(args.d_model, num_directions=1, backend="fused", device="cuda")
            two = cls(args.d_model, num_directions=2, backend="fused", device="cuda")
            cases = {"one direction": (one, one), "two directions, now": (two, two),
                     "two directions, before": (lambda u, two=two, before=before: before(two, u), two)}
            got = {}
            for name, (fn, mixer) in cases.items():
                got[name] = r = measure(fn, mixer, x, dy, args.reps)
                doc["rows"][f"{label}: {name}"] = {k: v for k, v in r.items() if k != "grads"}
                print(f"{label}: {name}: {r['ms']:.3f} ms fwd+bwd, {r['peak_gib']:.2f} GiB peak", flush=True)
                save()
            now, then, base = got["two directions, now"], got["two directions, before"], got["one direction"]["ms"]
            doc[label] = {"before_over_now": then["ms"] / now["ms"], "now_over_one": now["ms"] / base,
                          "before_over_one": then["ms"] / base,
                          "grads_max_rel_err": max(rel(a, b) for a, b in zip(now["grads"], then["grads"]))}
            del got, one, two
        except Exception as err:  # noqa: BLE001 - the other mixer still runs; the error is kept
            doc[f"{label}_error"] = f"{type(err).__name__}: {err}"
            print(f"{label}: {doc[f'{label}_error']}", flush=True)
        torch.cuda.empty_cache()
        save()
    print(markdown(doc))
    return 0


def markdown(doc: dict) -> str:
    """The run's table and each mixer's ratios (a mixer cut short or failed: its rows so far, its error)."""
    a = doc["args"]
    title = (f"# Two-direction layer paths on {doc['device']} (benchmarks/directions.py; batch {a['batch']} "
             f"x {a['tokens']} tokens, d_model {a['d_model']}, bf16 autocast, fwd+bwd, median of {a['reps']} "
             "CUDA-event timings)")
    lines = [title, "", "| path | ms | peak GiB |", "|---|---|---|"]
    lines += [f"| {k} | {v['ms']:.3f} | {v['peak_gib']:.2f} |" for k, v in doc["rows"].items()]
    for label in ("mamba1", "mamba2"):
        if label in doc:
            r = doc[label]
            lines += ["", (f"{label}: before / now {r['before_over_now']:.2f}x; two directions now / one "
                           f"{r['now_over_one']:.2f}x (before: {r['before_over_one']:.2f}x); the two paths' "
                           f"gradients agree within a relative L2 error of {r['grads_max_rel_err']:.1e} (bf16).")]
        if f"{label}_error" in doc:
            lines += ["", f"{label}: not finished: {doc[f'{label}_error']}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
