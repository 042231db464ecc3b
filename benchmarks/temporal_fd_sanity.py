"""What temporal-fd and frame-fd say about real videos whose continuity is broken on purpose (CPU, offline).

    PYTHONPATH=. python -m benchmarks.temporal_fd_sanity --out benchmarks/results/temporal_fd_sanity_cpu.md

Moving digits at the video study's shape (32x32, 8 frames), features at the metrics' default 112 px.
Scored against the reference videos: the reference videos themselves (both metrics 0 by construction), the
same videos with each frame index shuffled across videos (the same frames, so frame FD stays at 0; the
continuity is gone), the same videos frozen on their first frame (no motion), and other real videos (the
training split: the small-sample level of both metrics between two real sets).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=128, help="reference videos (and videos per scored set)")
    ap.add_argument("--out", type=Path, help="write the table here as markdown")
    a = ap.parse_args(argv)
    from plugins.registry import load_registries
    from plugins.specs import MetricContext

    reg = load_registries()
    entry = reg.datasets.get("moving-digits")
    data = entry.load(entry.options(resolution=32, frames=8, num_train=a.videos, num_reference=a.videos))
    ctx = MetricContext(data=data, device=torch.device("cpu"), cache_dir=tempfile.mkdtemp(), progress=False)
    metrics = {n: reg.metrics.get(n).build(**reg.metrics.get(n).options().model_dump())
               for n in ("frame-fd", "temporal-fd")}
    real = data.reference(a.videos)                                                  # (V, T, C, H, W)
    g = torch.Generator().manual_seed(0)
    sets = {
        "the reference videos themselves": real,
        "each frame index shuffled across videos": torch.stack(
            [real[torch.randperm(real.shape[0], generator=g), t] for t in range(real.shape[1])], dim=1),
        "frozen on their first frame": real[:, :1].expand_as(real).contiguous(),
        "other real videos (training split)": data.train.uint8()[: a.videos],
    }
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True)
    what = (f"{a.videos} videos of 8 frames at 32x32 against {a.videos} reference videos; EfficientNet-Lite0 "
            "features at 112 px; one run, no seeds to average (the sets are fixed; the shuffle is seeded).")
    lines = [f"# temporal-fd vs frame-fd on real moving digits with broken continuity (CPU, commit {git.stdout.strip()})",
             "", what, "",
             "| videos scored | frame-fd | temporal-fd |", "|:--|--:|--:|"]
    for name, videos in sets.items():
        f, t = (metrics[m].compute(videos, ctx)[m] for m in ("frame-fd", "temporal-fd"))
        lines.append(f"| {name} | {f:.2f} | {t:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
