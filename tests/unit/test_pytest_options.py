"""``-p no:xdist`` (pytest without pytest-xdist, to debug) works for every test path: the
xdist options of addopts are taken, unused, whatever directory the tests lie in."""

import subprocess
import sys

import pytest
from harness import REPO


@pytest.mark.parametrize('path', ['examples/test_wordcount.py', 'tests/unit/test_layout.py'])
def test_pytest_without_xdist_collects_the_tests_of(path):
    result = subprocess.run([sys.executable, '-m', 'pytest', '-p', 'no:xdist', '--collect-only',
                             '-q', path], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
