"""Built-in plugin: backbones (thin adapters around zigma; filled in by its issue)."""

from .hookspecs import hookimpl


@hookimpl
def register_backbones(register):
    """Registers nothing yet."""
