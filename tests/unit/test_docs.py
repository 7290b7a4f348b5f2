"""The manual: it builds without a warning, and its generated tables have what they need.

The table of settings and the table of exit codes are made from the code that defines
them (``docs/_ext/runner_tables.py``), so these tests check that the code says what
the tables need, and that ``runner --help`` gives every exit code.
"""

import re
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from runner import cli, config, errors
from runner.reports import LAST_EXIT_ENV
from runner.runtime.metrics import SlotCollector, SlotMetrics

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


def served_metric_names():
    """Every metric a slot serves, as scraped (counters with ``_total``), with each optional
    one present: tables recovering, global tables, a previous exit code."""
    collector = SlotCollector(
        SimpleNamespace(kafka_lost=None, ready=lambda: (True, 'processing')), list,
        lambda: SimpleNamespace(lag=dict, backlog=dict, rebalances=0),
        lambda: SimpleNamespace(disk_usage=dict, recovering=lambda: ([], 0)),
        environ={LAST_EXIT_ENV: '70'},
        global_tables=lambda: SimpleNamespace(read={'rates': 0}, loaded=threading.Event()))
    families = [*SlotMetrics().registry.collect(), *collector.collect()]
    return {family.name + ('_total' if family.type == 'counter' else '')
            for family in families}


def test_the_metrics_table_lists_every_metric_a_slot_serves():
    page = (ROOT / 'docs' / 'ops' / 'observability.rst').read_text()
    metrics_section = page.split('Prometheus metrics', 1)[1].split('.. _', 1)[0]
    assert set(re.findall(r'``(runner_\w+)``', metrics_section)) == served_metric_names()


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
