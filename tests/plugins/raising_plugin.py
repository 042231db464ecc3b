"""A throwaway third-party plugin whose register_samplers hook raises (its own bug), for tests."""

from plugins.hookspecs import hookimpl


@hookimpl
def register_samplers(register):
    raise KeyError("oops [/red] in the plugin")
