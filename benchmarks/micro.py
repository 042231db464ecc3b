"""Three small measurements beside the model rows.

- `permute_cost`: one token permutation of the residual stream (N, L, D), forward and forward + backward, as
  `index_select` (its backward is a zero-fill + `index_add_` scatter) and as `zigma.scans.permute_tokens` (what
  the backbones use: the backward is the gather by the inverse permutation). The relative form pays depth + 1 of
  these a step, the official one 2 * depth.
- `mixer_vs_linear`: the Mamba mixer (reference backend, and fused where it runs) against a stack of
  nn.Linear(D, D) with the same parameter count, forward + backward on the same tokens (issue 11's CPU goal:
  the reference mixer within 3x of the Linear stack).
- `kernel_ceiling`: per tokens, forward + backward under autocast of one MambaMixer, one ZigMa block and one DiT
  block, each taken from the model the zigma / dit rows build (same backend, width and options), at the rows'
  batch. With the depths this bounds what ZigMa can reach: were everything in ZigMa but its mixers free, a step
  would take depth x one mixer, so DiT step / (depth x mixer) is the best ZigMa/DiT throughput ratio possible
  with this mixer kernel (benchmarks/analysis.py derives it).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

import torch
from torch import nn

from plugins.measure import is_oom, time_calls
from zigma.mixer import MambaMixer, fused_available
from zigma.scans import inverse, permute_tokens, relative_order, zigzag_paths

__all__ = ["permute_cost", "mixer_vs_linear", "kernel_ceiling"]


def _permute_rows(x: torch.Tensor, idx: torch.Tensor, inv: torch.Tensor, cfg, device) -> list[dict]:
    """Time both permutation methods on x (B, L, D) (a leaf that requires grad)."""
    grad = torch.randn_like(x)
    ops = {"index_select": lambda v: v.index_select(1, idx),
           "gather-inverse": lambda v: permute_tokens(v, idx, inv)}
    rows = []
    for method, op in ops.items():
        def forward(op=op) -> None:
            with torch.no_grad():
                op(x)

        def forward_backward(op=op) -> None:
            x.grad = None
            op(x).backward(grad)

        fwd = time_calls(forward, device=device, warmup=cfg.warmup, iters=cfg.iters)
        both = time_calls(forward_backward, device=device, warmup=cfg.warmup, iters=cfg.iters)
        moved = 2 * x.numel() * x.element_size()                          # one read + one write
        rows.append({"method": method, "fwd_ms": fwd.median, "fwd_bwd_ms": both.median,
                     "fwd_gb_per_s": moved / fwd.median / 1e6, "status": "ok"})
    return rows


def permute_cost(cfg, device: torch.device, dtype: torch.dtype, width: int) -> list[dict]:
    """Per tokens: ms of one permutation of the (batch, tokens, width) stream, fp32 and the autocast dtype."""
    rows = []
    dtypes = [torch.float32] + ([dtype] if dtype != torch.float32 else [])
    for tokens in cfg.tokens:
        side = round(tokens ** 0.5)
        batch = max(1, cfg.batch_tokens // tokens)
        paths = zigzag_paths(side, side)
        idx = relative_order(paths[0], paths[1]).to(device)               # row snake -> column snake
        inv = inverse(idx)
        for dt in dtypes:
            g = torch.Generator(device).manual_seed(cfg.seed)
            x = torch.randn(batch, tokens, width, generator=g, device=device).to(dt).requires_grad_()
            head = {"tokens": tokens, "batch": batch, "width": width, "dtype": str(dt).replace("torch.", "")}
            rows += [{**head, **r} for r in _permute_rows(x, idx, inv, cfg, device)]
    return rows


def _linear_stack(width: int, params: int, device) -> nn.Sequential:
    """nn.Linear(width, width) layers whose parameter count is closest to `params`."""
    k = max(1, round(params / (width * width + width)))
    return nn.Sequential(*(nn.Linear(width, width, device=device) for _ in range(k)))


def _fwd_bwd_ms(net: nn.Module, x: torch.Tensor, autocast, cfg, device, *extra: torch.Tensor) -> float:
    """Median ms of net(x, *extra) (x (B, L, D)) forward + backward of its sum; gradients set to None each call."""
    def call() -> None:
        for leaf in (x, *extra):
            leaf.grad = None
        net.zero_grad(set_to_none=True)
        with autocast:
            out = net(x, *extra)                                          # (B, L, D)
        out.float().sum().backward()
    return time_calls(call, device=device, warmup=cfg.warmup, iters=cfg.iters).median


def mixer_vs_linear(cfg, device: torch.device, dtype: torch.dtype, width: int) -> list[dict]:
    """Per tokens <= cfg.small_max_tokens: mixer vs Linear-stack forward + backward ms and their ratio."""
    rows = []
    backends = ["reference"] + (["fused"] if device.type == "cuda" and fused_available() else [])
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    for tokens in [n for n in cfg.tokens if n <= cfg.small_max_tokens]:
        batch = max(1, cfg.small_batch_tokens // tokens)
        g = torch.Generator(device).manual_seed(cfg.seed)
        x = torch.randn(batch, tokens, width, generator=g, device=device).requires_grad_()
        for backend in backends:
            mixer = MambaMixer(width, backend=backend, device=device, generator=g)
            n_params = sum(p.numel() for p in mixer.parameters())
            stack = _linear_stack(width, n_params, device)
            times = {name: _fwd_bwd_ms(net, x, autocast, cfg, device)
                     for name, net in (("mixer", mixer), ("linear", stack))}
            rows.append({"tokens": tokens, "batch": batch, "width": width, "backend": backend,
                         "mixer_params": n_params, "linear_layers": len(stack),
                         "linear_params": sum(p.numel() for p in stack.parameters()),
                         "mixer_ms": times["mixer"], "linear_ms": times["linear"],
                         "ratio": times["mixer"] / times["linear"], "status": "ok"})
            del mixer, stack
    return rows


def kernel_ceiling(cfg, device: torch.device, dtype: torch.dtype,
                   build: Callable[[str, int], nn.Module]) -> list[dict]:
    """Per tokens: fwd+bwd ms of one MambaMixer, one ZigMa block and one DiT block, at batch_tokens // tokens.

    build(family, tokens) -> the model a row builds ('zigma' or 'dit'); its first block (and that block's mixer)
    is timed on random (batch, tokens, width) tokens and (batch, width) conditioning, all requiring grad.
    """
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    rows = []
    for tokens in cfg.tokens:
        batch = max(1, cfg.batch_tokens // tokens)
        row: dict = {"tokens": tokens, "batch": batch, "status": "ok"}
        try:
            for family in ("zigma", "dit"):
                model = build(family, tokens)
                block, depth, width = model.blocks[0], len(model.blocks), model.width
                del model                                                 # keep the one block
                g = torch.Generator(device).manual_seed(cfg.seed)
                x = torch.randn(batch, tokens, width, generator=g, device=device).requires_grad_()
                c = torch.randn(batch, width, generator=g, device=device).requires_grad_()
                if family == "zigma":
                    row.update(zigma_depth=depth, mamba_width=width, mixer_backend=block.mixer.backend_used(x),
                               mixer_params_m=sum(p.numel() for p in block.mixer.parameters()) / 1e6,
                               mixer_ms=_fwd_bwd_ms(block.mixer, x, autocast, cfg, device),
                               zigma_block_ms=_fwd_bwd_ms(block, x, autocast, cfg, device, c))
                else:
                    row.update(dit_depth=depth, attention_width=width,
                               dit_block_ms=_fwd_bwd_ms(block, x, autocast, cfg, device, c))
                del block, x, c
        except Exception as err:  # noqa: BLE001 - one token count failing must not lose the others
            if is_oom(err):
                row.update(status="oom", reason=str(err).splitlines()[0][:300])
            else:
                traceback.print_exc()
                row.update(status="error", reason=f"{type(err).__name__}: {str(err)[:300]}")
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    return rows
