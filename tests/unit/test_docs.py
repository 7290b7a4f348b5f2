"""The manual: it builds without a warning, and its generated tables have what they need.

The table of settings and the table of exit codes are made from the code that defines
them (``docs/_ext/runner_tables.py``), so these tests check that the code says what
the tables need, and that ``runner --help`` gives every exit code.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from runner import cli, config, errors

ROOT = Path(__file__).resolve().parents[2]


def test_every_exit_code_constant_has_a_meaning():
    constants = {value for name, value in vars(errors).items() if name.startswith('EX_')}
    assert constants == set(errors.EXIT_CODES)
    assert all(code.meaning.strip() for code in errors.EXIT_CODES.values())


def test_help_lists_every_exit_code():
    section = cli.__doc__.split('Exit codes:', 1)[1]
    listed = {int(number) for number in re.findall(r'(?<![\w-])(\d+)\s+[a-z]', section)}
    assert listed == set(errors.EXIT_CODES)


def test_every_setting_has_a_meaning():
    missing = [name for name, field in config.FIELDS.items()
               if not field.metadata.get('meaning', '').strip()]
    assert missing == []


def test_every_setting_option_is_a_setting_and_in_the_help():
    assert set(cli.SETTING_OPTIONS) <= set(config.FIELDS)
    for option in cli.SETTING_OPTIONS.values():
        assert f'{option}=' in cli.__doc__


@pytest.mark.long
def test_manual_builds_without_a_warning(tmp_path):
    build = subprocess.run(
        [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-b', 'html',
         '-d', str(tmp_path / 'doctrees'), str(ROOT / 'docs'), str(tmp_path / 'html')],
        check=False, capture_output=True, text=True, cwd=ROOT)
    assert build.returncode == 0, build.stderr
    settings = (tmp_path / 'html' / 'reference' / 'settings.html').read_text()
    assert all(f'<code class="docutils literal notranslate"><span class="pre">{name}</span>'
               in settings for name in config.FIELDS)
    exit_codes = (tmp_path / 'html' / 'reference' / 'exit-codes.html').read_text()
    assert all(f'<td><p>{code}</p></td>' in exit_codes for code in errors.EXIT_CODES)
