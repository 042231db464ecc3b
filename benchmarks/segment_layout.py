"""One Mamba-1 mixer layer, forward + backward: segments folded into the batch vs packed in rows (segments.py).

ZigMa-XS width (d_model 256, d_state 16, expand 2, d_conv 4), bf16 autocast, `--tokens` tokens a call (default
32,768: the video study's 64 videos of 8 x 8 x 8 tokens), at (segments, segment length) = (64, 8) (a video's
temporal layer), (8, 64) (its spatial layer) and (1, 256) (an image layer), for 1 and 2 scan directions. Each
point: `--warmup` untimed calls, then the median (and quartiles) of `--iters` calls timed with CUDA events; peak
memory; and the largest difference between the two layouts' outputs (relative to the largest output). Prints a
table and writes JSON to `--out`. About 10 s on an H200.

    PYTHONPATH=. python3 -m benchmarks.segment_layout --out $OUT/segment_layout.json       # GPU, fused kernels
    python3 -m benchmarks.segment_layout --dry-run --out /tmp/segment_layout.json          # CPU, tiny, reference
    python3 -m benchmarks.segment_layout --cpu --tokens 4096 --d-model 64 --out /tmp/sl.json   # CPU, fp32, reference
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from zigma.mixer import MambaMixer, fused_available

CASES = ((64, 8), (8, 64), (1, 256))  # (segments, segment length)
LAYOUTS = ("batch", "packed")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--tokens", type=int, default=32768, help="tokens a call (batch = tokens / sequence length)")
    p.add_argument("--d-model", type=int, default=256, help="mixer width (ZigMa-XS: 256)")
    p.add_argument("--directions", default="1,2", help="comma-separated scan direction counts")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--dry-run", action="store_true", help="CPU, reference backend, tiny sizes: checks the script")
    p.add_argument("--cpu", action="store_true",
                   help="CPU, reference backend, fp32 (what a CPU trial runs), at the sizes given: the CPU's answer")
    args = p.parse_args(argv)
    if args.dry_run:
        args.tokens, args.d_model, args.warmup, args.iters = 512, 16, 1, 2
    return args


def time_calls(fn, device: torch.device, warmup: int, iters: int) -> list[float]:
    """ms of each of `iters` calls of fn after `warmup` untimed ones: CUDA events on CUDA (read after the last call),
    perf_counter on CPU. Only torch and zigma here, so the script runs on a GPU machine with the kernels alone."""
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
        return times
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in events]


def measure(args, device, backend, segments, seg_len, directions) -> list[dict]:
    """Both layouts at one point: rows of median/quartile ms, peak MB and the output difference."""
    length = segments * seg_len
    batch = max(1, args.tokens // length)
    gen = torch.Generator(device).manual_seed(0)
    x = torch.randn(batch, length, args.d_model, device=device, generator=gen, requires_grad=True)
    index = [torch.randperm(length, device=device, generator=gen) for _ in range(directions - 1)] or None
    torch.manual_seed(0)
    mixers = {layout: MambaMixer(args.d_model, num_directions=directions, backend=backend, segment_layout=layout,
                                 device=device) for layout in LAYOUTS}
    mixers["packed"].load_state_dict(mixers["batch"].state_dict())
    rows, outs = [], {}
    for layout, mixer in mixers.items():
        def step(mixer=mixer):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=not args.cpu):
                out = mixer(x, segments=segments, branch_index=index)
            out.float().sum().backward()
            return out

        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=not args.cpu):
            outs[layout] = mixer(x, segments=segments, branch_index=index).float()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = time_calls(step, device, args.warmup, args.iters)
        peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
        rows.append({"segments": segments, "seg_len": seg_len, "directions": directions, "batch": batch,
                     "layout": layout, "ms": statistics.median(times), "ms_q1": q1, "ms_q3": q3, "peak_mb": peak})
    diff = ((outs["packed"] - outs["batch"]).abs().max() / outs["batch"].abs().max()).item()
    for row in rows:
        row["out_rel_diff"] = diff
    return rows


def table(rows) -> str:
    lines = [("| segments x length | directions | batch | batch-folded ms | packed ms | packed / batch "
              "| peak MB b / p | out rel diff |"), "|---|---|---|---|---|---|---|---|"]
    for b, p in zip(rows[0::2], rows[1::2]):
        peak = "-" if b["peak_mb"] is None else f"{b['peak_mb']:.0f} / {p['peak_mb']:.0f}"
        lines.append(f"| {b['segments']} x {b['seg_len']} | {b['directions']} | {b['batch']} | {b['ms']:.2f} "
                     f"| {p['ms']:.2f} | {p['ms'] / b['ms']:.2f} | {peak} | {b['out_rel_diff']:.1e} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse(argv)
    on_cpu = args.dry_run or args.cpu
    device = torch.device("cpu" if on_cpu else "cuda")
    backend = "reference" if on_cpu else "fused"
    if not on_cpu and not (torch.cuda.is_available() and fused_available()):
        raise SystemExit("needs CUDA and mamba-ssm (+ causal-conv1d); --dry-run checks the script on CPU")
    rows = [row for directions in map(int, args.directions.split(",")) for segments, seg_len in CASES
            for row in measure(args, device, backend, segments, seg_len, directions)]
    env = {"torch": torch.__version__, "python": platform.python_version(), "backend": backend,
           "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
    for pkg in ("mamba_ssm", "causal_conv1d"):
        try:
            env[pkg] = __import__(pkg).__version__
        except (ImportError, OSError) as err:
            env[pkg] = f"unavailable: {type(err).__name__}"
    result = {"env": env, "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"{env['device']}, d_model {args.d_model}, {args.tokens} tokens a call, "
          f"{'fp32' if args.cpu else 'bf16 autocast'}, fwd+bwd, "
          f"median of {args.iters}")
    print(table(rows))
    return result


if __name__ == "__main__":
    main()
