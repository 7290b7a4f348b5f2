"""The main process: forks one slot per configured worker and looks after them.

Like gunicorn's arbiter it is one small loop: sleep until a signal, a slot report
or the end of the app check arrives, handle queued signals, reap, advance the
rolling restart, respawn, check liveness, publish.  No step blocks: the app check
of a rolling restart runs in a child whose exit is one more thing the loop waits
on.  The main process holds no thread, Kafka client or LevelDB handle, and never
imports the app: each slot imports it after the fork, so a restarted slot runs
new code.
"""

import dataclasses
import logging
import multiprocessing
import os
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

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
    CannotFork,
    RunnerError,
)
from ..logs import plural
from ..reports import LAST_EXIT_ENV, RESTARTS_ENV, ReportReader, channel
from .publisher import StatusPublisher, Summary
from .rolling import RollingRestart

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
#: Wait this long after the graceful timeout (cold), then after a cold stop (KILL).
ESCALATION_GRACE = 5.0
TICK = 0.5

#: ``slot_main(index, report_fd, main_pid, successor)`` runs a slot in the forked child;
#: a successor prepares, then waits for the data directory of the slot it replaces.
SlotMain = Callable[[int, int, int, bool], int]


class Reload(NamedTuple):
    """What a rolling restart needs, from the configuration as it is now."""

    #: Run in a throwaway child: returns if the app, as deployed now, loads.
    check: Callable[[], Any]
    #: The entry point of the restarted slots.
    slot_main: SlotMain


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


class PendingCheck(NamedTuple):
    """The app check of a rolling restart, running in a child."""

    call: platform.ChildCall
    slot_main: SlotMain


class Supervisor:
    """Keeps ``workers`` slots running until a signal says otherwise.

    ``reload()`` is called on HUP: it re-reads the configuration (raising
    RunnerError if it is bad) and returns a :class:`Reload`.  Its check runs in a
    child for at most ``check_timeout`` seconds; if it fails, the slots keep
    running as they are.  ``ready_timeout``: once no slot has been ready for this
    long, systemd's watchdog is no longer pinged.
    """

    def __init__(self, name: str, workers: int, slot_main: SlotMain,
                 reload: Callable[[], Reload], check_timeout: float, ready_timeout: float,
                 status_path: Path | None = None, close_in_children: tuple[int, ...] = (),
                 workers_max: int | None = None, targets_path: Path | None = None) -> None:
        self.name = name
        self.workers = workers
        #: The most slots TTIN may bring the worker to (``--workers-max``).
        self.workers_max = default_workers_max() if workers_max is None else workers_max
        self._slot_main = slot_main
        self._reload = reload
        self._check_timeout = check_timeout
        self._close_in_children = list(close_in_children)
        self._context = platform.fork_context()
        self._signals = platform.SignalQueue()
        self.publisher = StatusPublisher(name, status_path, ready_timeout, targets_path)
        self.slots: dict[int, SlotProcess] = {}
        #: Slots started to replace a running one in a rolling restart, by index.
        self.successors: dict[int, SlotProcess] = {}
        #: Successors told to stop before taking over, until they have exited.
        self._dismissed: list[SlotProcess] = []
        self._records: dict[int, SlotRecord] = {}
        self._check: PendingCheck | None = None
        self._restart: RollingRestart | None = None
        self._restart_requests = 0      # HUPs taken
        self._requests_serving = 0      # HUPs covered by the restart under way
        self._requests_served = 0       # HUPs covered by the last finished restart
        self._restarts_done = 0
        self._restarts_failed = 0
        self._restart_error: str | None = None
        self._successor_failure: str | None = None  # a successor could not be forked
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
            self._cancel_check()
            self._kill_leftovers()
            self.publisher.stopped()
        log.info('main process of %s stopped', self.name)
        return self.exit_code

    # -- sleeping and signals ---------------------------------------------

    def _sleep(self, wakeup_fd: int) -> None:
        readers = {slot.reader.fd: slot for slot in self._processes() if not slot.reader.closed}
        check = [self._check.call.fd] if self._check else []
        try:
            ready, _, _ = select.select([wakeup_fd, *readers, *check], [], [], TICK)
        except InterruptedError:
            ready = []
        for fd in ready:
            if fd == wakeup_fd:
                self._signals.feed(_drain(wakeup_fd))
            elif fd in readers:
                self._read_reports(readers[fd])
            else:
                self._finish_check()

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
        self._restart_requests += 1
        if self._check or self._restart:
            log.info('HUP during a rolling restart: another one follows when it has finished')

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
        exiting = {successor.index for successor in self._dismissed}
        for index in range(self.workers):
            record = self._record(index)
            if (index not in self.slots and index not in exiting and not record.failed
                    and now >= record.retry_at):
                self._spawn(index)

    def _spawn(self, index: int, successor: bool = False) -> bool:
        """Fork slot ``index`` (or its successor); False if no process could be made (no
        memory, too many processes): said in one line, and the slot is started again after
        its backoff (a successor's rolling restart stops instead)."""
        try:
            slot = self._fork(index, successor)
        except OSError as exc:
            why = exc.strerror or str(exc)
            if successor:
                self._successor_failure = (f'rolling restart stopped: slot {index}: cannot '
                                           f'fork its successor: {why}')
            else:
                record = self._record(index)
                record.exit_code, record.reason = None, f'cannot fork it: {why}'
                self._back_off(index, f'slot {index}', record.reason)
            return False
        if successor:
            self.successors[index] = slot
            log.info('slot %d: successor started (pid %d)', index, slot.pid)
        else:
            self.slots[index] = slot
            log.info('slot %d started (pid %d)', index, slot.pid)
        return True

    def _fork(self, index: int, successor: bool) -> SlotProcess:
        """Start the process of slot ``index``; OSError if it cannot be made."""
        main_end, slot_end = channel()
        try:
            close = [main_end.fileno(), *self._fds_to_close()]
            process = self._context.Process(target=self._run_slot,
                                            args=(index, slot_end.fileno(), close, successor),
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
        return SlotProcess(index, process, reader, self._check_timeout)

    def _fds_to_close(self) -> list[int]:
        """What a forked child must not keep: the pidfile lock, the wakeup pipe, the
        report sockets of the slots."""
        return [*self._close_in_children, *(slot.reader.fd for slot in self._processes())]

    def _processes(self) -> list[SlotProcess]:
        """Every slot process: the slots, their successors in a rolling restart, and the
        successors dismissed that have not exited yet."""
        return [*self.slots.values(), *self.successors.values(), *self._dismissed]

    def _slot_environment(self, index: int) -> dict[str, str]:
        """What a new slot ``index`` is told in its environment (see :mod:`runner.reports`)."""
        record = self._record(index)
        environment = {RESTARTS_ENV: str(record.restarts)}
        if record.exit_code is not None:
            environment[LAST_EXIT_ENV] = str(record.exit_code)
        return environment

    def _run_slot(self, index: int, report_fd: int, close: list[int], successor: bool) -> None:
        """The child side of the fork: shed the parent's state, then run the slot."""
        os.environ.update(self._slot_environment(index))
        for fd in close:
            try:
                os.close(fd)
            except OSError:
                pass
        platform.reset_signals(ignore=SLOT_IGNORES)
        os._exit(self._slot_main(index, report_fd, self._main_pid, successor))

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
            self._stop_slot(slot, signal.SIGTERM)
        if index in self.successors:
            self._dismiss(index, f'slot {index} is removed')

    def _hand_over(self, index: int) -> None:
        """Stop one slot warm for its successor (a rolling restart): USR2, so it stays in
        the group; the successor takes over once it has exited.  Only a slot told so lets
        its successor take over."""
        slot = self.slots.get(index)
        if slot and not slot.retiring:
            slot.handing_over = True
            self._stop_slot(slot, signal.SIGUSR2)

    def _stop_slot(self, slot: SlotProcess, signum: signal.Signals) -> None:
        """Send ``signum``; the slot is KILLed if still alive after its graceful timeout."""
        slot.retiring = True
        slot.stop_by = (time.monotonic() + slot.report.get('graceful_timeout', 30.0)
                        + ESCALATION_GRACE)
        platform.kill_quietly(slot.pid, signum)

    def _dismiss(self, index: int, why: str) -> None:
        """TERM the successor of slot ``index``, which has not taken over: it stops without
        taking over (KILLed if it does not), and the rolling restart no longer waits for it."""
        successor = self.successors.pop(index)
        self._dismissed.append(successor)
        log.info('slot %d: stopping its successor (pid %d): %s', index, successor.pid, why)
        self._stop_slot(successor, signal.SIGTERM)
        if self._restart:
            self._restart.forget(index)

    def _reap(self) -> None:
        for slot in self._processes():
            code = slot.process.exitcode
            if code is None:
                continue
            self._read_reports(slot)
            if slot in self._dismissed:
                self._dismissed_exited(slot, code)
            elif self.successors.get(slot.index) is slot:
                self._successor_exited(slot, code)
            else:
                self._slot_exited(slot, code)

    def _dismissed_exited(self, slot: SlotProcess, code: int) -> None:
        self._dismissed.remove(slot)
        self._forget(slot)
        log.info('slot %d: its successor (pid %d) %s', slot.index, slot.pid,
                 slot.killed or _how(code))

    def _successor_exited(self, slot: SlotProcess, code: int) -> None:
        """A successor died before it took over: the restart stops, the old slot goes on
        (or, if it was handing over, is started anew)."""
        del self.successors[slot.index]
        self._forget(slot)
        reason = slot.killed or (slot.error['error'] if slot.error else _how(code))
        if self._restart:
            self._finish_restart(f'rolling restart stopped: the new slot {slot.index} could '
                                 f'not start: {reason}')

    def _forget(self, slot: SlotProcess) -> None:
        slot.reader.close()
        platform.kill_group(slot.pid)
        self._kill_leftovers()

    def _slot_exited(self, slot: SlotProcess, code: int) -> None:
        del self.slots[slot.index]
        self._forget(slot)
        how = _how(code)
        if slot.index in self.successors:
            if slot.handing_over:
                successor = self.slots[slot.index] = self.successors.pop(slot.index)
                log.info('slot %d (pid %d) %s; its successor (pid %d) takes over', slot.index,
                         slot.pid, how, successor.pid)
                return
            self._dismiss(slot.index, f'slot {slot.index} {how} before handing over')
        if self._stopping or slot.retiring:
            log.info('slot %d (pid %d) %s', slot.index, slot.pid, how)
            return
        reason = slot.killed or (slot.error['error'] if slot.error else how)
        if not slot.killed and slot.report.get('live') is False:
            reason = f'{how}: {slot.report["reason"]}'
        record = self._record(slot.index)
        record.exit_code, record.reason = code, reason
        if slot.ran and code not in FATAL_CODES:
            self._schedule_respawn(slot, reason)
            return
        if slot.ran:                    # it ran, and stopped for a reason no restart fixes
            self._give_up_on(slot.index, f'stopped: {reason}')
            return
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
        if self._restart:
            self._finish_restart(f'rolling restart stopped: slot {index} {reason}')
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
        if (self._restart and index in self._restart.groups[0]
                and record.crashes >= MAX_BOOT_FAILURES):
            self._finish_restart(f'rolling restart stopped: slot {index} keeps crashing '
                                 f'({reason})')

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
        if self._check:
            own.add(self._check.call.pid)
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
        for slot in [*self.slots.values(), *self._dismissed]:
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
        for slot in [*self.slots.values(), *self.successors.values()]:
            if self._stopping or slot.killed or slot.retiring:
                continue
            self._read_reports(slot)
            if not slot.loaded and now - slot.started > slot.import_timeout:
                slot.killed = (f'did not load the app within {slot.import_timeout:g}s '
                               '(import_timeout)')
                log.error('slot %d (pid %d) %s; killing it', slot.index, slot.pid, slot.killed)
                platform.kill_quietly(slot.pid)

    # -- rolling restart --------------------------------------------------

    def _advance_restart(self) -> None:
        if self._stopping:
            return
        if self._check and time.monotonic() >= self._check.call.deadline:
            self._cancel_check()
            self._finish_restart('rolling restart refused, slots keep running: the app check '
                                 f'did not finish within {self._check_timeout:g}s')
        if self._restart:
            self._advance_replacements()
        elif not self._check and self._restart_requests > self._requests_served:
            self._begin_restart()

    def _advance_replacements(self) -> None:
        """One step of the rolling restart; a successor that is not prepared in time is
        given up on (it hangs importing the app, or cannot reach the broker)."""
        now = time.monotonic()
        for successor in list(self.successors.values()):
            if (successor.report['phase'] == 'starting' and successor.started + 2 *
                    self._check_timeout < now and not successor.killed):
                successor.killed = 'not prepared in time'
                platform.kill_quietly(successor.pid)
        prepared = {index for index, successor in self.successors.items()
                    if successor.report['phase'] in ('prepared', 'running')}
        ready = {index for index, slot in self.slots.items() if slot.ready}
        done = self._restart.advance(prepared, ready, self.workers, self._prepare_successor,
                                     self._hand_over)
        failure, self._successor_failure = self._successor_failure, None
        if failure or done:
            self._finish_restart(failure)

    def _prepare_successor(self, index: int) -> bool:
        """Start a new slot beside slot ``index``; False if that slot is not running now
        (it is started anew as usual instead)."""
        slot = self.slots.get(index)
        if slot is None or slot.retiring:
            return False
        return self._spawn(index, successor=True)

    def _begin_restart(self) -> None:
        """Re-read the configuration and start the app check; the slots are restarted
        once it has passed."""
        self._requests_serving = self._restart_requests
        self.publisher.reloading()
        try:
            reload = self._reload()
        except RunnerError as exc:
            self._finish_restart(f'rolling restart refused, slots keep running: {exc}')
            return
        try:
            call = platform.ChildCall(reload.check, self._check_timeout, self._fds_to_close())
        except CannotFork as exc:
            self._finish_restart(f'rolling restart refused, slots keep running: the app '
                                 f'check: {exc}')
            return
        self._check = PendingCheck(call, reload.slot_main)
        log.info('rolling restart: checking that the app loads (pid %d)', call.pid)

    def _finish_check(self) -> None:
        """The check child has exited: roll the slots over, or refuse."""
        check, self._check = self._check, None
        try:
            check.call.result()
        except platform.ChildFailed as exc:
            why = str(exc) if exc.code is not None else f'the app check {exc}'
            self._finish_restart(f'rolling restart refused, slots keep running: {why}')
            return
        self._slot_main = check.slot_main
        for record in self._records.values():
            record.failed = False         # slots that could not start get another chance
        self._restart = RollingRestart(range(self.workers))
        log.info('rolling restart: %s', self._restart.describe())

    def _cancel_check(self) -> None:
        if self._check:
            self._check.call.cancel()
            self._check = None

    def _finish_restart(self, error: str | None = None) -> None:
        """End the restart under way: done when ``error`` is None, else failed.  A failed
        restart dismisses every successor that has not taken over, so none is left waiting
        to take over later with the code of this deploy; their slots go on, or are
        started anew if they were handing over."""
        self._restart = None
        self._requests_served = self._requests_serving
        self._restart_error = error
        if error:
            log.error('%s', error)
            self._restarts_failed += 1
            for index in list(self.successors):
                self._dismiss(index, 'the rolling restart stopped')
        else:
            log.info('rolling restart done')
            self._restarts_done += 1

    # -- stopping ---------------------------------------------------------

    def stop(self, mode: str) -> None:
        """``warm``: slots finish what they hold; ``cold``: they stop at once."""
        if self._stopping == 'cold' or self._stopping == mode:
            return
        self._stopping = mode
        self._restart = None
        self._cancel_check()
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
            stopping=self._stopping, restarting=bool(self._restart or self._check),
            slot_trouble=troubled, restarts={
                'rolling_restarts': self._restarts_done,
                'failed_restarts': self._restarts_failed, 'restart_error': self._restart_error,
                'restart_requests': self._restart_requests,
                'restart_requests_served': self._requests_served}))

    def _rows(self) -> list[dict[str, Any]]:
        """One status row per slot number, running or not."""
        rows = []
        for index in range(max([self.workers, *(i + 1 for i in self.slots)])):
            if index in self.slots:
                rows.append(self.slots[index].row())
            else:
                rows.append(self._idle_row(index))
        return rows

    def _idle_row(self, index: int) -> dict[str, Any]:
        """The row of a slot number that has no process now."""
        record = self._record(index)
        if record.failed:
            state = 'failed'
        elif self._stopping:
            state = 'stopped'
        elif record.exit_code == EX_UNAVAILABLE:
            state = 'waiting'
        elif record.reason is not None:
            state = 'backoff'
        else:
            state = 'starting'
        row = {'slot': index, 'pid': None, 'web': None, 'state': state, 'ready': False,
               'reason': record.reason if state in ('failed', 'backoff', 'waiting') else None,
               'assignment': [], 'started': None, 'exit_code': record.exit_code}
        if state in ('backoff', 'waiting'):
            row['retry_at'] = round(record.retry_at_wall, 3)
        return row


def _ignored(name: str, why: str) -> None:
    log.warning('%s ignored: %s', name, why)


def _how(code: int) -> str:
    return f'was killed by signal {-code}' if code < 0 else f'exited with code {code}'


def _drain(fd: int) -> bytes:
    """Everything a non-blocking pipe holds."""
    read = bytearray()
    try:
        while chunk := os.read(fd, 512):
            read += chunk
    except BlockingIOError:
        pass
    return bytes(read)


