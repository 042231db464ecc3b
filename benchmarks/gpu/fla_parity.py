"""How far Mamba-2's two fused SSD kernels (mamba-ssm's and flash-linear-attention's chunk_simple_gla, ssd 'fla') are
from the exact answer, side by side on one input: each mixer's output and every gradient against the pure-PyTorch
reference mixer run in fp64 (the oracle), and against the reference in the same precision. Issue 18's question: is
fla's fp32 parity miss TF32 rounding (then mamba-ssm's kernel misses by as much) or a wrong mapping (O(1) off)?
Run on a CUDA machine with mamba-ssm and fla-core (TRITON_F32_DEFAULT=ieee makes Triton's fp32 dots exact fp32):
    python -m benchmarks.gpu.fla_parity --out OUT/fla_parity
Prints a markdown table and writes fla_parity.json."""

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from zigma.mixer import FusedUnavailableError, Mamba2Mixer


def rel_err(a, b):
    """max |a - b| / max |b|, b the reference."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def run(m, x, dtype, segments):
    x = x.detach().to(torch.float64 if dtype == torch.float64 else torch.float32).requires_grad_(True)
    with torch.autocast("cuda", dtype=dtype, enabled=dtype == torch.bfloat16):
        out = m(x, segments=segments)
    grads = torch.autograd.grad(out.double().square().sum(), (x, *m.parameters()))
    names = ["x", *(n for n, _ in m.named_parameters())]
    return out.detach(), dict(zip(names, (g.detach() for g in grads)))


def worst(res, ref):
    """(output error, worst gradient error, its name)."""
    grad = max(((rel_err(g, ref[1][n]), n) for n, g in res[1].items()), key=lambda t: t[0])
    return rel_err(res[0], ref[0]), grad[0], grad[1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--length", type=int, default=300)
    p.add_argument("--segments", type=int, default=3)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, refused = [], {}
    for nd, ng in ((1, 1), (2, 2)):
        torch.manual_seed(0)
        mixers = {
            "fla": Mamba2Mixer(256, ngroups=ng, num_directions=nd, backend="fused", ssd="fla", device="cuda",
                               generator=torch.Generator("cuda").manual_seed(0)),
            "mamba-ssm": Mamba2Mixer(256, ngroups=ng, num_directions=nd, backend="fused", device="cuda"),
            "reference": Mamba2Mixer(256, ngroups=ng, num_directions=nd, backend="reference", device="cuda"),
        }
        for m in mixers.values():
            m.load_state_dict(mixers["fla"].state_dict())
        oracle_mixer = Mamba2Mixer(256, ngroups=ng, num_directions=nd, backend="reference", device="cuda",
                                   dtype=torch.float64)
        oracle_mixer.load_state_dict(mixers["fla"].state_dict())
        x = torch.randn(2, args.length, 256, device="cuda")
        oracle = run(oracle_mixer, x, torch.float64, args.segments)
        for dtype in (torch.float32, torch.bfloat16):
            same = run(mixers["reference"], x, dtype, args.segments)
            for kernel in ("mamba-ssm", "fla", "reference"):
                try:
                    res = run(mixers[kernel], x, dtype, args.segments)
                except FusedUnavailableError as err:   # fla-core refusing this GPU + Triton (fused.gla_refusal)
                    print(json.dumps({"kernel": kernel, "refused": str(err)}), flush=True)
                    refused[kernel] = str(err)
                    continue
                o64, g64, n64 = worst(res, oracle)
                row = {"directions": nd, "groups": ng, "dtype": str(dtype).split(".")[-1], "kernel": kernel,
                       "out_vs_fp64": o64, "grad_vs_fp64": g64, "grad_vs_fp64_worst": n64}
                if kernel != "reference":
                    o, g, n = worst(res, same)
                    row.update(out_vs_ref=o, grad_vs_ref=g, grad_vs_ref_worst=n)
                rows.append(row)
                print(json.dumps(row), flush=True)
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "TRITON_F32_DEFAULT": os.environ.get("TRITON_F32_DEFAULT", "(unset: tf32)"),
            "input": f"x (2, {args.length}, 256), {args.segments} segments, d_state 64, headdim 64",
            "metric": "max |a - b| / max |b| over the output and over each gradient (worst named)"}
    (out / "fla_parity.json").write_text(json.dumps({"meta": meta, "rows": rows, "refused": refused}, indent=1))
    lines = [(f"# Mamba-2 SSD kernels vs the fp64 reference ({meta['device']}, TRITON_F32_DEFAULT "
             f"{meta['TRITON_F32_DEFAULT']})"), "", meta["input"] + "; " + meta["metric"], "",
             ("| dirs/groups | dtype | kernel | out vs fp64 | worst grad vs fp64 | out vs same-dtype ref | "
             "worst grad vs same-dtype ref |"), "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['directions']}/{r['groups']} | {r['dtype']} | {r['kernel']} | {r['out_vs_fp64']:.2e} | "
                     f"{r['grad_vs_fp64']:.2e} ({r['grad_vs_fp64_worst']}) | "
                     + (f"{r['out_vs_ref']:.2e} | {r['grad_vs_ref']:.2e} ({r['grad_vs_ref_worst']}) |"
                        if "out_vs_ref" in r else "— | — |"))
    lines += [f"\n{kernel} not measured: {why}" for kernel, why in refused.items()]
    (out / "fla_parity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
