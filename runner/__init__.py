"""runner: a threaded, multiprocess Kafka stream-processing worker runner.

The public names are imported on first use, so the main process (which
imports only :mod:`runner.main`, :mod:`runner.platform` and the settings)
never loads the app, the runtime or a Kafka client.
"""

import importlib
from typing import Any

__version__ = '0.1.0'

#: Public name → the module it lives in.
_PUBLIC = {'App': 'runner.app', 'Event': 'runner.app', 'Stream': 'runner.runtime.stream',
           'spawn': 'runner.platform'}

__all__ = ['App', 'Event', 'Stream', '__version__', 'spawn']


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    if name == 'App':
        # An app built from here can send outside any slot, from a plain script.
        importlib.import_module('runner.runtime.outside').install()
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value
