"""Commands that act on a running main process through its pidfile: status, stop, restart."""

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import NotFinished, NotRunning
from ..platform import running_pid


def status_path(pidfile: str | Path) -> Path:
    """Where the main process keeps its JSON status: next to its pidfile."""
    return Path(f'{pidfile}.json')


def read_status(pidfile: str) -> tuple[int, dict[str, Any]]:
    """The running main process's pid and status, or NotRunning."""
    pid = running_pid(pidfile)
    if pid is None:
        raise NotRunning(f'not running (no live process holds {pidfile})')
    try:
        status = json.loads(status_path(pidfile).read_text())
    except (OSError, ValueError):
        status = {'pid': pid, 'state': 'starting', 'slots': []}
    return pid, status


def format_status(status: dict[str, Any]) -> str:
    """A table: one line per slot, under a line about the main process."""
    head = (f"{status.get('app', '?')}: main pid {status['pid']}, {status['state']}, "
            f"{len(status['slots'])} of {status.get('workers', '?')} slot(s)")
    lines = [head]
    rows = [('SLOT', 'PID', 'WEB', 'STATE', 'PARTITIONS')]
    for slot in status['slots']:
        rows.append((str(slot['slot']), str(slot['pid']), slot.get('web') or '-', slot['state'],
                     ','.join(slot['assignment']) or '-'))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append('  '.join([*cells, row[4]]))
    return '\n'.join(line.rstrip() for line in lines)


def stop(pidfile: str, cold: bool, timeout: float) -> str:
    """Ask the main process to stop and wait until it is gone."""
    pid = running_pid(pidfile)
    if pid is None:
        return 'not running'
    os.kill(pid, signal.SIGQUIT if cold else signal.SIGTERM)
    if not wait_until(lambda: running_pid(pidfile) is None, timeout):
        raise NotFinished(f'pid {pid} still running after {timeout:g}s')
    return f'stopped (pid {pid})'


def restart(pidfile: str, timeout: float) -> str:
    """Start a rolling restart (HUP) and wait until it has finished or failed."""
    pid, before = read_status(pidfile)
    done, failed = before.get('rolling_restarts', 0), before.get('failed_restarts', 0)
    os.kill(pid, signal.SIGHUP)
    outcome: dict[str, Any] = {}

    def finished() -> bool:
        _, now = read_status(pidfile)
        outcome.update(now)
        return (now.get('failed_restarts', 0) > failed
                or (now.get('rolling_restarts', 0) > done and now.get('state') == 'running'))
    if not wait_until(finished, timeout):
        raise NotFinished(f'rolling restart of pid {pid} not finished after {timeout:g}s')
    if outcome.get('failed_restarts', 0) > failed:
        raise NotFinished(outcome.get('restart_error') or 'rolling restart failed')
    return f'restarted (pid {pid})'


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy and return that; None after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)
