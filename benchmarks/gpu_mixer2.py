"""GPU check and benchmark of Mamba2Mixer: fused (mamba-ssm's Triton SSD) vs reference (chunked SSD in PyTorch).

One run writes $OUT/gpu_mixer2.json and $OUT/gpu_mixer2.md:
1. init parity: one torch seed gives Mamba2Mixer(num_directions=1) the same weights as mamba_ssm.Mamba2;
2. fused vs reference: outputs and every gradient (fp32 tol 1e-4, bf16 autocast tol 2e-2) for 1, 2 and 4
   directions, with segments, at a length that is not a multiple of the chunk size;
3. state dicts: ours loads into mamba_ssm.Mamba2 (strict) and both give the same output;
4. fwd+bwd time and peak memory of one fused Mamba-1 (MambaMixer) and one fused Mamba-2 layer, bf16 autocast.

    PYTHONPATH=. python -m benchmarks.gpu_mixer2 --out $OUT          # on the GPU machine (~1-2 min)
    python -m benchmarks.gpu_mixer2 --cpu-dry-run --out /tmp/dry      # tiny sizes, 'reference' stands in for 'fused'
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch

from zigma.mixer import Mamba2Mixer, MambaMixer
from zigma.mixer.fused import ssd_available

from .gpu_mixer import TOL, Run, outputs_and_grads, rel_err, time_fwd_bwd

MAMBA2 = {"d_state": 64, "headdim": 64, "ngroups": 1, "expand": 2, "d_conv": 4, "chunk_size": 256}


class Run2(Run):
    def save(self):
        (self.out / "gpu_mixer2.json").write_text(json.dumps(self.data, indent=1))

    def mixer(self, d_model, backend, **kw):
        return Mamba2Mixer(d_model, backend=backend, device=self.device, **{**self.sizes, **kw})


def check_init(run, d_model):
    """Same global seed -> the same weights as mamba_ssm.Mamba2 (names, shapes, values)."""
    if run.dry:
        return {"skipped": "no mamba_ssm on CPU"}
    from mamba_ssm import Mamba2

    torch.manual_seed(123)
    theirs = Mamba2(d_model, rmsnorm=True, norm_before_gate=False, device="cuda", **MAMBA2).state_dict()
    torch.manual_seed(123)
    ours = Mamba2Mixer(d_model, device="cuda", **MAMBA2).state_dict()
    shapes = {k: tuple(v.shape) for k, v in theirs.items()} == {k: tuple(v.shape) for k, v in ours.items()}
    return {"same_names_and_shapes": shapes, "bitwise_identical": shapes and all(
        torch.equal(theirs[k], ours[k]) for k in theirs), "keys": {k: list(v.shape) for k, v in theirs.items()}}


CASES = [("uni", 1, 1, None), ("uni-segments-3", 1, 3, None), ("bi-flip", 2, 1, None),
         ("parallel-4-index", 4, 1, "perm"), ("bi-index-segments-3", 2, 3, "perm")]


def check_agreement(run, d_model, batch, length):
    """Fused vs reference on outputs and all gradients, fp32 and bf16 autocast."""
    result = {}
    for name, k, segments, kind in CASES:
        g = torch.Generator().manual_seed(1)
        x = torch.randn(batch, length, d_model, generator=g).to(run.device)
        weight = torch.randn(batch, length, d_model, generator=g).to(run.device)
        branch = None if kind is None else [torch.randperm(length, generator=g) for _ in range(k - 1)]
        torch.manual_seed(0)
        fused = run.mixer(d_model, run.fused, num_directions=k)
        ref = run.mixer(d_model, "reference", num_directions=k)
        ref.load_state_dict(fused.state_dict())
        row = {}
        for precision, autocast in (("fp32", False), ("bf16", True)):
            kw = {"segments": segments, "branch_index": branch}
            of, gf = outputs_and_grads(fused, x, weight, autocast and not run.dry, **kw)
            orf, gr = outputs_and_grads(ref, x, weight, autocast and not run.dry, **kw)
            errs = {"out": rel_err(of, orf), **{n: rel_err(gf[n], gr[n]) for n in gr}}
            worst = max(errs, key=errs.get)
            row[precision] = {"max_rel_err": errs[worst], "worst": worst, "pass": errs[worst] < TOL[precision],
                              "errors": errs}
        result[name] = row
        print(f"   {name}: fp32 {row['fp32']['max_rel_err']:.1e} bf16 {row['bf16']['max_rel_err']:.1e}", flush=True)
    return result


def check_state_dict(run, d_model, batch, length):
    """Our trained-looking state dict (randomized D, norm) loads into mamba_ssm.Mamba2; same outputs (fp32)."""
    torch.manual_seed(0)
    ours = run.mixer(d_model, run.fused)
    with torch.no_grad():
        ours.D.uniform_(-1, 1)
        ours.norm.weight.uniform_(0.5, 1.5)
    if run.dry:
        other = run.mixer(d_model, "reference")
        other.load_state_dict(ours.state_dict())
    else:
        from mamba_ssm import Mamba2
        other = Mamba2(d_model, rmsnorm=True, norm_before_gate=False, device="cuda", **MAMBA2)
        other.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(batch, length, d_model, device=run.device)
    with torch.no_grad():
        err = rel_err(ours(x), other(x))
    return {"loaded_into": type(other).__name__, "strict": True, "max_rel_err": err, "pass": err < TOL["fp32"]}


def bench(run, d_model, lengths, batch_tokens, iters):
    """fwd+bwd ms (bf16 autocast) and peak MB of one fused Mamba-1 and one fused Mamba-2 layer."""
    rows = []
    for length in lengths:
        batch = max(1, batch_tokens // length)
        x = torch.randn(batch, length, d_model, device=run.device)
        row = {"tokens": length, "batch": batch}
        for label, build in (("mamba1", lambda: MambaMixer(d_model, backend=run.fused, device=run.device)),
                             ("mamba2", lambda: run.mixer(d_model, run.fused))):
            torch.manual_seed(0)
            try:
                row[f"{label} ms"], row[f"{label} peak MB"] = time_fwd_bwd(build(), x, not run.dry, iters)
            except torch.OutOfMemoryError:
                row[f"{label} ms"] = row[f"{label} peak MB"] = math.nan
            if x.is_cuda:
                torch.cuda.empty_cache()
        row["mamba1/mamba2"] = row["mamba1 ms"] / row["mamba2 ms"]
        rows.append(row)
        print(f"   {row}", flush=True)
    return rows


def summary(data):
    """A short markdown summary of the JSON."""
    env, sec = data["env"], data["sections"]
    lines = [f"# Mamba2Mixer on {env.get('device', 'CPU (dry run)')}", "",
             (f"torch {env['torch']}, mamba_ssm {env.get('mamba_ssm')}, "
              f"causal_conv1d {env.get('causal_conv1d')}, triton {env.get('triton')}, "
              f"CUDA {env.get('cuda')}. Produced by `benchmarks/gpu_mixer2.py`."), ""]
    if "init" in sec:
        init = {k: v for k, v in sec["init"].items() if k != "keys"}
        lines += ["## Init parity with mamba_ssm.Mamba2 (same torch seed)", "", f"`{json.dumps(init)}`", ""]
    if "agreement" in sec:
        lines += ["## Fused vs reference: max relative error over the output and all gradients", "",
                  "| case | fp32 (tol 1e-4) | worst | bf16 autocast (tol 2e-2) | worst |", "|---|---|---|---|---|"]
        for name, row in sec["agreement"].items():
            cells = []
            for p in ("fp32", "bf16"):
                r = row[p]
                cells += [f"{r['max_rel_err']:.1e} {'ok' if r['pass'] else 'FAIL'}", r["worst"]]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if "state_dict" in sec:
        s = sec["state_dict"]
        lines += [(f"## State dict into {s['loaded_into']} (strict): output max rel err "
                   f"{s['max_rel_err']:.1e} {'ok' if s['pass'] else 'FAIL'}"), ""]
    if "bench" in sec:
        lines += ["## One layer fwd+bwd, bf16 autocast (median ms, peak MB)", "",
                  "| tokens | batch | mamba1 ms | mamba2 ms | mamba1/mamba2 | peak MB m1 / m2 |", "|---|---|---|---|---|---|"]
        for r in sec["bench"]:
            lines.append(f"| {r['tokens']} | {r['batch']} | {r['mamba1 ms']:.2f} | {r['mamba2 ms']:.2f} | "
                         f"{r['mamba1/mamba2']:.2f}x | {r['mamba1 peak MB']:.0f} / {r['mamba2 peak MB']:.0f} |")
        lines.append("")
    if data["errors"]:
        lines += ["## Errors", ""] + [f"- {k}: `{v.strip().splitlines()[-1]}`" for k, v in data["errors"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--cpu-dry-run", action="store_true")
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--batch-tokens", type=int, default=65536)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--no-bench", action="store_true", help="the checks only (init, agreement, state dict)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dry = args.cpu_dry_run
    if dry:
        torch.set_num_threads(1)
    elif not (torch.cuda.is_available() and ssd_available()):
        raise SystemExit("needs CUDA and mamba-ssm (Triton SSD) + causal-conv1d (or pass --cpu-dry-run)")
    run = Run2(out, dry)
    run.sizes = {"d_state": 16, "headdim": 16, "chunk_size": 16} if dry else MAMBA2
    print(json.dumps(run.data["env"]), flush=True)
    small = (64, 2, 42) if dry else (256, 2, 999)  # d_model, batch, length (3 segments; 999: not a multiple of 256)
    run.section("init", check_init, 256)
    run.section("agreement", check_agreement, *small)
    run.section("state_dict", check_state_dict, *small)
    if args.no_bench:
        pass
    elif dry:
        run.section("bench", bench, 64, [64], 128, 2)
    else:
        run.section("bench", bench, args.d_model, [256, 1024, 4096, 16384], args.batch_tokens, args.iters)
    (out / "gpu_mixer2.md").write_text(summary(run.data))
    print(summary(run.data), flush=True)


if __name__ == "__main__":
    main()
