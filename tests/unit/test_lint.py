"""The code stays ruff clean (the rules are ruff's defaults plus pyproject.toml)."""

import shutil
import subprocess

import pytest
from harness import REPO


@pytest.mark.skipif(shutil.which('ruff') is None, reason='ruff is installed with .[test]')
def test_ruff_finds_nothing():
    result = subprocess.run(['ruff', 'check', '.'], cwd=REPO, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
