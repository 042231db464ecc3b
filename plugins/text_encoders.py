"""Built-in plugin: text encoders (thin adapters around zigma; filled in by its issue)."""

from .hookspecs import hookimpl


@hookimpl
def register_text_encoders(register):
    """Registers nothing yet."""
