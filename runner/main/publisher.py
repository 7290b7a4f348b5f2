"""What the main process tells the outside about its slots: the status file (read by
``runner status``), systemd's ``READY=``, ``RELOADING=``, ``STATUS=`` and watchdog, and
Prometheus's target file (``file_sd_configs``).

The supervisor decides; this module only says.  Each round of the main loop hands
it a :class:`Summary` of the slots and the restarts; it works out the main
process's state from it and publishes what changed.
"""

import json
import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

from .. import platform
from ..errors import CannotCreate, DiskError
from ..logs import plural
from .systemd import Notifier

log = logging.getLogger(__name__)

#: A STATUS= line is sent once it has held this long (seconds), so slots that settle
#: (ready, then rebalancing once more) do not make it flap.  READY=1 carries it at once.
STATUS_SETTLE = 1.0
#: The status file is written again at least this often (seconds), even when nothing
#: changed: its ``written_at`` tells ``runner status`` that the main process still answers.
STATUS_REFRESH = 1.0


class Summary(NamedTuple):
    """One round's view of the slots, from the supervisor."""

    main_pid: int
    workers: int
    #: One status row per slot number (see ``SlotProcess.row``).
    rows: list[dict[str, Any]]
    #: ``warm`` or ``cold`` once the worker is stopping, else None.
    stopping: str | None
    #: A rolling restart, or its app check, is under way.
    restarting: bool
    #: A slot is failed, or exited and has not been ready since.
    slot_trouble: bool
    #: The rolling restart counters and the last one's error (see ``runner status --json``).
    restarts: dict[str, Any]


class StatusPublisher:
    """Publishes each round's :class:`Summary`.  ``ready_timeout``: once no slot has been
    ready for this long, systemd's watchdog is no longer pinged."""

    def __init__(self, name: str, path: Path | None, ready_timeout: float,
                 targets_path: Path | None = None) -> None:
        self.name = name
        self.path = path
        self._targets = PublishedFile(targets_path, 'the Prometheus targets file is out of date')
        self._ready_timeout = ready_timeout
        self.notifier = Notifier()
        #: Every slot was ready at once, at least once (READY=1 was sent).
        self.was_ready = False
        self._reloading = False         # RELOADING=1 sent, READY=1 not yet
        self._last_ready = time.monotonic()
        self._watchdog_held = False
        self._last_watchdog = 0.0
        self._status_line = ''              # the last STATUS= sent
        self._pending_line = ''             # the line now, and since when
        self._pending_since = 0.0
        self._published: str | None = ''     # None: the last write failed
        self._written_at = 0.0

    def started(self) -> None:
        """The main loop begins: the ready timeout counts from now."""
        self._last_ready = time.monotonic()

    def reloading(self) -> None:
        """A rolling restart begins: RELOADING=1, if the worker was ever ready."""
        if self.was_ready:
            self._reloading = True
            self.notifier.reloading()

    def stopping(self) -> None:
        self.notifier.notify(stopping='1')

    def stopped(self) -> None:
        """The main process has stopped: STATUS=stopped, and no status file."""
        self.notifier.notify(status='stopped')
        if self.path:
            self.path.unlink(missing_ok=True)
        self._targets.remove()

    def publish(self, summary: Summary) -> None:
        """Tell systemd and the status file what changed."""
        rows = summary.rows
        ready = sum(row['ready'] for row in rows)
        if ready:
            self._last_ready = time.monotonic()
        waiting = any(row['state'] == 'waiting' for row in rows)
        state = self._state(summary, ready, waiting,
                            any(row['state'] == 'degraded' for row in rows))
        line = status_line(state, ready, summary.workers, waiting,
                           summary.restarts.get('restart_error'))
        self._notify(ready, summary.workers, state, line)
        self._ping_watchdog(waiting)
        status = {'pid': summary.main_pid, 'app': self.name, 'workers': summary.workers,
                  'state': state, 'waiting_for_kafka': waiting, **summary.restarts,
                  'slots': rows}
        text = json.dumps(status, sort_keys=True)
        now = time.time()
        if self.path and (text != self._published or now - self._written_at >= STATUS_REFRESH):
            self._write_status(status, text, now)
        self._targets.publish(json.dumps(scrape_targets(self.name, rows), indent=1,
                                         sort_keys=True))

    def _write_status(self, status: dict[str, Any], text: str, now: float) -> None:
        """Replace the status file (``text`` is ``status``), stamped with ``now``; one that
        cannot be written (a full disk) is said once and tried again every round until it
        can, and the workers go on."""
        self._written_at = now
        try:
            platform.replace_file(self.path, json.dumps({**status, 'written_at': round(now, 3)},
                                                        sort_keys=True))
        except (CannotCreate, DiskError) as exc:
            if self._published is not None:
                log.warning('%s: runner status shows an older state until it can be written',
                            exc)
            self._published = None
            return
        self._published = text

    def _state(self, summary: Summary, ready: int, waiting: bool, stopped: bool) -> str:
        """The main process's state; ``stopped``: a slot has partitions stopped at a record."""
        if summary.stopping:
            return 'stopping'
        if summary.restarting:
            return 'restarting'
        if waiting or stopped or summary.slot_trouble:
            return 'degraded'
        return 'running' if ready >= summary.workers or self.was_ready else 'starting'

    def _notify(self, ready: int, workers: int, state: str, line: str) -> None:
        """READY=1 once every slot is ready for the first time and at the end of each
        reload; STATUS= when its line changed and has held for :data:`STATUS_SETTLE` (the
        first one, one sent with READY=1 and ``stopping`` at once); both in one message."""
        fields = {}
        if not self.was_ready and ready >= workers:
            self.was_ready = True
            fields['ready'] = '1'
            log.info('all %s ready', plural(workers, 'slot'))
        elif self._reloading and state != 'restarting':
            self._reloading = False
            fields['ready'] = '1'
        now = time.monotonic()
        if line != self._pending_line:
            self._pending_line, self._pending_since = line, now
        settled = (now - self._pending_since >= STATUS_SETTLE or not self._status_line
                   or 'ready' in fields or state == 'stopping')
        if line != self._status_line and settled:
            self._status_line = fields['status'] = line
        if fields:
            self.notifier.notify(**fields)

    def _ping_watchdog(self, waiting: bool) -> None:
        """Ping while some slot has been ready within ``ready_timeout`` (so a worker whose
        slots all crash-loop or hang is restarted by systemd), and while slots wait for
        Kafka: restarting the worker would not bring the broker back."""
        interval = self.notifier.watchdog_interval
        now = time.monotonic()
        if interval is None or now - self._last_watchdog < interval:
            return
        held = now - self._last_ready >= self._ready_timeout and not waiting
        if held != self._watchdog_held:
            self._watchdog_held = held
            if held:
                log.error('no slot has been ready for %.0fs; no longer pinging the systemd '
                          'watchdog', now - self._last_ready)
            else:
                log.info('a slot is ready again; pinging the systemd watchdog again')
        if not held:
            self._last_watchdog = now
            self.notifier.notify(watchdog='1')


def status_line(state: str, ready: int, workers: int, waiting: bool,
                restart_error: str | None) -> str:
    """What STATUS= says: the state first, as ``runner status`` says it, then whether slots
    wait for Kafka and a refused or failed deploy (until a rolling restart succeeds)."""
    line = f'{state}, {ready} of {plural(workers, "slot")} ready'
    if waiting:
        line += ', waiting for Kafka'
    return f'{line}; {restart_error}' if restart_error else line


def scrape_targets(app: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The web address of every slot that has one (from its status row), as Prometheus
    ``file_sd_configs`` target groups labelled with the app and the slot number."""
    return [{'targets': [row['web']], 'labels': {'runner_app': app,
                                                 'runner_slot': str(row['slot'])}}
            for row in rows if row.get('pid') and row.get('web')]


class PublishedFile:
    """A file replaced whenever its text changes (nothing without a path); one that cannot
    be written (a full disk) is said once (``stale`` says what that means) and tried again
    every round until it can, and the workers go on."""

    def __init__(self, path: Path | None, stale: str) -> None:
        self.path = path
        self._stale = stale
        self._written: str | None = ''     # None: the last write failed

    def publish(self, text: str) -> None:
        if self.path is None or text == self._written:
            return
        try:
            platform.replace_file(self.path, text)
        except (CannotCreate, DiskError) as exc:
            if self._written is not None:
                log.warning('%s: %s until it can be written', exc, self._stale)
            self._written = None
            return
        self._written = text

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
