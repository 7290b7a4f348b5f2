"""Sphinx configuration of runner's manual: ``sphinx-build -W docs docs/_build/html``."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE / '_ext')]

from runner import __version__  # after the path is set

project = 'runner'
author = 'the runner authors'
copyright = '2026, the runner authors'
version = release = __version__

extensions = ['sphinx.ext.autodoc', 'runner_tables']
exclude_patterns = ['_build']
templates_path: list[str] = []

# The reference follows the source's order; type hints stay in the signatures.
autodoc_member_order = 'bysource'
autodoc_default_options = {'undoc-members': False}

html_theme = 'alabaster'
html_title = f'runner {release}'
html_static_path: list[str] = []
