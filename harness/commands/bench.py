"""`harness bench`: training-step time, sampling time and peak memory of ZigMa variants, Vim and DiT side by side.

A thin front over `benchmarks.bench` (which also runs alone as `python -m benchmarks.bench` on a bare GPU machine):
the arguments go to its one parser; see benchmarks/README.md for the exact GPU command and how to read the results.
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
        from benchmarks import bench
        return bench
    except ModuleNotFoundError:
        pass
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / "benchmarks" / "bench.py").is_file():
            sys.path.insert(0, str(root))
            from benchmarks import bench
            return bench
    raise ConfigError("harness bench runs from a checkout of zigma-harness (benchmarks/ is not installed): "
                      "run it in the repository's root folder")


def bench(ctx: typer.Context) -> None:
    """Measure train step, sampling and peak memory side by side; write JSON + a log-log plot; print the goal ratios.
    With --study: whole trials of a study, phase by phase. Options: `harness bench --help`."""
    rc = _bench_module().main(list(ctx.args), prog="harness bench")
    if rc:
        raise typer.Exit(code=rc)


def register(app: typer.Typer) -> None:
    # the options are defined once, in benchmarks/bench_config.py (argparse): every argument, --help too, goes there
    app.command("bench", add_help_option=False,
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(bench)
