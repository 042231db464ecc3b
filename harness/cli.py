"""The `harness` command line. Each sub-command lives in harness/commands/<name>.py with register(app)."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from plugins.errors import HarnessError

__all__ = ["app", "main"]

#: sub-command modules, in the order `harness --help` lists them
COMMANDS = ("run", "validate", "ls", "status", "worker", "report", "export", "ui", "scans", "models", "fid", "bench")

app = typer.Typer(
    name="harness",
    help="Benchmark and ablate Mamba diffusion models: scan orders, backbones, interpolants and what they cost.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},   # inherited by every sub-command
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version
        try:
            typer.echo(f"zigma-harness {version('zigma-harness')}")
        except PackageNotFoundError:
            typer.echo("zigma-harness (not installed: run from a checkout)")
        raise typer.Exit()


@app.callback()
def _root(_version_flag: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                            help="Print the version and exit.")) -> None:
    """Benchmark and ablate Mamba diffusion models: scan orders, backbones, interpolants and what they cost."""

for _name in COMMANDS:
    importlib.import_module(f"harness.commands.{_name}").register(app)


def _usage_error(exc: Exception) -> int | None:
    """Show a click/typer usage error as one line and return its exit code; None for anything else."""
    classes = []
    for modname in ("click.exceptions", "typer._click.exceptions"):
        try:
            classes.append(importlib.import_module(modname))
        except ImportError:
            continue
    for mod in classes:
        if isinstance(exc, mod.ClickException):
            exc.show()
            return exc.exit_code
        abort, exit_ = getattr(mod, "Abort", None), getattr(mod, "Exit", None)
        if abort is not None and isinstance(exc, abort):
            return 1
        if exit_ is not None and isinstance(exc, exit_):
            return exc.exit_code
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point: a user's mistake prints one line and exits 2; our bugs keep their traceback."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        rc = app(args=argv, standalone_mode=False)
    except HarnessError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # usage errors come through here with standalone_mode=False
        handled = _usage_error(exc)
        if handled is None:
            raise
        sys.exit(handled)
    if isinstance(rc, int) and rc != 0:
        sys.exit(rc)


if __name__ == "__main__":
    main()
