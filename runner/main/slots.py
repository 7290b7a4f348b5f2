"""The main process's records of its slots: one per slot process, one per slot number."""

import dataclasses
import multiprocessing
import signal
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from .. import platform
from ..errors import EX_UNAVAILABLE
from ..reports import ReportReader
from .listeners import Listener

#: ``slot_main(index, report_fd, main_pid, successor, web_fd)`` runs a slot in the forked
#: child; a successor prepares, then waits for the data directory of the slot it replaces.
#: ``web_fd`` is the listening socket its web server serves.
SlotMain = Callable[[int, int, int, bool, int], int]
#: Wait this long after the graceful timeout (cold), then after a cold stop (KILL).
ESCALATION_GRACE = 5.0


class Deploy(NamedTuple):
    """What the slots started from now on run, from the configuration and the app as the
    last app check saw them."""

    #: The entry point of the slots.
    slot_main: SlotMain
    #: Where slot ``index``'s web server listens: ``web_address(index)`` is (host, port).
    web_address: Callable[[int], tuple[str, int]]


class SlotProcess:
    """The main process's record of one running slot process."""

    def __init__(self, index: int, process: multiprocessing.process.BaseProcess,
                 reader: ReportReader, import_timeout: float) -> None:
        self.index = index
        self.import_timeout = import_timeout
        self.process = process
        self.pid = process.pid
        self.reader = reader
        self.started = time.monotonic()
        self.started_at = round(time.time(), 3)
        self.report: dict[str, Any] = {'phase': 'starting'}
        self.reported_at = time.monotonic()
        self.retiring = False
        self.handing_over = False   # retiring for its successor (USR2), not for good
        self.stop_by = 0.0          # when retiring: killed if still alive then
        self.loaded = False         # it reported that it loaded the app
        self.ran = False            # it reported 'running' at least once
        self.was_ready = False      # it reported ready at least once
        self.killed: str | None = None    # why the main process killed it
        self.error: dict[str, Any] | None = None
        #: The listening socket it serves (the main process holds it while it runs).
        self.listener: Listener | None = None

    def stop(self, signum: signal.Signals) -> None:
        """Send ``signum``; the main process KILLs the slot if it is still alive after its
        graceful timeout."""
        self.retiring = True
        self.stop_by = (time.monotonic() + self.report.get('graceful_timeout', 30.0)
                        + ESCALATION_GRACE)
        platform.kill_quietly(self.pid, signum)

    @property
    def ready(self) -> bool:
        return bool(self.report.get('ready')) and not (self.killed or self.retiring)

    def state(self) -> str:
        """``ready``, ``degraded`` (ready, with partitions stopped at a record that failed),
        ``starting``, ``recovering``, ``rebalancing``, ``waiting`` (for Kafka) or
        ``stopping``."""
        if self.retiring or self.killed or self.report['phase'] in ('stopping', 'stopped'):
            return 'stopping'
        if self.ready:
            return 'degraded' if self.report.get('stopped') else 'ready'
        if self.report['phase'] == 'running':
            for prefix, state in (('recovering', 'recovering'), ('waiting for Kafka', 'waiting')):
                if self.report['reason'].startswith(prefix):
                    return state
        return 'rebalancing' if self.was_ready else 'starting'

    def row(self) -> dict[str, Any]:
        """This slot's line in the status."""
        reason = self.killed or (_stopped_partitions(self.report.get('stopped')) if self.ready
                                 else self.report.get('reason'))
        if not (reason or self.loaded):
            reason = (f'loading the app (killed if not loaded within {self.import_timeout:g}s: '
                      'import_timeout)')
        return {'slot': self.index, 'pid': self.pid, 'web': self.report.get('web'),
                'state': self.state(), 'ready': self.ready, 'reason': reason,
                'assignment': self.report.get('assignment', []), 'started': self.started_at,
                'progress': self.report.get('progress')}


def _stopped_partitions(stopped: dict[str, dict[str, Any]] | None) -> str | None:
    """Which partitions a slot has stopped at a record, and why, in one line (or None)."""
    if not stopped:
        return None
    return '; '.join(f'{place} stopped at offset {why["offset"]}: {why["agent"]} raised '
                     f'{why["error"]}' for place, why in sorted(stopped.items()))


@dataclasses.dataclass
class SlotRecord:
    """What the main process remembers of a slot number across its processes."""

    crashes: int = 0            # in a row, for the backoff
    restarts: int = 0           # after unexpected exits, in all (for the slot's metrics)
    boot_failures: int = 0      # exits before running, in a row
    retry_at: float = 0.0       # monotonic time before which it is not started again
    retry_at_wall: float = 0.0  # the same, as wall-clock time for the status
    exit_code: int | None = None   # of its last unexpected exit, until it is ready again
    reason: str | None = None      # why it exited, could not be forked or was given up on,
                                   # until it is ready again
    failed: bool = False        # given up on until the next HUP

    def row(self, index: int, stopping: bool) -> dict[str, Any]:
        """The status row of slot number ``index`` while it has no process."""
        if self.failed:
            state = 'failed'
        elif stopping:
            state = 'stopped'
        elif self.exit_code == EX_UNAVAILABLE:
            state = 'waiting'
        elif self.reason is not None:
            state = 'backoff'
        else:
            state = 'starting'
        row = {'slot': index, 'pid': None, 'web': None, 'state': state, 'ready': False,
               'reason': self.reason if state in ('failed', 'backoff', 'waiting') else None,
               'assignment': [], 'started': None, 'exit_code': self.exit_code}
        if state in ('backoff', 'waiting'):
            row['retry_at'] = round(self.retry_at_wall, 3)
        return row


def how(code: int) -> str:
    """How a process ended, from its exit code (negative: the signal that killed it)."""
    return f'was killed by signal {-code}' if code < 0 else f'exited with code {code}'
