"""`harness fid prefetch [--dest PATH]`: fetch clean-fid's Inception weights on a machine with internet access."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from plugins.metrics import (
    INCEPTION_DEST,
    INCEPTION_ENV_VAR,
    INCEPTION_WEIGHTS_NAME,
    INCEPTION_WEIGHTS_URL,
    download_inception_weights,
)

__all__ = ["fid_app", "register"]

fid_app = typer.Typer(help="Inception FID weights: fetch them once, then point the `fid` metric at them.",
                      no_args_is_help=True)


@fid_app.command("prefetch")
def prefetch(
    dest: Annotated[Path, typer.Option("--dest", help="where to write inception-2015-12-05.pt")] = (
        INCEPTION_DEST),
    force: Annotated[bool, typer.Option("--force", help="download again even if the file exists")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would be downloaded, touch nothing")] = False,
) -> None:
    """Download the Inception weights for the `fid` metric (about 95 MB) and print how to use them."""
    dest = dest.expanduser()
    if dest.is_dir():
        dest = dest / INCEPTION_WEIGHTS_NAME
    if dry_run:
        typer.echo(f"would download {INCEPTION_WEIGHTS_URL}\n          to {dest}")
    elif dest.is_file() and not force:
        typer.echo(f"{dest} already exists (use --force to download again)")
    else:
        typer.echo(f"downloading {INCEPTION_WEIGHTS_URL} ...")
        download_inception_weights(dest)
        typer.echo(f"saved {dest} ({dest.stat().st_size / 1e6:.1f} MB)")
    typer.echo(f"use it with:  export {INCEPTION_ENV_VAR}={dest}\n"
               f"or in a study:  eval: {{metric_options: {{fid: {{weights_path: {dest}}}}}}}\n"
               f"(offline machines: copy the file over and do the same)")


def register(app: typer.Typer) -> None:
    app.add_typer(fid_app, name="fid")
