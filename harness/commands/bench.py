"""`harness bench`: training-step time, sampling time and peak memory of ZigMa variants, Vim and DiT side by side.

A thin front over `benchmarks.bench` (which also runs alone as `python -m benchmarks.bench` on a bare GPU machine);
see benchmarks/README.md for the exact GPU command and how to read the results.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from plugins.errors import ConfigError


def _bench_module():
    """benchmarks.bench from the checkout (benchmarks/ is not an installed package): the one this harness was
    imported from, else the working directory."""
    try:
        import benchmarks.bench as bench
        return bench
    except ModuleNotFoundError:
        pass
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / "benchmarks" / "bench.py").is_file():
            sys.path.insert(0, str(root))
            import benchmarks.bench as bench
            return bench
    raise ConfigError("harness bench runs from a checkout of zigma-harness (benchmarks/ is not installed): "
                      "run it in the repository's root folder")


def bench(
    tokens: str = typer.Option("256,1024,4096,16384,65536", help="Tokens a sample (square grids), comma separated."),
    backbones: str = typer.Option("zigma,vim,dit", help="Backbones to measure, comma separated."),
    variants: str = typer.Option(None, help="Variants to run, comma separated (default: all but the compiled "
                                            "ones; `harness bench --list` names them)."),
    batch_tokens: int = typer.Option(65536, help="Tokens a training step: batch = max(1, batch_tokens // tokens)."),
    small_batch_tokens: int = typer.Option(4096, help="Tokens a step for the fused-vs-reference pair."),
    small_max_tokens: int = typer.Option(4096, help="Largest tokens for the pair and the mixer check."),
    size: str = typer.Option("B", help="SIZES preset (mamba row for zigma/vim, attention row for dit)."),
    device: str = typer.Option("cuda", help="cuda, cuda:i or cpu."),
    dtype: str = typer.Option("bf16", help="Autocast dtype on CUDA: bf16, fp16 or fp32 (CPU runs fp32)."),
    warmup: int = typer.Option(2, help="Untimed calls before each timing."),
    iters: int = typer.Option(6, help="Timed calls; the median is reported."),
    nfe: int = typer.Option(50, help="Function evaluations a sample, for sample_ms_per_image."),
    compile: bool = typer.Option(False, "--compile", help="Also run the torch.compile variants."),
    mixers: str = typer.Option("mamba1,mamba2", help="Token mixers of the zigma/vim variants, comma separated."),
    compile_backend: str = typer.Option("inductor", help="torch.compile backend."),
    mixer_check: bool = typer.Option(True, "--mixer-check/--no-mixer-check",
                                     help="Reference mixer vs an nn.Linear stack of its size."),
    permute_check: bool = typer.Option(True, "--permute-check/--no-permute-check",
                                       help="Cost of one token permutation, forward and backward."),
    ceiling: bool = typer.Option(True, "--ceiling/--no-ceiling",
                                 help="One mixer, one ZigMa block and one DiT block alone (the kernel ceiling)."),
    time_budget_s: float = typer.Option(None, help="Skip the points that would start after this many seconds "
                                                   "(default 270 on CUDA, none on CPU; inf: none)."),
    threads: int = typer.Option(None, help="torch threads on CPU."),
    out: Path = typer.Option(Path("bench-out"), help="A folder (-> bench.json, bench.png) or FILE.json."),
    plot: Path = typer.Option(None, help="The plot's path (default: beside the JSON)."),
    list_variants: bool = typer.Option(False, "--list", help="Name every variant and exit."),
    study: Path = typer.Option(None, "--study", metavar="STUDY.yaml", help="Study throughput instead: the study's "
                               "first --trials trials per --variants (benchmarks/study_throughput.py; --device, "
                               "--time-budget-s, --out apply)."),
    preset: str = typer.Option(None, "--preset", help="With --study: apply this preset."),
    trials: int = typer.Option(2, "--trials", min=1, help="With --study: trials per variant."),
) -> None:
    """Measure train step, sampling and peak memory side by side; write JSON + a log-log plot; print the goal ratios.
    With --study: whole trials of a study, phase by phase, today's path beside each speed-up switch."""
    if study is not None:
        _study_throughput(study, preset=preset, trials=trials, variants=variants, device=device,
                          budget=time_budget_s, out=out)
        return
    mod = _bench_module()
    if list_variants:
        for name, v in mod.VARIANTS.items():
            typer.echo(f"{name:<20} {v.backbone:<6} {v.description}")
        return
    try:
        cfg = mod.make_config(
            tokens=tokens, backbones=backbones, variants=variants, compile=compile, mixers=mixers,
            batch_tokens=batch_tokens,
            small_batch_tokens=small_batch_tokens, small_max_tokens=small_max_tokens, size=size, device=device,
            dtype=dtype, warmup=warmup, iters=iters, nfe=nfe, compile_backend=compile_backend,
            mixer_check=mixer_check, permute_check=permute_check, ceiling=ceiling, time_budget_s=time_budget_s,
            threads=threads)
    except ValueError as err:
        raise ConfigError(f"harness bench: {err}") from None
    json_path, plot_path = mod.output_paths(out, plot)
    typer.echo(f"bench: {len(mod.points(cfg))} points -> {json_path}")
    doc = mod.run(cfg, on_update=lambda d: mod.write(d, json_path), log=typer.echo)
    mod.write(doc, json_path, plot_path)
    typer.echo("\n".join(mod.summary_lines(doc)))
    typer.echo(f"wrote {json_path} and {plot_path} ({doc['wall_s']:.0f} s)")


def _study_throughput(study: Path, *, preset: str | None, trials: int, variants: str | None, device: str,
                      budget: float | None, out: Path) -> None:
    _bench_module()                                  # puts a checkout's benchmarks/ on the path
    import benchmarks.study_throughput as st
    if not study.is_file():
        raise ConfigError(f"harness bench --study: no such file: {study}")
    names = variants or "baseline,resident,eval-batch,ckpt-async,all"
    unknown = [v for v in names.split(",") if v.strip() and v.strip() not in st.VARIANTS]
    if unknown:
        raise ConfigError(f"harness bench --variants: unknown study variant(s) {unknown}; available: "
                          f"{', '.join(st.VARIANTS)}")
    if device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("harness bench --study: no CUDA device is visible (use --device cpu)")
    argv = [str(study), "--variants", names, "--trials", str(trials), "--device", device, "--out", str(out)]
    argv += ["--preset", preset] if preset else []
    argv += ["--budget-s", str(budget)] if budget is not None else []
    st.main(argv)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
