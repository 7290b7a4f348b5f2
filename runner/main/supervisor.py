"""The main process: forks one slot per configured worker and looks after them.

Like gunicorn's arbiter it is one small loop: sleep until a signal, a slot report
or the end of the app check arrives, handle queued signals, reap, advance the
rolling restart, respawn, check liveness, publish.  No step blocks: the app check
of a rolling restart runs in a child whose exit is one more thing the loop waits
on.  The main process holds no thread, Kafka client or LevelDB handle, and never
imports the app: each slot imports it after the fork, so a restarted slot runs
new code.
"""

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import platform
from ..config import default_workers_max
from ..errors import (
    EX_CANTCREAT,
    EX_CONFIG,
    EX_IOERR,
    EX_NOPERM,
    EX_OK,
    EX_SOFTWARE,
    EX_UNAVAILABLE,
    EX_USAGE,
    ResourceBusy,
)
from ..logs import plural
from ..reports import LAST_EXIT_ENV, RESTARTS_ENV, ReportReader, channel
from .listeners import Listeners
from .publisher import StatusPublisher, Summary
from .rolling import Reload, RollingRestarts
from .slots import ESCALATION_GRACE, Deploy, SlotProcess, SlotRecord, how

log = logging.getLogger(__name__)

SIGNALS = {signal.SIGTERM: 'term', signal.SIGINT: 'int', signal.SIGQUIT: 'quit',
           signal.SIGUSR1: 'usr1', signal.SIGHUP: 'hup', signal.SIGTTIN: 'ttin',
           signal.SIGTTOU: 'ttou', signal.SIGCHLD: 'chld'}
#: Signals a slot ignores: the main process handles them for it.
SLOT_IGNORES = (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN,
                signal.SIGTTOU)
#: Exit codes of a slot that no restart can fix: bad usage, busy directory or port, refused
#: credentials, bad app.
FATAL_CODES = {EX_USAGE, EX_CANTCREAT, EX_NOPERM, EX_CONFIG}
#: A slot that dies this many times in a row before it runs is given up on.
MAX_BOOT_FAILURES = 5
BACKOFF_CAP = 30.0
#: A slot that ran this long before dying is restarted without backoff.
STABLE_AFTER = 60.0
TICK = 0.5


class Supervisor:
    """Keeps ``workers`` slots running until a signal says otherwise.

    It is the arbiter: it forks, reaps and respawns slots and checks that they
    live.  Rolling restarts (HUP, ``runner restart``) are :attr:`restarts`, a
    :class:`~runner.main.rolling.RollingRestarts` given ``reload`` and
    ``check_timeout``, which is also the time a slot has to load the app; the
    status is published by :attr:`publisher`.  ``ready_timeout``: once no slot has
    been ready for this long, systemd's watchdog is no longer pinged.
    """

    def __init__(self, name: str, workers: int, deploy: Deploy,
                 reload: Callable[[], Reload], check_timeout: float, ready_timeout: float,
                 status_path: Path | None = None, close_in_children: tuple[int, ...] = (),
                 workers_max: int | None = None, targets_path: Path | None = None) -> None:
        self.name = name
        self.workers = workers
        #: The most slots TTIN may bring the worker to (``--workers-max``).
        self.workers_max = default_workers_max() if workers_max is None else workers_max
        self._deploy = deploy
        self._listeners = Listeners()
        self._import_timeout = check_timeout
        self._close_in_children = list(close_in_children)
        self._context = platform.fork_context()
        self._signals = platform.SignalQueue()
        self.publisher = StatusPublisher(name, status_path, ready_timeout, targets_path)
        self.slots: dict[int, SlotProcess] = {}
        self._records: dict[int, SlotRecord] = {}
        self.restarts = RollingRestarts(self, reload, check_timeout)
        self._stopping: str | None = None
        self._kill_at = 0.0
        self._escalated_to_kill = False
        self._leftovers: set[int] = set()
        self._main_pid = os.getpid()
        self.exit_code = EX_OK
        self.fatal_message: str | None = None

    def run(self) -> int:
        """Loop until every slot has stopped; returns the exit code."""
        self._main_pid = os.getpid()
        self.publisher.started()
        platform.become_subreaper()
        wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._close_in_children += [wakeup_r, wakeup_w]
        self._signals.install(SIGNALS, wakeup_w)     # every signal counted
        log.info('main process of %s started with %s', self.name, plural(self.workers, 'slot'))
        try:
            while not (self._stopping and not self._processes()):
                self._handle_signals()
                self._reap()
                self._advance_restart()
                self._spawn_missing()
                self._check_liveness()
                self._escalate_stop()
                self._publish()
                self._sleep(wakeup_r)
        finally:
            self.restarts.cancel_check()
            self._kill_leftovers()
            self._listeners.close_all()
            self.publisher.stopped()
        log.info('main process of %s stopped', self.name)
        return self.exit_code

    # -- sleeping and signals ---------------------------------------------

    def _sleep(self, wakeup_fd: int) -> None:
        readers = {slot.reader.fd: slot for slot in self._processes() if not slot.reader.closed}
        check = self.restarts.check
        check_fds = [check.call.fd] if check else []
        try:
            ready, _, _ = select.select([wakeup_fd, *readers, *check_fds], [], [], TICK)
        except InterruptedError:
            ready = []
        for fd in ready:
            if fd == wakeup_fd:
                self._signals.feed(_drain(wakeup_fd))
            elif fd in readers:
                self._read_reports(readers[fd])
            else:
                self.restarts.finish_check()

    def _handle_signals(self) -> None:
        while (event := self._signals.get(timeout=0)) is not None:
            getattr(self, f'_on_{event}')()

    def _on_term(self) -> None:
        self._stop_on_signal('TERM', 'warm')

    def _on_int(self) -> None:
        self._stop_on_signal('INT', 'cold' if self._stopping else 'warm')

    def _on_quit(self) -> None:
        self._stop_on_signal('QUIT', 'cold')

    def _stop_on_signal(self, name: str, mode: str) -> None:
        if self._stopping == 'cold' or self._stopping == mode:
            _ignored(name, f'a {self._stopping} stop is under way')
        else:
            self.stop(mode)

    def _on_usr1(self) -> None:
        platform.dump_stacks('main')
        self._signal_all(signal.SIGUSR1)

    def _on_hup(self) -> None:
        if self._stopping:
            _ignored('HUP', 'the worker is stopping')
            return
        self.restarts.request()

    def _on_ttin(self) -> None:
        if self._stopping:
            _ignored('TTIN', 'the worker is stopping')
            return
        if self.workers >= self.workers_max:
            _ignored('TTIN', f'a worker has at most {self.workers_max} slots (--workers-max)')
            return
        self.workers += 1
        log.info('scaling up to %s', plural(self.workers, 'slot'))

    def _on_ttou(self) -> None:
        if self._stopping:
            _ignored('TTOU', 'the worker is stopping')
        elif self.workers <= 1:
            _ignored('TTOU', 'a worker keeps at least one slot')
        else:
            self.workers -= 1
            log.info('scaling down to %s', plural(self.workers, 'slot'))
            self._retire(self.workers)
            self._records.pop(self.workers, None)

    def _on_chld(self) -> None:
        self._kill_leftovers()

    # -- slots ------------------------------------------------------------

    def _record(self, index: int) -> SlotRecord:
        return self._records.setdefault(index, SlotRecord())

    def _spawn_missing(self) -> None:
        """Start the slots that are not running, once their backoff is over.  A slot waits
        for a dismissed successor of its index to exit: one that got its stop just after
        its last look for one holds the slot's data directory until then."""
        if self._stopping:
            return
        now = time.monotonic()
        exiting = {successor.index for successor in self.restarts.dismissed}
        for index in range(self.workers):
            record = self._record(index)
            if (index not in self.slots and index not in exiting and not record.failed
                    and now >= record.retry_at):
                self._spawn(index)

    def _spawn(self, index: int) -> None:
        """Fork slot ``index``; if no process can be made (no memory, too many processes),
        that is said in one line, and the slot is started again after its backoff."""
        try:
            self.slots[index] = slot = self.fork_slot(index)
        except OSError as exc:
            record = self._record(index)
            record.exit_code, record.reason = None, f'cannot fork it: {exc.strerror or exc}'
            self._back_off(index, f'slot {index}', record.reason)
            return
        except ResourceBusy as exc:
            self._cannot_listen(index, exc)
            return
        log.info('slot %d started (pid %d)', index, slot.pid)

    def _cannot_listen(self, index: int, exc: ResourceBusy) -> None:
        """Slot ``index``'s web port cannot be listened on: as if it exited with 73."""
        record = self._record(index)
        record.exit_code, record.reason = exc.exit_code, str(exc)
        if not self.publisher.was_ready:
            self._fail(exc.exit_code, f'slot {index} could not start: {exc}')
        else:
            self._give_up_on(index, f'could not start: {exc}')

    def fork_slot(self, index: int, successor: bool = False) -> SlotProcess:
        """Start the process of slot ``index`` (or of its successor, in a rolling restart),
        serving the listening socket of its web address (bound now if the slot has none
        there yet); OSError if no process can be made, ResourceBusy if the socket cannot
        be bound."""
        listener, web_fd = self._listeners.acquire(index, self._deploy.web_address(index))
        try:
            slot = self._fork(index, successor, web_fd)
        except OSError:
            self._listeners.release(listener)
            raise
        slot.listener = listener
        return slot

    def _fork(self, index: int, successor: bool, web_fd: int) -> SlotProcess:
        main_end, slot_end = channel()
        try:
            close = [fd for fd in (main_end.fileno(), *self.fds_to_close()) if fd != web_fd]
            process = self._context.Process(target=self._run_slot,
                                            args=(index, slot_end.fileno(), close, successor,
                                                  web_fd),
                                            name=f'slot-{index}')
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
            try:
                process.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        except OSError:
            main_end.close()
            raise
        finally:
            slot_end.close()
        reader = ReportReader(main_end, f'slot {index} (pid {process.pid})')
        return SlotProcess(index, process, reader, self._import_timeout)

    def fds_to_close(self) -> list[int]:
        """What a forked child must not keep: the pidfile lock, the wakeup pipe, the
        report sockets of the slots, their listening sockets."""
        return [*self._close_in_children, *(slot.reader.fd for slot in self._processes()),
                *self._listeners.fds()]

    def _processes(self) -> list[SlotProcess]:
        """Every slot process: the slots, their successors in a rolling restart, and the
        successors dismissed that have not exited yet."""
        return [*self.slots.values(), *self.restarts.processes()]

    def _slot_environment(self, index: int) -> dict[str, str]:
        """What a new slot ``index`` is told in its environment (see :mod:`runner.reports`)."""
        record = self._record(index)
        environment = {RESTARTS_ENV: str(record.restarts)}
        if record.exit_code is not None:
            environment[LAST_EXIT_ENV] = str(record.exit_code)
        return environment

    def _run_slot(self, index: int, report_fd: int, close: list[int], successor: bool,
                  web_fd: int) -> None:
        """The child side of the fork: shed the parent's state, then run the slot."""
        os.environ.update(self._slot_environment(index))
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        platform.reset_signals(ignore=SLOT_IGNORES)
        os._exit(self._deploy.slot_main(index, report_fd, self._main_pid, successor, web_fd))

    def _read_reports(self, slot: SlotProcess) -> None:
        for report in slot.reader.read():
            if 'error' in report:
                slot.error = report
                continue
            if report.get('loaded'):
                slot.loaded = True
                continue
            slot.report = report
            slot.reported_at = time.monotonic()
            if report['phase'] == 'running' and not slot.ran:
                slot.ran = True
                self._record(slot.index).boot_failures = 0
            if report['ready'] and not slot.was_ready:
                slot.was_ready = True
                record = self._record(slot.index)
                record.exit_code = record.reason = None

    def _retire(self, index: int) -> None:
        """Stop one slot warm for good (TTOU): TERM, so it leaves the group, even if it was
        handing over; KILL it if it does not stop.  Its successor, if any, is dismissed."""
        slot = self.slots.get(index)
        if slot and (not slot.retiring or slot.handing_over):
            slot.handing_over = False
            slot.stop(signal.SIGTERM)
        self.restarts.slot_removed(index)

    def deploy(self, deploy: Deploy) -> None:
        """Slots started from now on run ``deploy`` (a rolling restart's app check
        passed); slots that could not start get another chance."""
        self._deploy = deploy
        for record in self._records.values():
            record.failed = False

    def _reap(self) -> None:
        for slot in self._processes():
            code = slot.process.exitcode
            if code is None:
                continue
            self._read_reports(slot)
            self._forget(slot)
            if not self.restarts.successor_exited(slot, code):
                self._slot_exited(slot, code)

    def _forget(self, slot: SlotProcess) -> None:
        slot.reader.close()
        self._listeners.release(slot.listener)
        platform.kill_group(slot.pid)
        self._kill_leftovers()

    def _slot_exited(self, slot: SlotProcess, code: int) -> None:
        """A slot exited: its successor takes over, or it is restarted or given up on."""
        del self.slots[slot.index]
        successor = self.restarts.slot_exited(slot, code)
        if successor:
            self.slots[slot.index] = successor
        elif self._stopping or slot.retiring:
            log.info('slot %d (pid %d) %s', slot.index, slot.pid, how(code))
        else:
            self._slot_failed(slot, code)

    def _slot_failed(self, slot: SlotProcess, code: int) -> None:
        """A slot exited unasked: restart it after a backoff, give up on it, or stop the
        worker if it never started."""
        reason = self._exit_reason(slot, code)
        record = self._record(slot.index)
        record.exit_code, record.reason = code, reason
        if slot.ran and code not in FATAL_CODES:
            self._schedule_respawn(slot, reason)
        elif slot.ran:                  # it ran, and stopped for a reason no restart fixes
            self._give_up_on(slot.index, f'stopped: {reason}')
        else:
            self._boot_failed(slot, code, reason)

    @staticmethod
    def _exit_reason(slot: SlotProcess, code: int) -> str:
        if slot.killed:
            return slot.killed
        if slot.report.get('live') is False:
            return f'{how(code)}: {slot.report["reason"]}'
        return slot.error['error'] if slot.error else how(code)

    def _boot_failed(self, slot: SlotProcess, code: int, reason: str) -> None:
        """A slot exited before it ran."""
        record = self._record(slot.index)
        record.boot_failures += 1
        if not self.publisher.was_ready and code > 0:    # a broken start (killed: tried again)
            self._fail(code, f'slot {slot.index} could not start: {reason}')
        elif code in (EX_UNAVAILABLE, EX_IOERR):
            self._schedule_respawn(slot, reason)    # Kafka is away, or the disk is full:
                                                    # this worker has run, so it waits
        elif code in FATAL_CODES or record.boot_failures >= MAX_BOOT_FAILURES:
            attempts = plural(record.boot_failures, 'attempt')
            self._give_up_on(slot.index, f'could not start: {reason} ({attempts})')
        else:
            self._schedule_respawn(slot, reason)

    def _give_up_on(self, index: int, reason: str) -> None:
        """Leave a slot that cannot start stopped; the others keep running."""
        record = self._record(index)
        record.failed, record.reason = True, reason
        log.error('slot %d %s; leaving it stopped until the next HUP', index, reason)
        self.restarts.slot_given_up(index, reason)
        if not self.slots:
            self._fail(EX_SOFTWARE, f'no slot is running: slot {index} {reason}')

    def _schedule_respawn(self, slot: SlotProcess, reason: str) -> None:
        """Restart with exponential backoff; a slot that ran a while starts afresh."""
        record = self._record(slot.index)
        if time.monotonic() - slot.started > STABLE_AFTER:
            record.crashes = 0
        record.restarts += 1
        self._back_off(slot.index, f'slot {slot.index} (pid {slot.pid})', reason)

    def _back_off(self, index: int, who: str, reason: str) -> None:
        """Start slot ``index`` again after a backoff that doubles with each crash in a row."""
        record = self._record(index)
        now = time.monotonic()
        record.crashes += 1
        delay = min(BACKOFF_CAP, 2.0 ** (record.crashes - 1))
        record.retry_at, record.retry_at_wall = now + delay, time.time() + delay
        log.error('%s: %s; restarting it in %.0fs', who, reason, delay)
        if record.crashes >= MAX_BOOT_FAILURES:
            self.restarts.slot_keeps_crashing(index, reason)

    def _fail(self, code: int, message: str) -> None:
        """Stop everything; the caller reports ``message`` (once, on stderr and in the log)."""
        if self.fatal_message is None:
            self.fatal_message, self.exit_code = message, code
        self.stop('cold')

    def _kill_leftovers(self) -> None:
        """Kill, and reap once exited, every child that is neither a slot nor the app check.

        Slots are subreapers, so such a child is something a slot (or the check) left
        behind when it exited: see the fork rules in :mod:`runner.platform`.
        """
        own = {slot.pid for slot in self._processes()}
        if self.restarts.check:
            own.add(self.restarts.check.call.pid)
        found = platform.children(self._main_pid)
        for pid, (state, _, _) in found.items():
            if pid in own:
                continue
            if state == 'Z':
                platform.reap(pid)
            elif pid not in self._leftovers:
                log.info('killing pid %d, left behind by a slot', pid)
                self._leftovers.add(pid)
                platform.kill_quietly(pid)
        self._leftovers &= set(found)

    def _check_liveness(self) -> None:
        """Kill, once, a running slot whose heartbeat (its reports) stopped for longer than
        its ``heartbeat_timeout`` or that reports itself not live, and a retiring slot or
        dismissed successor that did not stop within its graceful timeout.  Reports that
        arrived while this loop was busy elsewhere are read first, so a slow loop never
        looks like silent slots."""
        now = time.monotonic()
        self._kill_unloaded(now)
        for slot in [*self.slots.values(), *self.restarts.dismissed]:
            if self._stopping or slot.killed:
                continue
            self._read_reports(slot)
            if slot.retiring:
                if now < slot.stop_by:
                    continue
                slot.killed = 'did not stop within its graceful timeout'
            elif slot.report['phase'] != 'running':
                continue
            elif now - slot.reported_at > slot.report['heartbeat_timeout']:
                slot.killed = f'no heartbeat for {now - slot.reported_at:.1f}s'
            elif not slot.report['live']:
                slot.killed = f'not live: {slot.report["reason"]}'
            else:
                continue
            log.error('slot %d (pid %d) %s; killing it', slot.index, slot.pid, slot.killed)
            platform.kill_quietly(slot.pid)

    def _kill_unloaded(self, now: float) -> None:
        """Kill, once, a slot or successor that has not loaded the app within the import
        timeout (its import hangs): it is restarted, or its rolling restart stops."""
        for slot in [*self.slots.values(), *self.restarts.successors.values()]:
            if self._stopping or slot.killed or slot.retiring:
                continue
            self._read_reports(slot)
            if not slot.loaded and now - slot.started > slot.import_timeout:
                slot.killed = (f'did not load the app within {slot.import_timeout:g}s '
                               '(import_timeout)')
                log.error('slot %d (pid %d) %s; killing it', slot.index, slot.pid, slot.killed)
                platform.kill_quietly(slot.pid)

    def _advance_restart(self) -> None:
        if not self._stopping:
            self.restarts.advance()

    # -- stopping ---------------------------------------------------------

    def stop(self, mode: str) -> None:
        """``warm``: slots finish what they hold; ``cold``: they stop at once."""
        if self._stopping == 'cold' or self._stopping == mode:
            return
        self._stopping = mode
        self.restarts.stop()
        self.publisher.stopping()
        log.info('%s shutdown of %s', mode, plural(len(self.slots), 'slot'))
        self._signal_all(signal.SIGTERM if mode == 'warm' else signal.SIGQUIT)
        grace = max([slot.report.get('graceful_timeout', 30.0) for slot in self.slots.values()],
                    default=30.0)
        self._kill_at = time.monotonic() + (grace if mode == 'warm' else 0) + ESCALATION_GRACE

    def _escalate_stop(self) -> None:
        if not self._stopping or not self._processes() or time.monotonic() < self._kill_at:
            return
        if self._stopping == 'warm':
            log.warning('slots did not stop within the graceful timeout; stopping them cold')
            self.stop('cold')
        elif not self._escalated_to_kill:
            log.error('slots did not stop; killing them')
            self._escalated_to_kill = True
            self._signal_all(signal.SIGKILL)

    def _signal_all(self, signum: signal.Signals) -> None:
        for slot in self._processes():
            platform.kill_quietly(slot.pid, signum)

    # -- publishing -------------------------------------------------------

    def _publish(self) -> None:
        """Hand this round's summary of the slots to the publisher."""
        troubled = any(record.failed or record.reason is not None
                       for index, record in self._records.items() if index < self.workers)
        self.publisher.publish(Summary(
            main_pid=self._main_pid, workers=self.workers, rows=self._rows(),
            stopping=self._stopping, restarting=self.restarts.under_way,
            slot_trouble=troubled, restarts=self.restarts.counts()))

    def _rows(self) -> list[dict[str, Any]]:
        """One status row per slot number, running or not."""
        rows = []
        for index in range(max([self.workers, *(i + 1 for i in self.slots)])):
            if index in self.slots:
                rows.append(self.slots[index].row())
            else:
                rows.append(self._record(index).row(index, bool(self._stopping)))
        return rows

def _ignored(name: str, why: str) -> None:
    log.warning('%s ignored: %s', name, why)


def _drain(fd: int) -> bytes:
    """Everything a non-blocking pipe holds."""
    read = bytearray()
    try:
        while chunk := os.read(fd, 512):
            read += chunk
    except BlockingIOError:
        pass
    return bytes(read)


