"""runner/ holds no dead code: vulture finds no unused function, class, attribute or variable.

vulture runs as pyproject.toml's ``[tool.vulture]`` says (runner/ plus the whitelist of names used
where vulture cannot see, tests/vulture_whitelist.py)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

from harness import REPO

WHITELIST = Path(REPO) / 'tests' / 'vulture_whitelist.py'


def vulture(*args: str, cwd: Path = Path(REPO)) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'vulture', *args], cwd=cwd,
                          capture_output=True, text=True, check=False)


def test_vulture_finds_no_unused_code_in_runner():
    result = vulture()
    assert result.returncode == 0, result.stdout + result.stderr


def test_vulture_at_the_configured_confidence_reports_an_unused_method(tmp_path):
    (tmp_path / 'pyproject.toml').write_text(
        (Path(REPO) / 'pyproject.toml').read_text().replace(
            'paths = ["runner", "tests/vulture_whitelist.py"]', 'paths = ["module.py"]'))
    (tmp_path / 'module.py').write_text(
        'class Shape:\n    def area(self):\n        return 0\n\n\nprint(Shape())\n')
    result = vulture(cwd=tmp_path)
    assert "unused method 'area'" in result.stdout, result.stdout + result.stderr
    assert result.returncode != 0


def test_every_whitelisted_name_is_still_in_runner():
    source = '\n'.join(path.read_text() for path in (Path(REPO) / 'runner').rglob('*.py'))
    names = [node.attr for node in ast.walk(ast.parse(WHITELIST.read_text()))
             if isinstance(node, ast.Attribute)]
    assert names
    stale = [name for name in names if not re.search(rf'\b{re.escape(name)}\b', source)]
    assert not stale, f'no longer in runner/, remove from {WHITELIST.name}: {stale}'
