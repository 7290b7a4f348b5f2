"""Finding the user's App from ``-A module`` or ``-A module:attribute``."""

import importlib
import os
import sys
import traceback

from ..errors import ConfigError, RunnerError
from .app import App


def load_app(spec: str) -> App:
    """Import the module named by ``spec`` (from the current directory first) and return its App."""
    module_name, _, attribute = spec.partition(':')
    if not module_name or not all(part.isidentifier() for part in module_name.split('.')):
        raise ConfigError(f'invalid app {spec!r}: expected module or module:attribute')
    if os.getcwd() not in sys.path and '' not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = _import(spec, module_name)
    if attribute:
        app = getattr(module, attribute, None)
        if not isinstance(app, App):
            raise ConfigError(f'cannot load app {spec!r}: {module_name} has no App named '
                              f'{attribute!r}')
        return app
    return _only_app(spec, module)


def _import(spec: str, module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f'cannot load app {spec!r}: no module named {module_name!r} '
                              f'(looked in {os.getcwd()} and sys.path)') from None
        raise ConfigError(f'cannot load app {spec!r}: {_describe(exc)}') from None
    except RunnerError as exc:
        raise ConfigError(f'cannot load app {spec!r}: {exc}') from None
    except Exception as exc:  # noqa: BLE001 - user code may raise anything on import
        raise ConfigError(f'cannot load app {spec!r}: {_describe(exc)}') from None


def _only_app(spec: str, module) -> App:
    apps = {id(value): value for value in vars(module).values() if isinstance(value, App)}
    if isinstance(getattr(module, 'app', None), App):
        return module.app
    if len(apps) == 1:
        return next(iter(apps.values()))
    if not apps:
        raise ConfigError(f'cannot load app {spec!r}: module {module.__name__} defines no '
                          f'runner.App')
    raise ConfigError(f'cannot load app {spec!r}: module {module.__name__} defines several '
                      f'Apps; name one with -A {module.__name__}:attribute')


def _describe(exc: BaseException) -> str:
    """``Error: message (file:line)``, pointing at the innermost frame."""
    if isinstance(exc, SyntaxError):
        return f'SyntaxError: {exc.msg} ({exc.filename}:{exc.lineno})'
    frames = traceback.extract_tb(exc.__traceback__)
    where = f' ({frames[-1].filename}:{frames[-1].lineno})' if frames else ''
    return f'{type(exc).__name__}: {exc}{where}'
