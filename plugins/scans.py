"""Built-in plugin: scans (thin adapters around zigma; filled in by its issue)."""

from .hookspecs import hookimpl


@hookimpl
def register_scans(register):
    """Registers nothing yet."""
