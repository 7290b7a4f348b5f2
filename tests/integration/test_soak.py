"""The chaos soak of ``bench/soak.py``, cut to CI's size: at-least-once under slots and a
main process killed at random moments and a broker restart, no total below the truth
(exactly-once's own chaos test is in ``test_exactly_once.py``)."""

import re
import subprocess
import sys

import pytest
from harness import REPO, runner_env


@pytest.mark.long
def test_a_short_chaos_soak_loses_no_count(tmp_path):
    soak = subprocess.run(
        [sys.executable, str(REPO / 'bench' / 'soak.py'), '--guarantee', 'at_least_once',
         '--duration', '60', '--slot-kills', '3', '--main-kills', '1', '--seed', '7',
         '--keep', str(tmp_path / 'soak')],
        cwd=REPO, env=runner_env(), check=False, capture_output=True, text=True, timeout=600)
    assert soak.returncode == 0, soak.stdout[-3000:] + soak.stderr[-3000:]
    assert re.search(r'keys below the truth \(lost\) +0 ', soak.stdout), soak.stdout
