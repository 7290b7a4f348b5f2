"""A pytest fixture for :mod:`runner.testing`.

Load it from a ``conftest.py`` with ``pytest_plugins = ['runner.testing.pytest_plugin']``;
then a test asks for ``app_run`` and calls it with its app (and any argument of
:func:`runner.testing.run`): the run's tables live in the test's ``tmp_path``, and the
run is closed when the test ends::

    def test_counts_words(app_run):
        t = app_run(wordcount.app)
        t.send('sentences', value='the cat and the hat')
        assert t.table('counts')['the'] == 2
"""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..app.app import App
from . import AppDriver


@pytest.fixture
def app_run(tmp_path: Path) -> Iterator[Callable[..., AppDriver]]:
    """``app_run(app, partitions=None, **settings)``: a running :class:`AppDriver`."""
    drivers: list[AppDriver] = []

    def start(app: App, partitions: dict[str, int] | None = None,
              **settings: Any) -> AppDriver:
        driver = AppDriver(app, tmp_path / f'{app.name}-run{len(drivers)}', partitions,
                           **settings)
        drivers.append(driver)
        return driver
    yield start
    for driver in reversed(drivers):
        driver.close()
