"""Imports run one way: runtime → state → declarations; the main process knows nothing
of the app, the runtime, the state or Kafka."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO, runner_env

PACKAGE = REPO / 'runner'
#: Package → what it must never import (runner's packages, or third-party modules).
FORBIDDEN = {
    'runner.main': ('runner.app', 'runner.runtime', 'runner.state', 'runner.kafka', 'kafka',
                    'plyvel'),
    'runner.app': ('runner.runtime', 'runner.state', 'runner.kafka', 'runner.main',
                   'runner.testing', 'plyvel'),
    'runner.kafka': ('runner.app', 'runner.runtime', 'runner.state', 'runner.main',
                     'runner.testing'),
    'runner.runtime': ('runner.main', 'runner.testing'),
    'runner.state': ('runner.runtime', 'runner.main', 'runner.testing'),
    'runner.testing': ('runner.main',),
    'runner.platform': ('runner.app', 'runner.runtime', 'runner.state', 'runner.kafka',
                        'kafka', 'plyvel'),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (functions included), made absolute."""
    package = module_name(path) if path.name == '__init__.py' else module_name(path).rpartition(
        '.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split('.')
            if node.level:
                base = base[:len(base) - node.level + 1]
                name = '.'.join([*base, node.module] if node.module else base)
            else:
                name = node.module
            found.add(name)
            found.update(f'{name}.{alias.name}' for alias in node.names)
    return found


@pytest.mark.parametrize('package', sorted(FORBIDDEN))
def test_imports_run_one_way(package):
    files = [PACKAGE / f'{package.split(".")[1]}.py'] if package == 'runner.platform' else \
        sorted((PACKAGE / package.split('.')[1]).glob('*.py'))
    broken = [f'{path.relative_to(REPO)} imports {name}' for path in files
              for name in sorted(imports_of(path))
              if any(name == bad or name.startswith(bad + '.') for bad in FORBIDDEN[package])]
    assert broken == []


def test_the_main_process_loads_no_app_runtime_state_or_kafka_module():
    probe = ('import sys, runner.cli, runner.main.supervisor, runner.main.control; '
             'print(sorted(m for m in sys.modules if m.split(".")[0] in ("kafka", "plyvel") '
             'or m.startswith(("runner.app", "runner.runtime", "runner.state", '
             '"runner.kafka"))))')
    result = subprocess.run([sys.executable, '-c', probe], env=runner_env(), cwd=REPO,
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == '[]'


#: The consumer thread's parts → what they must never import: the loop delegates to the
#: rebalances, which drive the checkpoints, which wait through outages (never back).
CONSUMER_PARTS = {
    'runner.runtime.rebalances': ('runner.runtime.consumer',),
    'runner.runtime.checkpoints': ('runner.runtime.consumer', 'runner.runtime.rebalances'),
    'runner.runtime.outage': ('runner.runtime.consumer', 'runner.runtime.rebalances',
                              'runner.runtime.checkpoints'),
}


@pytest.mark.parametrize('module', sorted(CONSUMER_PARTS))
def test_the_consumer_loop_delegates_one_way(module):
    path = REPO / (module.replace('.', '/') + '.py')
    assert sorted(imports_of(path) & set(CONSUMER_PARTS[module])) == []


def test_no_two_test_modules_share_a_name():
    """pytest imports test modules by their name (the directories have no __init__.py):
    a second module of the same name is an import error, and its tests never run."""
    names = [path.name for top in ('tests', 'examples') for path in (REPO / top).rglob('test_*.py')]
    assert sorted({name for name in names if names.count(name) > 1}) == []
