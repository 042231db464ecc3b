"""`harness ls` (to be filled in by its issue)."""

import typer


def register(app: typer.Typer) -> None:
    """Adds nothing yet."""
