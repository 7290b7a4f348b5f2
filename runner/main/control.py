"""Commands that act on a running main process through its pidfile: status, stop, restart."""

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import EX_DEGRADED, EX_NOT_ANSWERING, EX_OK, NotFinished, NotRunning
from ..logs import clock, duration, plural
from ..platform import read_own, running_pid
from ..progress import Waiting

#: A status file older than this (seconds) is from a main process that stopped answering
#: (frozen, or it cannot write the file): it rewrites it every second.
STALE_AFTER = 10.0
#: The columns of ``runner status``'s table that hold numbers (records/s and lag).
NUMBER_COLUMNS = (4, 5)


def status_path(pidfile: str | Path) -> Path:
    """Where the main process keeps its JSON status: next to its pidfile."""
    return Path(f'{pidfile}.json')


def targets_path(pidfile: str | Path) -> Path:
    """Where the main process lists its slots' web addresses for Prometheus
    (``file_sd_configs``): next to its pidfile."""
    return Path(f'{pidfile}.targets.json')


def read_status(pidfile: str) -> tuple[int, dict[str, Any]]:
    """The running main process's pid and status, or NotRunning."""
    pid = running_pid(pidfile)
    if pid is None:
        raise NotRunning(f'not running (no live process holds {pidfile})')
    text = read_own(status_path(pidfile), 'status file')
    try:
        status = json.loads(text) if text else None
    except ValueError:
        status = None
    if not isinstance(status, dict):
        status = {'pid': pid, 'state': 'starting', 'slots': []}
    return pid, status


def exit_code(status: dict[str, Any], now: float | None = None) -> int:
    """``runner status``'s exit code: 4 if the main process stopped answering, 2 if it is
    degraded, else 0."""
    if _silent_for(status, now) is not None:
        return EX_NOT_ANSWERING
    return EX_DEGRADED if status['state'] == 'degraded' else EX_OK


def _silent_for(status: dict[str, Any], now: float | None) -> float | None:
    """How long ago the status was written, if that is longer than :data:`STALE_AFTER`."""
    written = status.get('written_at')
    age = (time.time() if now is None else now) - written if written else 0.0
    return age if age > STALE_AFTER else None


def format_status(status: dict[str, Any], now: float | None = None) -> str:
    """A table: one line about the main process (two if it stopped answering, then
    the last deploy's error if it was refused or failed), then one row per slot, each
    followed by an indented line saying why when the slot is not ready."""
    now = time.time() if now is None else now
    slots = status['slots']
    state = _state_summary(status)
    main = f"{status.get('app', '?')}: main pid {status['pid']}"
    silent = _silent_for(status, now)
    head = [f'{main}, {state}'] if silent is None else [
        f'{main} stopped answering: its status was last written {silent:.0f}s ago, and said:',
        f'  {state}']
    if status.get('restart_error'):
        head.append(f"last deploy: {status['restart_error']}")
    rows = [(('SLOT', 'PID', 'WEB', 'STATE', 'REC/S', 'LAG', 'PARTITIONS'), [])]
    rows += [((str(slot['slot']), str(slot['pid'] or '-'), slot.get('web') or '-',
               slot['state'], *_rate_and_lag(slot.get('progress')),
               ','.join(slot['assignment']) or '-'), _notes(slot, now)) for slot in slots]
    widths = [max(len(cells[i]) for cells, _ in rows) for i in range(6)]
    lines = head
    for cells, notes in rows:
        padded = [cell.rjust(width) if i in NUMBER_COLUMNS else cell.ljust(width)
                  for i, (cell, width) in enumerate(zip(cells, widths, strict=False))]
        lines.append('  '.join([*padded, cells[6]]).rstrip())
        lines.extend(' ' * (widths[0] + 2) + note for note in notes)
    return '\n'.join(lines)


def _rate_and_lag(progress: dict[str, Any] | None) -> tuple[str, str]:
    """A running slot's records per second over the last minute and its lag."""
    if not progress:
        return '-', '-'
    return f"{progress['rate']:.1f}", str(progress['lag'])


def _notes(slot: dict[str, Any], now: float) -> list[str]:
    """The lines below a slot's row: why it is not ready, how far its tables' recovery has
    got (unless that is why), and when its last rebalance was and why."""
    why = _why(slot, now)
    notes = [why] if why else []
    progress = slot.get('progress') or {}
    recovery = progress.get('recovery') or {}
    if recovery.get('partitions') and not (why or '').startswith('recovering'):
        left = recovery.get('remaining')
        notes.append(f"recovering {plural(len(recovery['partitions']), 'table partition')}: "
                     + ('reading where their changelogs end' if left is None
                        else f'{left} changelog records remaining'))
    rebalanced = progress.get('rebalanced')
    if rebalanced:
        notes.append(f"last rebalance {clock(rebalanced['at'])} "
                     f"({duration(max(0.0, now - rebalanced['at']))} ago): {rebalanced['cause']}")
    return notes


def _why(slot: dict[str, Any], now: float) -> str | None:
    """Why a slot is not ready, or None."""
    reason = slot.get('reason')
    if slot['state'] in ('backoff', 'waiting') and 'retry_at' in slot:
        wait = max(0.0, slot['retry_at'] - now)
        return f'{reason}; next start in {wait:.0f}s'
    if slot['state'] == 'failed':
        return f'{reason}; left stopped until the next HUP'
    return reason if reason != slot['state'] else None


def stop(pidfile: str, cold: bool, timeout: float) -> str:
    """Ask the main process to stop and wait until it is gone, saying what it waits for."""
    pid = running_pid(pidfile)
    if pid is None:
        return 'not running'
    os.kill(pid, signal.SIGQUIT if cold else signal.SIGTERM)

    def gone(waiting: Waiting) -> bool:
        if running_pid(pidfile) is None:
            return True
        waiting.say(f'pid {pid} to stop ({_state_of(pidfile)})')
        return False
    with Waiting() as waiting:
        if not wait_until(lambda: gone(waiting), timeout):
            raise NotFinished(f'pid {pid} still running after {timeout:g}s')
    return f'stopped (pid {pid})'


def restart(pidfile: str, timeout: float) -> str:
    """Ask for a rolling restart (HUP) and wait until one that began after the request has
    finished, or failed, saying what it waits for.  A request made during a restart is
    served by the next one."""
    pid, before = read_status(pidfile)
    deadline = time.monotonic() + timeout
    os.kill(pid, signal.SIGHUP)
    requests = before.get('restart_requests', 0)
    with Waiting() as waiting:
        seen = wait_until(lambda: _restart_field(
            pidfile, 'restart_requests', requests + 1,
            lambda state: waiting.say(f'pid {pid} to take the restart request ({state})')),
            timeout)
        finished = seen and wait_until(lambda: _restart_field(
            pidfile, 'restart_requests_served', seen,
            lambda state: waiting.say(f'the rolling restart of pid {pid} ({state})')),
            deadline - time.monotonic())
    if not finished:
        raise NotFinished(f'rolling restart of pid {pid} not finished after {timeout:g}s')
    if finished['restart_error']:
        raise NotFinished(finished['restart_error'])
    return f'restarted (pid {pid})'


def _state_of(pidfile: str) -> str:
    """The state of the worker and its slots in a few words, as its status file says."""
    try:
        return _state_summary(read_status(pidfile)[1])
    except NotRunning:
        return 'stopped'


def _state_summary(status: dict[str, Any]) -> str:
    """``running, 1 of 2 slots ready`` (``, waiting for Kafka`` when it is)."""
    slots = status['slots']
    ready = sum(bool(slot.get('ready')) for slot in slots)
    workers = plural(status.get('workers', len(slots)), 'slot')
    waiting = ', waiting for Kafka' if status.get('waiting_for_kafka') else ''
    return f"{status['state']}{waiting}, {ready} of {workers} ready"


def _restart_field(pidfile: str, field: str, least: int, waiting: Callable[[str], None]) -> Any:
    """The status once its ``field`` is at least ``least`` (its value if it is the request
    count, else the whole status), else None after telling ``waiting`` the state."""
    _, status = read_status(pidfile)
    value = status.get(field, 0)
    if value < least:
        waiting(_state_summary(status))
        return None
    return value if field == 'restart_requests' else status


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
