"""The main process: forks one slot per configured worker and looks after them.

Like gunicorn's arbiter it is one small loop: sleep until a signal or a slot
report arrives, handle queued signals, reap, respawn, check liveness, publish.
It holds no thread, Kafka client or LevelDB handle, and never imports the
app: each slot imports it after the fork, so a restarted slot runs new code.
"""

import json
import logging
import multiprocessing
import os
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import platform
from ..errors import EX_CANTCREAT, EX_CONFIG, EX_OK, EX_SOFTWARE, EX_USAGE, RunnerError
from ..reports import ReportReader
from .rolling import RollingRestart
from .systemd import Notifier

log = logging.getLogger(__name__)

SIGNALS = {signal.SIGTERM: 'term', signal.SIGINT: 'int', signal.SIGQUIT: 'quit',
           signal.SIGUSR1: 'usr1', signal.SIGHUP: 'hup', signal.SIGTTIN: 'ttin',
           signal.SIGTTOU: 'ttou', signal.SIGCHLD: 'chld'}
#: Exit codes of a slot that no restart can fix: bad usage, busy directory or port, bad app.
FATAL_CODES = {EX_USAGE, EX_CANTCREAT, EX_CONFIG}
#: A slot that dies this many times in a row before it runs is given up on.
MAX_BOOT_FAILURES = 5
BACKOFF_CAP = 30.0
#: A slot that ran this long before dying is restarted without backoff.
STABLE_AFTER = 60.0
#: A running slot whose reports stop for this long is killed and restarted.
STALE_REPORT = 60.0
#: Reports younger than this count as a fresh heartbeat (for systemd's watchdog).
FRESH_REPORT = 10.0
#: Wait this long after the graceful timeout (cold), then after a cold stop (KILL).
ESCALATION_GRACE = 5.0
TICK = 0.5

#: ``slot_main(index, report_fd, main_pid)`` runs a slot in the forked child.
SlotMain = Callable[[int, int, int], int]


class SlotProcess:
    """The main process's record of one running slot."""

    def __init__(self, index: int, process: multiprocessing.process.BaseProcess,
                 reader: ReportReader) -> None:
        self.index = index
        self.process = process
        self.pid = process.pid
        self.reader = reader
        self.started = time.monotonic()
        self.started_at = round(time.time(), 3)
        self.report: dict[str, Any] = {'phase': 'booting'}
        self.reported_at = time.monotonic()
        self.retiring = False
        self.ran = False          # it reported 'running' at least once
        self.error: dict[str, Any] | None = None

    @property
    def ready(self) -> bool:
        return bool(self.report.get('ready'))

    def summary(self) -> dict[str, Any]:
        return {'slot': self.index, 'pid': self.pid, 'web': self.report.get('web'),
                'state': self.state(), 'ready': self.ready,
                'assignment': self.report.get('assignment', []), 'started': self.started_at}

    def state(self) -> str:
        if self.retiring:
            return 'stopping'
        return 'ready' if self.ready else self.report.get('phase', 'booting')


class Supervisor:
    """Keeps ``workers`` slots running until a signal says otherwise.

    ``reload()`` is called on HUP: it re-reads the configuration, checks that
    the app (as deployed now) loads, and returns the slot entry point for the
    restarted slots; if it raises, the slots keep running as they are.
    """

    def __init__(self, name: str, workers: int, slot_main: SlotMain,
                 reload: Callable[[], SlotMain] | None = None, status_path: Path | None = None,
                 close_in_children: tuple[int, ...] = ()) -> None:
        self.name = name
        self.workers = workers
        self._slot_main = slot_main
        self._reload = reload
        self._status_path = status_path
        self._close_in_children = list(close_in_children)
        self._context = platform.fork_context()
        self._signals = platform.SignalQueue()
        self._notifier = Notifier()
        self.slots: dict[int, SlotProcess] = {}
        self._respawn_at: dict[int, float] = {}
        self._boot_failures: dict[int, int] = {}
        self._crashes: dict[int, int] = {}
        self._failed: dict[int, str] = {}        # slots given up on, with the reason
        self._restart: RollingRestart | None = None
        self._restarts_done = 0
        self._restarts_failed = 0
        self._restart_error: str | None = None
        self._stopping: str | None = None
        self._kill_at = 0.0
        self._escalated_to_kill = False
        self._was_ready = False
        self._last_watchdog = 0.0
        self._published = ''
        self._main_pid = os.getpid()
        self.exit_code = EX_OK
        self.fatal_message: str | None = None

    def run(self) -> int:
        """Loop until every slot has stopped; returns the exit code."""
        self._main_pid = os.getpid()
        platform.become_subreaper()
        wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._close_in_children += [wakeup_r, wakeup_w]
        signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
        self._signals.install(SIGNALS)
        log.info('main process of %s started with %d slot(s)', self.name, self.workers)
        try:
            while not (self._stopping and not self.slots):
                self._handle_signals()
                self._reap()
                self._advance_restart()
                self._spawn_missing()
                self._check_liveness()
                self._escalate_stop()
                self._publish()
                self._sleep(wakeup_r)
        finally:
            self._kill_adopted(lambda pid: True)
            self._notifier.notify(status='stopped')
            if self._status_path:
                self._status_path.unlink(missing_ok=True)
        log.info('main process of %s stopped', self.name)
        return self.exit_code

    # -- sleeping and signals ---------------------------------------------

    def _sleep(self, wakeup_fd: int) -> None:
        readers = {slot.reader.fd: slot for slot in self.slots.values()}
        try:
            ready, _, _ = select.select([wakeup_fd, *readers], [], [], TICK)
        except InterruptedError:
            ready = []
        for fd in ready:
            if fd == wakeup_fd:
                _drain(wakeup_fd)
            else:
                self._read_reports(readers[fd])

    def _handle_signals(self) -> None:
        while (event := self._signals.get(timeout=0)) is not None:
            handler = getattr(self, f'_on_{event}', None)
            if handler:
                handler()

    def _on_term(self) -> None:
        self.stop('warm')

    def _on_int(self) -> None:
        self.stop('cold' if self._stopping else 'warm')

    def _on_quit(self) -> None:
        self.stop('cold')

    def _on_usr1(self) -> None:
        platform.dump_stacks('main')
        self._signal_all(signal.SIGUSR1)

    def _on_hup(self) -> None:
        if self._stopping or self._restart:
            return
        self._notifier.reloading()
        if self._reload is not None:
            try:
                self._slot_main = self._reload()
            except RunnerError as exc:
                self._restart_failed(f'rolling restart refused, slots keep running: {exc}')
                return
        self._failed.clear()          # slots that could not start get another chance
        self._restart = RollingRestart(range(self.workers))
        log.info('rolling restart: %s', self._restart.describe())

    def _restart_failed(self, message: str) -> None:
        log.error('%s', message)
        self._restart = None
        self._restarts_failed += 1
        self._restart_error = message
        self._notifier.notify(ready='1')

    def _on_ttin(self) -> None:
        if not self._stopping:
            self.workers += 1
            log.info('scaling up to %d slots', self.workers)

    def _on_ttou(self) -> None:
        if self._stopping or self.workers <= 1:
            return
        self.workers -= 1
        log.info('scaling down to %d slots', self.workers)
        self._retire(self.workers)

    # -- slots ------------------------------------------------------------

    def _spawn_missing(self) -> None:
        if self._stopping:
            return
        now = time.monotonic()
        held = self._restart.held if self._restart else set()
        for index in range(self.workers):
            if (index not in self.slots and index not in held and index not in self._failed
                    and now >= self._respawn_at.get(index, 0.0)):
                self._spawn(index)

    def _spawn(self, index: int) -> None:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        close = [read_fd, *self._close_in_children,
                 *(slot.reader.fd for slot in self.slots.values())]
        process = self._context.Process(target=self._run_slot, args=(index, write_fd, close),
                                        name=f'slot-{index}')
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            os.close(write_fd)
        self.slots[index] = SlotProcess(index, process, ReportReader(read_fd))
        log.info('slot %d started (pid %d)', index, process.pid)

    def _run_slot(self, index: int, report_fd: int, close: list[int]) -> None:
        """The child side of the fork: shed the parent's state, then run the slot."""
        for fd in close:
            try:
                os.close(fd)
            except OSError:
                pass
        signal.set_wakeup_fd(-1)
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGTTIN,
                       signal.SIGTTOU):
            signal.signal(signum, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        os._exit(self._slot_main(index, report_fd, self._main_pid))

    def _read_reports(self, slot: SlotProcess) -> None:
        for report in slot.reader.read():
            if 'error' in report:
                slot.error = report
            else:
                slot.report = report
                slot.reported_at = time.monotonic()
                if report.get('phase') == 'running' and not slot.ran:
                    slot.ran = True
                    self._boot_failures.pop(slot.index, None)

    def _retire(self, index: int) -> None:
        slot = self.slots.get(index)
        if slot and not slot.retiring:
            slot.retiring = True
            platform.kill_quietly(slot.pid, signal.SIGTERM)

    def _reap(self) -> None:
        for slot in list(self.slots.values()):
            code = slot.process.exitcode
            if code is not None:
                self._read_reports(slot)
                self._slot_exited(slot, code)
        self._reap_orphans()

    def _slot_exited(self, slot: SlotProcess, code: int) -> None:
        del self.slots[slot.index]
        slot.reader.close()
        platform.kill_group(slot.pid)
        self._kill_adopted(lambda owner: owner == slot.pid)
        how = f'was killed by signal {-code}' if code < 0 else f'exited with code {code}'
        if self._stopping or slot.retiring:
            log.info('slot %d (pid %d) %s', slot.index, slot.pid, how)
            return
        reason = slot.error['error'] if slot.error else how
        if slot.ran and code not in FATAL_CODES:
            self._schedule_respawn(slot, reason)
            return
        failures = self._boot_failures[slot.index] = self._boot_failures.get(slot.index, 0) + 1
        hopeless = code in FATAL_CODES or failures >= MAX_BOOT_FAILURES
        if not self._was_ready:
            self._fail(code if code > 0 else EX_SOFTWARE,
                       f'slot {slot.index} could not start: {reason}')
        elif hopeless:
            self._give_up_on(slot.index, f'could not start: {reason} ({failures} attempt(s))')
        else:
            self._schedule_respawn(slot, reason)

    def _give_up_on(self, index: int, reason: str) -> None:
        """Leave a slot that cannot start stopped; the others keep running."""
        self._failed[index] = reason
        log.error('slot %d %s; leaving it stopped until the next HUP', index, reason)
        if self._restart:
            self._restart_failed(f'rolling restart stopped: slot {index} {reason}')
        if not self.slots:
            self._fail(EX_SOFTWARE, f'no slot is running: slot {index} {reason}')

    def _schedule_respawn(self, slot: SlotProcess, reason: str) -> None:
        """Restart with exponential backoff; a slot that ran a while starts afresh."""
        now = time.monotonic()
        if now - slot.started > STABLE_AFTER:
            self._crashes.pop(slot.index, None)
        crashes = self._crashes[slot.index] = self._crashes.get(slot.index, 0) + 1
        delay = min(BACKOFF_CAP, 2.0 ** (crashes - 1))
        self._respawn_at[slot.index] = now + delay
        log.error('slot %d (pid %d): %s; restarting it in %.0fs', slot.index, slot.pid, reason,
                  delay)

    def _fail(self, code: int, message: str) -> None:
        """Stop everything; the caller reports ``message`` (once, on stderr and in the log)."""
        if self.fatal_message is None:
            self.fatal_message, self.exit_code = message, code
        self.stop('cold')

    def _reap_orphans(self) -> None:
        """Reap adopted orphans; slots are reaped through their Process objects."""
        slot_pids = {slot.pid for slot in self.slots.values()}
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid in slot_pids:
                return
            try:
                os.waitpid(info.si_pid, 0)
            except ChildProcessError:
                return

    def _kill_adopted(self, owned: Callable[[int | None], bool]) -> None:
        """KILL adopted orphans (descendants of slots) whose owning slot matches ``owned``."""
        slot_pids = {slot.pid for slot in self.slots.values()}
        for pid in platform.adopted_children(os.getpid()):
            if pid in slot_pids:
                continue
            owner = platform.slot_of(pid)
            if owner not in slot_pids and owned(owner):
                log.info('killing pid %d left behind by slot pid %s', pid, owner)
                platform.kill_quietly(pid)

    def _check_liveness(self) -> None:
        now = time.monotonic()
        for slot in self.slots.values():
            if slot.report.get('phase') != 'running' or slot.retiring or self._stopping:
                continue
            if slot.report.get('live') is False or now - slot.reported_at > STALE_REPORT:
                reason = slot.report.get('reason') if slot.report.get('live') is False \
                    else f'no report for {now - slot.reported_at:.0f}s'
                log.error('slot %d (pid %d) is not alive (%s); killing it', slot.index,
                          slot.pid, reason)
                slot.report = {**slot.report, 'live': None}
                platform.kill_quietly(slot.pid)

    # -- rolling restart --------------------------------------------------

    def _advance_restart(self) -> None:
        if not self._restart or self._stopping:
            return
        ready = {index for index, slot in self.slots.items() if slot.ready}
        if self._restart.advance(set(self.slots), ready, self.workers, self._retire):
            self._restart = None
            self._restarts_done += 1
            log.info('rolling restart done')
            self._notifier.notify(ready='1')

    # -- stopping ---------------------------------------------------------

    def stop(self, mode: str) -> None:
        """``warm``: slots finish what they hold; ``cold``: they stop at once."""
        if self._stopping == 'cold' or self._stopping == mode:
            return
        self._stopping = mode
        self._restart = None
        self._notifier.notify(stopping='1')
        log.info('%s shutdown of %d slot(s)', mode, len(self.slots))
        self._signal_all(signal.SIGTERM if mode == 'warm' else signal.SIGQUIT)
        grace = max([slot.report.get('graceful_timeout', 30.0) for slot in self.slots.values()],
                    default=30.0)
        self._kill_at = time.monotonic() + (grace if mode == 'warm' else 0) + ESCALATION_GRACE

    def _escalate_stop(self) -> None:
        if not self._stopping or not self.slots or time.monotonic() < self._kill_at:
            return
        if self._stopping == 'warm':
            log.warning('slots did not stop within the graceful timeout; stopping them cold')
            self.stop('cold')
        elif not self._escalated_to_kill:
            log.error('slots did not stop; killing them')
            self._escalated_to_kill = True
            self._signal_all(signal.SIGKILL)

    def _signal_all(self, signum: signal.Signals) -> None:
        for slot in self.slots.values():
            platform.kill_quietly(slot.pid, signum)

    # -- publishing -------------------------------------------------------

    def _publish(self) -> None:
        """Tell systemd and the status file (read by ``runner status``) what changed."""
        slots = [self.slots[i].summary() for i in sorted(self.slots)]
        slots += [{'slot': i, 'pid': None, 'web': None, 'state': 'failed', 'ready': False,
                   'assignment': [], 'reason': reason} for i, reason in self._failed.items()]
        slots.sort(key=lambda slot: slot['slot'])
        ready = sum(slot['ready'] for slot in slots)
        if ready >= self.workers and not self._was_ready:
            self._was_ready = True
            self._notifier.notify(ready='1')
            log.info('all %d slot(s) ready', self.workers)
        self._ping_watchdog()
        status = {'pid': os.getpid(), 'app': self.name, 'workers': self.workers,
                  'state': self._state(ready), 'rolling_restarts': self._restarts_done,
                  'failed_restarts': self._restarts_failed, 'restart_error': self._restart_error,
                  'slots': slots}
        text = json.dumps(status, sort_keys=True)
        if text != self._published:
            self._published = text
            self._notifier.notify(status=f'{ready}/{self.workers} slots ready, {status["state"]}')
            if self._status_path:
                _write_atomically(self._status_path, text)

    def _state(self, ready: int) -> str:
        if self._stopping:
            return 'stopping'
        if self._restart:
            return 'restarting'
        if self._failed:
            return 'degraded'
        return 'running' if ready >= self.workers else 'starting'

    def _ping_watchdog(self) -> None:
        interval = self._notifier.watchdog_interval
        now = time.monotonic()
        if interval is None or now - self._last_watchdog < interval:
            return
        fresh = all(not slot.ran or (now - slot.reported_at < FRESH_REPORT
                                     and slot.report.get('live') is not False)
                    for slot in self.slots.values())
        if fresh:
            self._last_watchdog = now
            self._notifier.notify(watchdog='1')


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + '.tmp')
    temporary.write_text(text)
    os.replace(temporary, path)
