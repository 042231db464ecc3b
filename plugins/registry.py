"""Plugin loading and the typed, collision-checked registries built from the `register_*` hooks."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Generic, TypeVar

import pluggy

from . import hookspecs
from .errors import DuplicateNameError, HarnessError, UnknownNameError, suggest
from .specs import KINDS

__all__ = ["PluginError", "Registry", "Registries", "load_registries", "plugin_manager", "ENTRY_POINT_GROUP", "BUILTIN_PLUGINS"]

ENTRY_POINT_GROUP = "zigma_harness"
#: Built-in plugins are ordinary plugins, one module each.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "plugins.scans",
    "plugins.mixers",
    "plugins.backbones",
    "plugins.interpolants",
    "plugins.samplers",
    "plugins.datasets",
    "plugins.metrics",
    "plugins.text_encoders",
)

E = TypeVar("E")


@dataclass(frozen=True)
class Registered(Generic[E]):
    entry: E
    plugin: str


class Registry(Generic[E]):
    """Name -> entry for one component kind, remembering which plugin registered each name."""

    def __init__(self, kind: str, entry_type: type, label: str) -> None:
        self.kind, self.entry_type, self.label = kind, entry_type, label
        self._items: dict[str, Registered[E]] = {}

    def add(self, entry: E, plugin: str) -> None:
        if not isinstance(entry, self.entry_type):
            raise HarnessError(
                f"plugin {plugin!r}: register_{self.kind.replace('-', '_')} expects {self.entry_type.__name__}, "
                f"got {type(entry).__name__}")
        name = entry.name  # type: ignore[attr-defined]
        if name in self._items:
            raise DuplicateNameError(
                f"{self.label} {name!r} is registered by both plugin {self._items[name].plugin!r} "
                f"and plugin {plugin!r}")
        self._items[name] = Registered(entry, plugin)

    def get(self, name: str) -> E:
        try:
            return self._items[name].entry
        except KeyError:
            raise UnknownNameError(suggest(name, self._items, what=self.label)) from None

    def plugin_of(self, name: str) -> str:
        self.get(name)
        return self._items[name].plugin

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[Registered[E]]:
        return iter(self._items[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._items)


class Registries:
    """All registries, keyed by kind ('scans', 'backbones', ...); also attributes (reg.scans)."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.plugin_manager = pm
        self.by_kind: dict[str, Registry] = {}
        for kind, (hook, entry_type, label) in KINDS.items():
            reg: Registry = Registry(kind, entry_type, label)
            caller = getattr(pm.hook, hook)
            # get_hookimpls() is in registration order, so built-ins come first and a later
            # third-party duplicate is the one blamed.
            for impl in caller.get_hookimpls():
                def register(entry, _plugin=impl.plugin_name, _reg=reg):
                    _reg.add(entry, _plugin)
                try:
                    impl.function(register=register)
                except HarnessError:
                    raise
                except Exception as exc:  # a plugin's bug: one line naming the plugin
                    raise PluginError(f"plugin {impl.plugin_name!r}: {hook} raised {_one_line(exc)}") from exc
            self.by_kind[kind] = reg
            setattr(self, kind.replace("-", "_"), reg)

    def __getitem__(self, kind: str) -> Registry:
        try:
            return self.by_kind[kind]
        except KeyError:
            raise UnknownNameError(suggest(kind, self.by_kind, what="component kind")) from None


class PluginError(HarnessError):
    """A plugin failed while loading or registering (its own bug); the message names the plugin."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _env_list(var: str) -> list[str]:
    return [s.strip() for s in os.environ.get(var, "").split(",") if s.strip()]


def plugin_manager(extra_modules: Iterable[str] = ()) -> pluggy.PluginManager:
    """Built-ins, then entry points (unless ZIGMA_HARNESS_DISABLE_AUTOLOAD=1), then modules named in
    ZIGMA_HARNESS_PLUGINS (comma-separated) and `extra_modules`. ZIGMA_HARNESS_BLOCK_PLUGINS blocks names."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in _env_list("ZIGMA_HARNESS_BLOCK_PLUGINS"):
        pm.set_blocked(name)
    for modname in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(modname), name=modname.split(".", 1)[1])
    if os.environ.get("ZIGMA_HARNESS_DISABLE_AUTOLOAD", "") not in ("1", "true", "yes"):
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except HarnessError:
            raise
        except Exception as exc:  # an installed plugin that fails to import
            raise PluginError(f"an installed plugin (entry-point group {ENTRY_POINT_GROUP!r}) failed to load: "
                              f"{_one_line(exc)}") from exc
    for modname in [*_env_list("ZIGMA_HARNESS_PLUGINS"), *extra_modules]:
        try:
            module = importlib.import_module(modname)
        except ImportError as exc:
            raise HarnessError(f"cannot import plugin module {modname!r}: {exc}") from None
        except Exception as exc:  # the module's own bug
            raise PluginError(f"plugin module {modname!r} raised on import: {_one_line(exc)}") from exc
        if pm.get_plugin(modname) is None and not pm.is_blocked(modname):
            pm.register(module, name=modname)
    pm.check_pending()
    return pm


@cache
def _cached(extra: tuple[str, ...], env_key: tuple[str, ...]) -> Registries:
    return Registries(plugin_manager(extra))


def load_registries(extra_modules: Iterable[str] = ()) -> Registries:
    """The registries of every loaded plugin (cached per process and plugin environment)."""
    env_key = tuple(os.environ.get(v, "") for v in
                    ("ZIGMA_HARNESS_PLUGINS", "ZIGMA_HARNESS_BLOCK_PLUGINS", "ZIGMA_HARNESS_DISABLE_AUTOLOAD"))
    return _cached(tuple(extra_modules), env_key)


load_registries.cache_clear = _cached.cache_clear  # type: ignore[attr-defined]
