"""Built-in plugin: the interpolant paths of zigma.interpolants (linear, gvp, vp), one entry each."""

from zigma.interpolants import PATHS

from .hookspecs import hookimpl
from .specs import InterpolantEntry


def _description(cls: type) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0]


@hookimpl
def register_interpolants(register):
    """Registers one InterpolantEntry per zigma path; build() -> a fresh Path."""
    for name, cls in PATHS.items():
        register(InterpolantEntry(name=name, description=_description(cls), build=cls))
