"""Fixtures shared by the harness tests."""

import pytest

from tests.harness.runner_support import PLUGIN


@pytest.fixture()
def registries(monkeypatch):
    """The registries with the toy plugin (tests/harness/toy_plugin.py) loaded; the cache cleared around them."""
    from plugins.registry import load_registries
    monkeypatch.setenv("ZIGMA_HARNESS_PLUGINS", PLUGIN)
    load_registries.cache_clear()
    yield load_registries()
    load_registries.cache_clear()
