"""Built-in plugin: datasets (thin adapters around zigma; filled in by its issue)."""

from .hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    """Registers nothing yet."""
