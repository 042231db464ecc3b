"""GPU check and benchmark of MambaMixer: fused (mamba-ssm) vs reference (pure PyTorch) backend.

One run writes $OUT/gpu_mixer.json and $OUT/gpu_mixer.md:
1. init parity: one torch seed gives MambaMixer(num_directions=1) the same weights as mamba_ssm.Mamba;
2. fused vs reference: outputs and every gradient (fp32 and bf16 autocast) for 1, 2 and 4 directions, segments;
3. state dicts: trained under one backend, loaded under the other and into mamba_ssm.Mamba, same outputs;
4. fwd+bwd time and peak memory of both backends at 1K / 4K / 16K tokens a sequence.

    PYTHONPATH=. python benchmarks/gpu_mixer.py --out $OUT           # on the GPU machine
    python -m benchmarks.gpu_mixer --cpu-dry-run --out /tmp/dry       # tiny sizes, 'reference' stands in for 'fused'
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
import traceback
from pathlib import Path

import torch

from zigma.mixer import MambaMixer, fused_available

TOL = {"fp32": 1e-4, "bf16": 2e-2}


def rel_err(a, b):
    """max |a - b| / max |b| (b the reference)."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


class Run:
    """Collects results section by section and rewrites the JSON after each one."""

    def __init__(self, out: Path, dry: bool):
        self.out, self.dry = out, dry
        self.device = "cpu" if dry else "cuda"
        self.fused = "reference" if dry else "fused"  # the dry run exercises the code path, not the kernels
        self.data = {"env": env_info(dry), "sections": {}, "errors": {}}

    def section(self, name, fn, *args):
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            self.data["sections"][name] = fn(self, *args)
        except Exception:  # noqa: BLE001 - keep going: one broken section must not lose the others
            self.data["errors"][name] = traceback.format_exc()
            print(self.data["errors"][name], flush=True)
        print(f"   {time.perf_counter() - start:.1f} s", flush=True)
        self.save()

    def save(self):
        (self.out / "gpu_mixer.json").write_text(json.dumps(self.data, indent=1))

    def backends(self):
        """(label, backend) of the two paths compared."""
        return (("fused", self.fused), ("reference", "reference"))

    def mixer(self, d_model, backend, **kw):
        return MambaMixer(d_model, backend=backend, device=self.device, **kw)


def env_info(dry):
    info = {"torch": torch.__version__, "python": platform.python_version(), "dry_run": dry,
            "fused_available": fused_available()}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    for pkg in ("mamba_ssm", "causal_conv1d", "triton"):
        try:
            info[pkg] = __import__(pkg).__version__
        except Exception as err:  # noqa: BLE001 - a broken CUDA build is recorded, not fatal
            info[pkg] = f"unavailable: {type(err).__name__}"
    return info


def outputs_and_grads(mixer, x, weight, autocast, **kw):
    """Output and gradients (input + every parameter) of sum(out * weight)."""
    mixer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        out = mixer(x, **kw)
    (out.float() * weight).sum().backward()
    grads = {"x": x.grad, **{n: p.grad for n, p in mixer.named_parameters()}}
    return out.detach().float(), grads


def check_init(run):
    """Same global seed -> the same weights as mamba_ssm.Mamba."""
    if run.dry:
        return {"skipped": "no mamba_ssm on CPU"}
    from mamba_ssm import Mamba

    result = {}
    for d_model in (64, 768):
        torch.manual_seed(123)
        theirs = Mamba(d_model, device="cuda").state_dict()
        torch.manual_seed(123)
        ours = MambaMixer(d_model, device="cuda").state_dict()
        same_keys = set(theirs) == set(ours)
        identical = same_keys and all(torch.equal(theirs[k], ours[k]) for k in theirs)
        result[f"d_model={d_model}"] = {"same_names_and_shapes": same_keys and all(
            theirs[k].shape == ours[k].shape for k in theirs), "bitwise_identical": identical}
    return result


CASES = [  # name, num_directions, segments, branch_index kind
    ("uni", 1, 1, None), ("uni-segments-4", 1, 4, None), ("bi-flip", 2, 1, None),
    ("parallel-4-index", 4, 1, "perm"), ("bi-index-segments-2", 2, 2, "perm"),
]


def check_agreement(run, d_model, batch, length):
    """Fused vs reference on outputs and all gradients, fp32 and bf16 autocast."""
    result = {}
    for name, k, segments, kind in CASES:
        torch.manual_seed(0)
        fused = run.mixer(d_model, run.fused, num_directions=k)
        ref = run.mixer(d_model, "reference", num_directions=k)
        ref.load_state_dict(fused.state_dict())
        g = torch.Generator(device=run.device).manual_seed(1)
        branch = None if kind is None else [torch.randperm(length, device=run.device, generator=g) for _ in range(k - 1)]
        x = torch.randn(batch, length, d_model, device=run.device, generator=g)
        w = torch.randn(batch, length, d_model, device=run.device, generator=g)
        row = {"backend_used": fused.backend_used(x)}
        for precision, autocast in (("fp32", False), ("bf16", True)):
            if autocast and run.dry:
                continue
            out_f, g_f = outputs_and_grads(fused, x, w, autocast, segments=segments, branch_index=branch)
            out_r, g_r = outputs_and_grads(ref, x, w, autocast, segments=segments, branch_index=branch)
            errs = {"out": rel_err(out_f, out_r), **{n: rel_err(g_f[n], g_r[n]) for n in g_f}}
            worst = max(errs, key=errs.get)
            row[precision] = {"max_rel_err": errs[worst], "worst": worst, "tol": TOL[precision],
                              "pass": errs[worst] <= TOL[precision], "rel_err": errs}
            if autocast:  # how far each bf16 path is from the fp32 reference, for scale
                out32, _ = outputs_and_grads(ref, x, w, False, segments=segments, branch_index=branch)
                row[precision]["fused_vs_fp32_ref_out"] = rel_err(out_f, out32)
                row[precision]["reference_vs_fp32_ref_out"] = rel_err(out_r, out32)
        result[name] = row
        print(f"   {name}: " + ", ".join(f"{p} {row[p]['max_rel_err']:.2e} ({row[p]['worst']})"
                                           for p in ("fp32", "bf16") if p in row), flush=True)
    return result


def train_a_little(mixer, x, steps=5):
    """A few AdamW steps so the weights move away from their init (A_log, D, biases included)."""
    opt = torch.optim.AdamW(mixer.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        (mixer(x) ** 2).mean().backward()
        opt.step()
    return mixer


def check_state_dicts(run, d_model, batch, length):
    """Trained under one backend, the state dict loads into the other (and mamba_ssm.Mamba): same outputs."""
    g = torch.Generator(device=run.device).manual_seed(2)
    x = torch.randn(batch, length, d_model, device=run.device, generator=g)
    result = {}
    for source, trained_on in run.backends():
        for k in (1, 2):
            torch.manual_seed(0)
            src = train_a_little(run.mixer(d_model, trained_on, num_directions=k), x)
            state = src.state_dict()
            with torch.no_grad():
                expected = src(x)
                row = {}
                for label, backend in run.backends():
                    dst = run.mixer(d_model, backend, num_directions=k)
                    dst.load_state_dict(state)
                    row[f"into {label}"] = rel_err(dst(x), expected)
                if k == 1 and not run.dry:
                    from mamba_ssm import Mamba

                    theirs = Mamba(d_model, device=run.device)
                    theirs.load_state_dict(state)
                    row["into mamba_ssm.Mamba"] = rel_err(theirs(x), expected)
                    back = run.mixer(d_model, "reference")
                    back.load_state_dict(theirs.state_dict())
                    row["mamba_ssm.Mamba state into reference"] = rel_err(back(x), theirs(x))
            row["pass"] = all(v <= TOL["fp32"] for v in row.values())
            result[f"trained with {source}, {k} direction(s)"] = row
            print(f"   {list(result)[-1]}: {row}", flush=True)
    return result


def time_fwd_bwd(mixer, x, autocast, iters):
    """Median ms of forward + backward (+ peak MB), after warm-up, with the device synchronized."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    x = x.detach().requires_grad_()

    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            out = mixer(x)
        out.float().sum().backward()

    for _ in range(2):
        step()
    sync()
    if x.is_cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if x.is_cuda else float("nan")
    return sorted(times)[len(times) // 2] * 1e3, peak


def bench(run, d_model, lengths, batch_tokens, iters):
    """fwd+bwd ms of both backends (bf16 autocast and fp32) at each sequence length, same tokens a batch."""
    rows = []
    for k in (1, 2):
        for length in lengths:
            batch = max(1, batch_tokens // length)
            x = torch.randn(batch, length, d_model, device=run.device)
            row = {"num_directions": k, "tokens": length, "batch": batch}
            for label, backend in run.backends():
                torch.manual_seed(0)
                mixer = run.mixer(d_model, backend, num_directions=k)
                for precision, autocast in (("bf16", True), ("fp32", False)):
                    try:
                        ms, peak = time_fwd_bwd(mixer, x, autocast and not run.dry, iters)
                    except torch.OutOfMemoryError:
                        ms, peak = math.nan, math.nan
                        torch.cuda.empty_cache()
                    row[f"{label} {precision} ms"], row[f"{label} {precision} peak MB"] = ms, peak
                del mixer
            for precision in ("bf16", "fp32"):
                row[f"reference/fused {precision}"] = row[f"reference {precision} ms"] / row[f"fused {precision} ms"]
            rows.append(row)
            print("   " + ", ".join(f"{key} {v:.2f}" if isinstance(v, float) else f"{key} {v}" for key, v in row.items()),
                  flush=True)
            if x.is_cuda:
                torch.cuda.empty_cache()
    return rows


def summary(data):
    """A short markdown summary of the JSON."""
    env, sec = data["env"], data["sections"]
    versions = (f"torch {env['torch']}, mamba_ssm {env.get('mamba_ssm')}, causal_conv1d {env.get('causal_conv1d')}, "
                f"CUDA {env.get('cuda')}. Produced by `benchmarks/gpu_mixer.py`.")
    lines = [f"# MambaMixer on {env.get('device', 'CPU (dry run)')}", "", versions, ""]
    if "init" in sec:
        lines += ["## Init parity with mamba_ssm.Mamba (same torch seed)", "", f"`{json.dumps(sec['init'])}`", ""]
    if "agreement" in sec:
        lines += ["## Fused vs reference: max relative error over the output and all gradients", "",
                  "| case | fp32 (tol 1e-4) | worst | bf16 autocast (tol 2e-2) | worst |", "|---|---|---|---|---|"]
        for name, row in sec["agreement"].items():
            cells = []
            for p in ("fp32", "bf16"):
                r = row.get(p)
                cells += [f"{r['max_rel_err']:.1e} {'ok' if r['pass'] else 'FAIL'}", r["worst"]] if r else ["-", "-"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if "state_dicts" in sec:
        lines += ["## State dicts across backends (max relative error of the outputs)", ""]
        lines += [f"- {name}: " + ", ".join(f"{k} {v:.1e}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in row.items()) for name, row in sec["state_dicts"].items()]
        lines.append("")
    if "bench" in sec:
        header = ("| directions | tokens | batch | fused bf16 | reference bf16 | ratio | fused fp32 | reference fp32 "
                  "| ratio | peak MB fused / ref (bf16) |")
        lines += ["## fwd+bwd time (median ms) and peak memory (MB)", "", header, "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sec["bench"]:
            lines.append(f"| {r['num_directions']} | {r['tokens']} | {r['batch']} | {r['fused bf16 ms']:.2f} | "
                         f"{r['reference bf16 ms']:.2f} | {r['reference/fused bf16']:.1f}x | {r['fused fp32 ms']:.2f} | "
                         f"{r['reference fp32 ms']:.2f} | {r['reference/fused fp32']:.1f}x | "
                         f"{r['fused bf16 peak MB']:.0f} / {r['reference bf16 peak MB']:.0f} |")
        lines.append("")
    if data["errors"]:
        lines += ["## Errors", ""] + [f"- {k}: `{v.strip().splitlines()[-1]}`" for k, v in data["errors"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--cpu-dry-run", action="store_true")
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--batch-tokens", type=int, default=16384)
    p.add_argument("--iters", type=int, default=10)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dry = args.cpu_dry_run
    if dry:
        torch.set_num_threads(1)
    elif not (torch.cuda.is_available() and fused_available()):
        raise SystemExit("needs CUDA and mamba-ssm + causal-conv1d (or pass --cpu-dry-run)")
    run = Run(out, dry)
    print(json.dumps(run.data["env"]), flush=True)
    small = (32, 2, 40) if dry else (256, 2, 1000)  # d_model, batch, length (not a multiple of chunk sizes)
    run.section("init", check_init)
    run.section("agreement", check_agreement, *small)
    run.section("state_dicts", check_state_dicts, *small)
    if dry:
        run.section("bench", bench, 32, [64, 128], 256, 2)
    else:
        run.section("bench", bench, args.d_model, [1024, 4096, 16384], args.batch_tokens, args.iters)
    (out / "gpu_mixer.md").write_text(summary(run.data))
    print(summary(run.data), flush=True)


if __name__ == "__main__":
    main()
