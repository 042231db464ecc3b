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
outputs once forward and once backward (the least any implementation must move). See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Self

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from zigma.mixer import FusedUnavailableError

from .bench import DTYPES, Config, Variant, _build
from .roofline import ADALN, GROUPS, card_peaks, header, markdown, retable, table

#: --mixers: name -> (MIXERS key, mixer options); 'mamba2-fla': Mamba-2 with its SSD by flash-linear-attention
PROFILED = {"mamba1": ("mamba1", ()), "mamba2": ("mamba2", ()), "mamba2-fla": ("mamba2", (("ssd", "fla"),))}
_KERNEL_RULES = (  # (group, regex on a CUDA kernel's name), first match wins
    ("selective scan / SSD", (r"selective_scan|_chunk_scan|_chunk_state|_state_passing|_bmm_chunk|_chunk_cumsum|ssd"
                              r"|chunk_(fwd|bwd)_kernel|chunk_local_cumsum")),  # the last two: fla's simple GLA
    ("causal conv", r"causal_conv1d"),
    ("optimizer", r"multi_tensor|adam"),
    ("GEMMs", r"gemm|cutlass|nvjet|xmma|cublas|wgmma|matmul"),
    (ADALN, r"norm"),
)
_OP_RULES = (  # (group, regex on the name of an op the kernel ran under), innermost op first
    ("optimizer", r"^Optimizer\.|_fused_adamw|adamw"),
    ("permutation gathers", r"PermuteTokens|^aten::(index|index_select|gather|take|_unsafe_index)"),
    ("causal conv", r"CausalConv|causal_conv"),
    ("selective scan / SSD", r"^_SelectiveScan|zigma::ssd|ChunkSimpleGLA"),  # the reference scans; fla's op
    ("GEMMs", r"^aten::(mm|addmm|bmm|baddbmm|_scaled_mm|convolution|_convolution|cudnn_convolution|matmul|linear)\b"),
    (ADALN, r"norm|^zigma::adaln$"),
    ("mixer (other)", r"Mamba|SelectiveScanFn|Mixer"),             # any other kernel inside mamba-ssm's functions
)


def group_of(name: str, ancestors: list[str]) -> str:
    """The group of a kernel/op `name` that ran under `ancestors` (innermost first)."""
    for group, pattern in _KERNEL_RULES:
        if re.search(pattern, name, re.IGNORECASE):
            return group
    for op in [name, *ancestors]:
        for group, pattern in _OP_RULES:
            if re.search(pattern, op):
                return group
    return "other"


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


def grouped_times(prof, device_type: str, tags: AdaLNTags | None = None) -> dict[str, float]:
    """Microseconds per group: CUDA kernel time (device_type 'cuda') or leaf CPU ops' self time ('cpu')."""
    out = dict.fromkeys(GROUPS, 0.0)
    for evt in prof.events():
        if device_type == "cuda":
            for k in getattr(evt, "kernels", ()):
                own = ["zigma::adaln"] if tags is not None and evt.name.startswith(_BACKWARD) \
                    and evt.sequence_nr in tags.seqs else []
                out[group_of(k.name, [evt.name, *own, *_ancestors(evt, tags)])] += k.duration
        elif evt.device_type == torch.autograd.DeviceType.CPU and not evt.cpu_children:
            out[group_of(evt.name, _ancestors(evt, tags))] += evt.self_cpu_time_total
    return out


_ALLOCATIONS = frozenset({"empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided"})


def _addressed_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements a tensor addresses: a broadcast (stride-0) dimension is read once."""
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        n *= size if stride else 1
    return n * t.element_size()


def op_bytes(func, args, kwargs, out) -> int:
    """Bytes an aten op moves: its tensor inputs read plus its outputs written, each tensor counted by the elements
    it addresses. Views and other aliases (`view`, `t`, `expand`, `slice`, `_unsafe_view`, ...) and bare
    allocations (`empty_like`, ...) move nothing and count 0; an in-place op reads and writes its target."""
    name = func.overloadpacket.__name__
    if name in _ALLOCATIONS:
        return 0
    ins = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    outs = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    if func.is_view or (not func._schema.is_mutable and outs and all(
            any(o.untyped_storage().data_ptr() == i.untyped_storage().data_ptr() for i in ins) for o in outs)):
        return 0
    return sum(_addressed_bytes(t) for t in ins + outs)


class _Count(TorchDispatchMode):
    """FLOPs (torch's flop formulas, 2 per MAC) and bytes (`op_bytes`) per group of every aten op."""

    def __init__(self):
        super().__init__()
        self.flops, self.bytes = defaultdict(float), defaultdict(float)
        self.force: str | None = None  # the group of every op while set (the optimizer step, an adaLN call)
        self.tags: AdaLNTags | None = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = f"aten::{func.overloadpacket.__name__}"
        group = self.force or (self.tags.backward_group() if self.tags is not None else None) or group_of(name, [])
        self.bytes[group] += op_bytes(func, args, kwargs, out)
        if func.overloadpacket in flop_registry:
            self.flops[group] += flop_registry[func.overloadpacket](*args, **kwargs, out_val=out)
        return out


def fused_mixer_counts(model, batch: int, act_bytes: int) -> dict[str, tuple[float, float]]:
    """(FLOPs, bytes) of the scan/SSD and causal-conv kernels of one training step (fwd + bwd = 3x fwd FLOPs),
    from the shapes; the projections around them are GEMMs and counted there."""
    scan, conv = [0.0, 0.0], [0.0, 0.0]
    for blk in model.blocks:
        m, length, k = blk.mixer, blk.orders.shape[1] // blk.segments, blk.mixer.num_directions
        bl, e, n = batch * blk.orders.shape[1], m.d_inner, m.d_state
        if hasattr(m, "nheads"):  # Mamba-2: chunked SSD (C.B^T, its product with x, chunk states in/out) + gate
            q, channels = min(m.fused_chunk, length), e + 2 * m.ngroups * n
            scores = m.nheads if m.ssd == "fla" else m.ngroups    # fla gets B and C expanded to heads
            macs = bl * (q * scores * n + q * e + 2 * e * n) + bl * e
            per_token = channels + m.nheads + e                   # x, B, C, dt in; y out (z is gated in the norm)
        else:  # Mamba-1: selective scan 9 B L E N + D skip + z gate (fvcore's formula, as zigma.backbones.flops)
            channels = e
            macs = 9 * bl * e * n + 2 * bl * e
            per_token = 4 * e + 2 * n                             # u, delta, z in; y out; B, C in
        conv[0] += k * 3 * 2 * bl * channels * m.d_conv
        conv[1] += k * 5 * bl * channels * act_bytes              # fwd: x in, y out; bwd: x, dy in, dx out
        scan[0] += k * 3 * 2 * macs
        scan[1] += k * 2 * bl * per_token * act_bytes * 2         # fwd once, bwd ~twice (inputs + dy, gradients)
    return {"selective scan / SSD": tuple(scan), "causal conv": tuple(conv)}


def profile(cfg: Config, variant: Variant, *, tokens: int, steps: int = 2) -> tuple[dict, dict, dict, int]:
    """-> (us per group per step, flops per group, bytes per group, batch) of one training step."""
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
        times = {k: v / steps for k, v in grouped_times(prof, device.type, tags).items()}
        counter = _Count()
        counter.tags, tags.counter = tags, counter
        with counter:
            step(counter)
    flops, bytes_ = dict(counter.flops), dict(counter.bytes)
    if variant.mixer_backend != "reference" and device.type == "cuda":
        act = 2 if dtype != torch.float32 else 4
        flops, bytes_ = merge_shape_counts(flops, bytes_, fused_mixer_counts(model, batch, act))
    return times, flops, bytes_, batch


def merge_shape_counts(flops: dict, bytes_: dict, shaped: dict[str, tuple[float, float]]) -> tuple[dict, dict]:
    """The dispatch mode's (FLOPs, bytes) per group, with the groups of fused kernels filled from their shapes.

    A fused kernel registered as a torch custom op (causal-conv1d's `causal_conv1d_fwd`/`_bwd`) is seen by the
    dispatch mode: its bytes are then those of the real tensors, recomputations included, and stand; a kernel it
    cannot see (mamba-ssm's selective scan, Triton SSD) gets the shape count. Custom ops have no FLOP formula, so a
    group's FLOPs come from the shapes unless the dispatch mode counted some. Never both: adding them counted the
    causal conv twice in the first H200 profile."""
    flops, bytes_ = dict(flops), dict(bytes_)
    for group, (f, b) in shaped.items():
        flops[group] = flops.get(group) or f
        bytes_[group] = bytes_.get(group) or b
    return flops, bytes_


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
    p.add_argument("--scan", default="zigzag-8", choices=["zigzag-8", "sweep-1"])
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
            times, flops, bytes_, batch = profile(cfg, variant, tokens=args.tokens, steps=args.steps)
        except FusedUnavailableError as err:  # e.g. mamba2-fla without fla-core: the other mixers still count
            doc["results"][mixer] = {"skipped": str(err)}
            md.append(f"## {mixer}: skipped ({err})\n")
            print(md[-1], flush=True)
            continue
        tensor = tensor_core_groups(mixer)
        rows = table(times, flops, bytes_, peak_tflops=args.peak_tflops, peak_tbps=args.peak_tbps,
                     peak_scalar_tflops=args.peak_scalar_tflops, tensor_groups=tensor)
        doc["results"][mixer] = {"batch": batch, "rows": rows, "tensor_core_groups": list(tensor)}
        md.append(markdown(rows, header(vars(args), mixer, batch, card, tensor)))
        print(md[-1], flush=True)
        write(out, doc, md)  # after every mixer: a run cut short by its timeout keeps the mixers it finished
    write(out, doc, md)
    return 0


def write(out: Path, doc: dict, md: list[str]) -> None:
    (out / "profile_step.json").write_text(json.dumps(doc, indent=1))
    (out / "profile_step.md").write_text("# One training step, profiled (benchmarks/profile_step.py)\n\n" + "\n".join(md))


if __name__ == "__main__":
    raise SystemExit(main())
