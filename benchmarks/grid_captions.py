"""Write the prompts of a finished text study's sample grids (trials/<key>/samples.json) after the fact.

    PYTHONPATH=. python -m benchmarks.grid_captions stores/text_conditioning

Trials since 2026-12-05 write samples.json beside samples.png themselves (harness.sampling.save_grid). A trial run
before that has none; its prompts are a pure function of its config and seed (harness.model.Conditioning.prompts:
the training captions in an order seeded by the trial seed), so they are recomputed here on the CPU, with the
commit that recomputed them and the commit that ran the trial written into the file. Only valid if the prompt
code and the dataset generator did not change between the two commits: the script refuses unless
`git diff <run sha>` (against the working tree) is empty for those files. As an independent check, the study's own conditional-accuracy
classifier (trained on real shapes, as the metric does) reads the grid's images, and its agreement with the
recomputed prompts is written beside them: near the trial's published accuracy if the prompts line up, near chance
(about 1 in 160) if they do not.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

#: where the prompts come from (sample i is drawn with prompt i by harness.sampling.sample_images; the classifier
#: check below tests that pairing on the images themselves)
PROMPT_CODE = ("harness/model.py", "harness/seeds.py", "zigma/data", "plugins/datasets.py")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.grid_captions", description=__doc__.splitlines()[0])
    p.add_argument("store", type=Path, help="a study folder or exported store with trials/<key>/config.json")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "zigma-harness",
                   help="where the conditional-accuracy classifier is cached (as the runner's cache)")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from harness.model import Conditioning
    from harness.report.plots import grid_tiles
    from harness.study.schema import TrialConfig
    from harness.trial import _load_data
    from plugins.registry import load_registries
    from plugins.specs import MetricContext

    registries = load_registries()
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    for trial in sorted((args.store / "trials").iterdir()):
        if not (trial / "samples.png").exists() or (trial / "samples.json").exists():
            continue
        doc = json.loads((trial / "config.json").read_text())
        cfg = TrialConfig.model_validate(doc["config"])
        if cfg.conditioning.kind != "text":
            continue
        run_sha = json.loads((trial / "provenance.json").read_text())["git_sha"]
        changed = subprocess.run(["git", "diff", "--stat", run_sha, "--", *PROMPT_CODE],
                                 capture_output=True, text=True, check=True).stdout.strip()
        if changed:
            print(f"{trial}: the prompt code changed since {run_sha[:8]}; not recomputed:\n{changed}", file=sys.stderr)
            return 1
        data = _load_data(registries["datasets"].get(cfg.dataset.name), cfg)
        _, captions = Conditioning("text", cfg.conditioning.label_dropout, data, torch.device("cpu")).prompts(
            cfg.eval.num_samples, doc["seed"])
        n = min(cfg.eval.grid_samples, len(captions))
        nrow = max(1, math.isqrt(n))
        tiles = torch.from_numpy(np.stack(grid_tiles(trial / "samples.png", nrow, n))).permute(0, 3, 1, 2)
        tiles = tiles[:, :data.info.shape[0]].contiguous()                # (n, C, H, W) uint8
        ctx = MetricContext(data=data, device=torch.device("cpu"), cache_dir=str(args.cache), captions=captions[:n],
                            progress=False)
        metric = registries["metrics"].get("cond-accuracy").build(**cfg.eval.metric_options.get("cond-accuracy", {}))
        agree = metric.compute(tiles, ctx)["cond-accuracy"]
        published = json.loads((trial / "results.json").read_text()).get("cond-accuracy")
        published = "not recorded" if published is None else f"{published:.3f}"
        (trial / "samples.json").write_text(json.dumps(
            {"captions": captions[:n], "nrow": nrow,
             "note": f"recomputed at {head[:12]} from the trial's config and seed (the prompt code is unchanged "
                     f"since the run at {run_sha[:12]}) by benchmarks/grid_captions.py; the study's classifier "
                     f"agrees with {agree:.3f} of these {n} prompts (the trial's cond-accuracy on all "
                     f"{cfg.eval.num_samples} samples: {published})"}, indent=1))
        print(f"{trial.name}: {n} prompts, classifier agreement {agree:.3f} (trial's cond-accuracy {published})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
