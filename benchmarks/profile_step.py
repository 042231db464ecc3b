"""Where one ZigMa training step spends its time, beside what the card's peak would allow (the roofline).

    PYTHONPATH=. python -m benchmarks.profile_step --out $OUT/profile                     # ZigMa-B, 4K tokens, H200
    python -m benchmarks.profile_step --device cpu --size tiny --tokens 16 --batch-tokens 64 --out /tmp/p

One training step as the bench runs it (zigzag-8, class-conditional, flow-matching MSE, backward, fused AdamW,
bf16 autocast on CUDA) is profiled with torch.profiler after warm-up. Each CUDA kernel (each leaf CPU op on CPU)
goes to one group, by the first rule that matches its name or the ops it ran under (`group_of`):
GEMMs, selective scan / SSD, causal conv, permutation gathers, norms and adaLN (the norms, the adaLN shift/scale
and the gated residuals, forward and backward: `AdaLNTags`), optimizer, mixer (other kernels inside the mamba-ssm
functions), other (elementwise: timestep embedding, loss, casts, copies).

Roofline time of a group = max(FLOPs / peak FLOP/s, bytes / peak bandwidth), at the card's datasheet peaks
(benchmarks/roofline.py `CARD_PEAKS`, by the device's name; arguments override them, and a card not listed needs
all three): dense bf16 on tensor cores for GEMMs and Mamba-2's SSD, fp32 on CUDA cores for the rest, Mamba-1's
selective scan included, HBM. `--retable profile_step.json` recomputes a saved run's table at other peaks (its
measured ms, FLOPs and bytes kept). FLOPs and bytes come from one more step under a dispatch mode that sees
every aten op (bytes = its tensor inputs + outputs, i.e. no reuse across ops: an upper bound for unfused chains;
views and allocations move nothing, a broadcast input is read once: `op_bytes`).
The fused mamba-ssm / causal-conv1d / Triton kernels are invisible to it, so their groups are counted from the
shapes: scan/SSD FLOPs = 3x the mixer's forward formula minus its projections; bytes = the fused kernels' inputs and
outputs once forward and once backward (the least any implementation must move); Mamba-2's fused gated RMSNorm
(Triton) adds its 8 x d_inner values a token a layer to the norms group. The counting lives in
benchmarks/step_counts.py; each group's largest kernels are listed under its table and kept in the JSON. See
docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Self

import torch
import torch.nn.functional as F

from zigma.mixer import FusedUnavailableError

from .bench import DTYPES, Config, Variant, _build
from .roofline import ADALN, GROUPS, card_peaks, header, markdown, retable, table
from .step_counts import _Count, fused_mixer_counts, gated_norm_bytes, group_of, merge_shape_counts

#: --mixers: name -> (MIXERS key, mixer options); 'mamba2-fla': Mamba-2 with its SSD by flash-linear-attention
PROFILED = {"mamba1": ("mamba1", ()), "mamba2": ("mamba2", ()), "mamba2-fla": ("mamba2", (("ssd", "fla"),))}
_BACKWARD = "autograd::engine::evaluate_function: "


class AdaLNTags:
    """Marks the adaLN helpers of the backbones (zigma.backbones.layers.modulate and gated_residual, wherever a
    backbone module calls them) while active: each call runs inside a profiler range 'zigma::adaln' and the
    sequence numbers of the autograd nodes it creates are kept, so the backward of those ops (which autograd runs
    outside any forward range) is found again: in the profile by its `evaluate_function` event's sequence number,
    under the byte counter by `torch._C._current_autograd_node()`."""

    SITES = (("zigma.backbones.zigma", "modulate"), ("zigma.backbones.dit", "modulate"),
             ("zigma.backbones.dit", "gated_residual"), ("zigma.backbones.layers", "modulate"),
             ("zigma.backbones.layers", "gated_residual"))

    def __init__(self) -> None:
        self.seqs: set[int] = set()
        self.counter: _Count | None = None
        self._saved: list = []

    def __enter__(self) -> Self:
        import importlib

        for module, name in self.SITES:
            mod = importlib.import_module(module)
            self._saved.append((mod, name, getattr(mod, name)))
            setattr(mod, name, self._wrap(getattr(mod, name)))
        return self

    def __exit__(self, *exc) -> None:
        for mod, name, fn in reversed(self._saved):
            setattr(mod, name, fn)
        self._saved.clear()

    def _wrap(self, fn):
        def tagged(*args):
            counter, prev = self.counter, self.counter.force if self.counter is not None else None
            if counter is not None and prev is None:
                counter.force = ADALN
            try:
                with torch.profiler.record_function("zigma::adaln"):
                    out = fn(*args)
            finally:
                if counter is not None:
                    counter.force = prev
            self._remember(out, args)
            return out
        return tagged

    def _remember(self, out: torch.Tensor, args: tuple) -> None:
        """The sequence numbers of the nodes between `out` and the call's inputs: the ones this call made."""
        before = max((a.grad_fn._sequence_nr() for a in args if isinstance(a, torch.Tensor) and a.grad_fn is not None),
                     default=-1)
        stack = [out.grad_fn] if isinstance(out, torch.Tensor) else []
        while stack:
            node = stack.pop()
            if node is None or type(node).__name__ == "AccumulateGrad" or node._sequence_nr() <= before:
                continue
            if node._sequence_nr() not in self.seqs:
                self.seqs.add(node._sequence_nr())
                stack.extend(next_node for next_node, _ in node.next_functions)

    def backward_group(self) -> str | None:
        """ADALN while autograd runs the backward of a tagged op (for the byte counter), else None."""
        node = torch._C._current_autograd_node()
        return ADALN if node is not None and node._sequence_nr() in self.seqs else None


def _ancestors(evt, tags: AdaLNTags | None = None) -> list[str]:
    """The names of the ops `evt` ran under, innermost first; a backward op under a tagged op's backward gets the
    range name 'zigma::adaln' too."""
    out, p = [], evt.cpu_parent
    while p is not None:
        out.append(p.name)
        if tags is not None and p.name.startswith(_BACKWARD) and p.sequence_nr in tags.seqs:
            out.append("zigma::adaln")
        p = p.cpu_parent
    return out


def grouped_times(prof, device_type: str, tags: AdaLNTags | None = None,
                  by_kernel: dict | None = None) -> dict[str, float]:
    """Microseconds per group: CUDA kernel time (device_type 'cuda') or leaf CPU ops' self time ('cpu').
    by_kernel: filled with {group: {kernel or op name: microseconds}} when given."""
    out = dict.fromkeys(GROUPS, 0.0)
    by_kernel = {} if by_kernel is None else by_kernel

    def add(group: str, name: str, us: float) -> None:
        out[group] += us
        by_kernel.setdefault(group, defaultdict(float))[name] += us

    for evt in prof.events():
        if device_type == "cuda":
            for k in getattr(evt, "kernels", ()):
                own = ["zigma::adaln"] if tags is not None and evt.name.startswith(_BACKWARD) \
                    and evt.sequence_nr in tags.seqs else []
                add(group_of(k.name, [evt.name, *own, *_ancestors(evt, tags)]), k.name, k.duration)
        elif evt.device_type == torch.autograd.DeviceType.CPU and not evt.cpu_children:
            add(group_of(evt.name, _ancestors(evt, tags)), evt.name, evt.self_cpu_time_total)
    return out


def top_kernels(by_kernel: dict, steps: int, top: int = 6) -> dict[str, list[list]]:
    """{group: [[name, ms a step], ...]}, each group's `top` largest, for the JSON (a group's time explained)."""
    return {g: [[name, us / steps / 1e3] for name, us in sorted(d.items(), key=lambda kv: -kv[1])[:top]]
            for g, d in by_kernel.items()}


def profile(cfg: Config, variant: Variant, *, tokens: int, steps: int = 2) -> tuple[dict, dict, dict, int, dict]:
    """-> (us per group per step, flops per group, bytes per group, batch, each group's largest kernels) of one
    training step."""
    device = torch.device(cfg.device)
    dtype = DTYPES[cfg.dtype] if device.type == "cuda" else torch.float32
    model = _build(variant, tokens, cfg, device)
    batch = max(1, cfg.batch_tokens // tokens)
    g = torch.Generator(device).manual_seed(0)
    x1 = torch.randn(batch, *model.input_shape, generator=g, device=device)
    x0, t = torch.randn_like(x1), torch.rand(batch, generator=g, device=device)
    y = torch.randint(0, cfg.num_classes, (batch,), generator=g, device=device)
    xt, ut = t.view(-1, 1, 1, 1) * x1 + (1 - t.view(-1, 1, 1, 1)) * x0, x1 - x0
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def step(counter: _Count | None = None):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = F.mse_loss(model(xt, t, y=y).float(), ut)
        loss.backward()
        if counter is not None:
            counter.force = "optimizer"
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        torch.cuda.synchronize()
    with AdaLNTags() as tags:
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(steps):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
        by_kernel: dict = {}
        times = {k: v / steps for k, v in grouped_times(prof, device.type, tags, by_kernel).items()}
        counter = _Count()
        counter.tags, tags.counter = tags, counter
        with counter:
            step(counter)
    flops, bytes_ = dict(counter.flops), dict(counter.bytes)
    if variant.mixer_backend != "reference" and device.type == "cuda":
        act = 2 if dtype != torch.float32 else 4
        flops, bytes_ = merge_shape_counts(flops, bytes_, fused_mixer_counts(model, batch, act))
        bytes_[ADALN] = bytes_.get(ADALN, 0.0) + gated_norm_bytes(model, batch, act)
    return times, flops, bytes_, batch, top_kernels(by_kernel, steps)


def tensor_core_groups(mixer: str) -> tuple[str, ...]:
    """The groups whose FLOPs can run on tensor cores: GEMMs, and Mamba-2's chunked SSD (matrix products by
    design). Mamba-1's selective scan is a recurrence of elementwise fp32 products and exponentials: CUDA cores."""
    return ("GEMMs", "selective scan / SSD") if PROFILED[mixer][0] == "mamba2" else ("GEMMs",)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", default="B")
    p.add_argument("--tokens", type=int, default=4096, help="tokens a sample (a square grid)")
    p.add_argument("--batch-tokens", type=int, default=65536)
    p.add_argument("--mixers", default="mamba1,mamba2", help="comma separated, of: " + ", ".join(PROFILED))
    p.add_argument("--scan", default="zigzag-8", choices=["zigzag-8", "sweep-1", "sweep-2"],
                   help="sweep-2: two directions a layer (the ViM-style mixer path)")
    p.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    p.add_argument("--peak-tflops", type=float, help="dense bf16 tensor-core TFLOP/s (default: the card's, CARD_PEAKS)")
    p.add_argument("--peak-scalar-tflops", type=float,
                   help="fp32 CUDA-core TFLOP/s, for groups that cannot use tensor cores (default: the card's)")
    p.add_argument("--peak-tbps", type=float, help="HBM TB/s (default: the card's)")
    p.add_argument("--retable", metavar="JSON", help="recompute a saved profile_step.json's tables at the peaks "
                   "(its card's, or the ones given) into --out; nothing is profiled")
    p.add_argument("--steps", type=int, default=2, help="profiled steps (averaged)")
    p.add_argument("--out", default="profile-out")
    args = p.parse_args(argv)
    given = (args.peak_tflops, args.peak_scalar_tflops, args.peak_tbps)
    if args.retable:
        saved = json.loads(Path(args.retable).read_text())
        try:
            doc = retable(saved, card_peaks(saved["device"], *given))
        except ValueError as err:
            p.error(str(err))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        md = [markdown(r["rows"], header(doc["args"], m, r["batch"], doc["device"], r["tensor_core_groups"]))
              for m, r in doc["results"].items() if "rows" in r]
        write(out, doc, md)
        print("\n".join(md))
        return 0
    mixers = [m for m in args.mixers.split(",") if m]
    bad = [m for m in mixers if m not in PROFILED]
    if bad or (args.device.startswith("cuda") and not torch.cuda.is_available()):
        p.error(f"unknown mixer {bad[0]!r}" if bad else "--device cuda but no CUDA device here")
    cfg = Config(size=args.size, device=args.device, dtype=args.dtype, batch_tokens=args.batch_tokens)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    card = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    try:   # a CPU run has no datasheet: an H200's peaks stand in unless given (its table is a smoke test)
        args.peak_tflops, args.peak_scalar_tflops, args.peak_tbps = card_peaks(card if card != "cpu" else "H200",
                                                                               *given)
    except ValueError as err:
        p.error(str(err))
    doc, md = {"device": card, "args": vars(args), "torch": torch.__version__, "results": {}}, []
    for mixer in mixers:
        variant = Variant("zigma", "profile", args.scan, "relative", mixer=PROFILED[mixer][0],
                          mixer_options=PROFILED[mixer][1])
        try:
            times, flops, bytes_, batch, kernels = profile(cfg, variant, tokens=args.tokens, steps=args.steps)
        except FusedUnavailableError as err:  # e.g. mamba2-fla without fla-core: the other mixers still count
            doc["results"][mixer] = {"skipped": str(err)}
            md.append(f"## {mixer}: skipped ({err})\n")
            print(md[-1], flush=True)
            continue
        tensor = tensor_core_groups(mixer)
        rows = table(times, flops, bytes_, peak_tflops=args.peak_tflops, peak_tbps=args.peak_tbps,
                     peak_scalar_tflops=args.peak_scalar_tflops, tensor_groups=tensor)
        doc["results"][mixer] = {"batch": batch, "rows": rows, "tensor_core_groups": list(tensor),
                                 "top_kernels": kernels}
        md.append(markdown(rows, header(vars(args), mixer, batch, card, tensor)) + kernel_lines(kernels))
        print(md[-1], flush=True)
        write(out, doc, md)  # after every mixer: a run cut short by its timeout keeps the mixers it finished
    write(out, doc, md)
    return 0


def kernel_lines(kernels: dict[str, list[list]], top: int = 3) -> str:
    """Each group's largest kernels (ms a step), names cut at 90 characters: what a group's time is made of."""
    lines = ["", "Largest kernels a step, by group:", ""]
    for group in GROUPS:
        if kernels.get(group):
            parts = ", ".join(f"`{name[:90]}` {ms:.2f} ms" for name, ms in kernels[group][:top])
            lines.append(f"- {group}: {parts}")
    return "\n".join(lines) + "\n"


def write(out: Path, doc: dict, md: list[str]) -> None:
    (out / "profile_step.json").write_text(json.dumps(doc, indent=1))
    (out / "profile_step.md").write_text("# One training step, profiled (benchmarks/profile_step.py)\n\n" + "\n".join(md))


if __name__ == "__main__":
    raise SystemExit(main())
