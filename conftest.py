"""Options every test path shares (``tests/`` and ``examples/``): this conftest lies at the
root, so pytest reads it whatever paths it is given."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """Without pytest-xdist (``-p no:xdist``), take the xdist options of addopts, unused."""
    if not pluginmanager.has_plugin("xdist"):
        group = parser.getgroup("xdist", "pytest-xdist is not loaded: these are ignored")
        group.addoption("--numprocesses")
        group.addoption("--maxschedchunk")
