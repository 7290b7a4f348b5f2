"""The probe every system measured by ``peers.py`` calls once per record it processed.

Imported by the peer loops (``peer_loops.py``, in the peers' virtual environment), by the
runner apps that ``peers.py`` writes and by nothing else; standard library only.  It is
configured by the environment: ``PEERS_PROBE_DIR`` (where to write) and
``PEERS_PROBE_COUNT`` (the record whose processing is the last).  ``tick()`` costs the
same few operations in every system: a counter and two comparisons.  At the first record
it writes ``first-PID.json``, at record ``PEERS_PROBE_COUNT`` ``last-PID.json``, each with
``time.monotonic()`` (system-wide, so comparable across processes), the process's CPU
seconds and its peak RSS so far.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

_directory = Path(os.environ.get('PEERS_PROBE_DIR', '.'))
#: The record whose processing is the last one measured.
EXPECTED = int(os.environ.get('PEERS_PROBE_COUNT', '0'))
_count = 0


def tick() -> None:
    """One record processed."""
    global _count
    _count += 1
    if _count == 1:
        _write('first')
    if _count == EXPECTED:
        _write('last')


def _write(name: str) -> None:
    moment = {'monotonic': time.monotonic(), 'cpu_s': time.process_time(),
              'peak_rss_mb': peak_rss_mb(), 'records': _count, 'pid': os.getpid()}
    final = _directory / f'{name}-{os.getpid()}.json'
    partial = final.with_suffix('.tmp')
    partial.write_text(json.dumps(moment))
    partial.rename(final)


def peak_rss_mb(pid: int | str = 'self') -> float:
    """The peak resident set size (``VmHWM``) of a live process, in MiB."""
    status = Path(f'/proc/{pid}/status').read_text()
    return round(int(re.search(r'^VmHWM:\s+(\d+) kB', status, re.MULTILINE)[1]) / 1024, 1)
