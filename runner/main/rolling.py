"""Rolling restarts: one half of the slots at a time, each slot replaced hot.

Each slot of a group is replaced by a *successor*: a new slot process started
beside it, which imports the app (as deployed now) and prepares what it can
while the old slot still works, then waits for the old slot's data directory.
When every successor of the group is prepared, the old slots stop for them
(warm, without leaving the consumer group); each successor takes over its
predecessor's data directory, web port and group identity, so the group does
not rebalance and its partitions pause only for the handover itself.  Once
the group is ready, the next one follows.

With an odd number of slots the first group is the smaller half: while it
restarts, most web servers answer, and a deploy that cannot start (its
successors fail before they are prepared, while the old slots go on) is
found out on the fewest slots.
"""

import logging
import signal
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import platform
from ..errors import CannotFork, ResourceBusy, RunnerError
from .slots import Deploy, SlotProcess, how

if TYPE_CHECKING:
    from .supervisor import Supervisor

log = logging.getLogger(__name__)


class Reload(NamedTuple):
    """What a rolling restart needs, from the configuration as it is now."""

    #: Run in a throwaway child: returns (JSON) what the app, as deployed now, declares
    #: that the main process needs; raises if it does not load.
    check: Callable[[], Any]
    #: What the restarted slots run, from what ``check`` returned.
    deploy: Callable[[Any], Deploy]


class PendingCheck(NamedTuple):
    """The app check of a rolling restart, running in a child."""

    call: platform.ChildCall
    deploy: Callable[[Any], Deploy]


class RollingRestart:
    """The steps of one rolling restart, advanced by the main loop.

    ``phase`` is ``prepare`` (start a successor beside each slot of the group),
    ``handover`` (once all are prepared, the old slots stop for them) or
    ``ready`` (wait until the slots of the group are ready).

    Only the slots that got a successor are waited for and handed over: a slot
    of the group that was not running when its successor would have started (it
    crashed and waits for its restart), or whose successor was dismissed, is
    started anew as usual, running the app as deployed now.
    """

    def __init__(self, indexes: Iterable[int]) -> None:
        indexes = sorted(indexes)
        half = len(indexes) // 2
        self.groups = [group for group in (indexes[:half], indexes[half:]) if group]
        self.phase = 'prepare'
        #: The slots of the current group that are being replaced by a successor.
        self.replacing: set[int] = set()

    def describe(self) -> str:
        return ' then '.join('slots ' + ','.join(map(str, group)) for group in self.groups)

    def advance(self, prepared: set[int], ready: set[int], workers: int,
                prepare: Callable[[int], bool], hand_over: Callable[[int], None]) -> bool:
        """One step; True once every group has been replaced and is ready.  ``prepare``
        starts a successor beside a slot and says whether it did."""
        group = {index for index in self.groups[0] if index < workers}
        if self.phase == 'prepare':
            self.replacing = {index for index in sorted(group) if prepare(index)}
            self.phase = 'handover'
        elif self.phase == 'handover' and self.replacing & group <= prepared:
            for index in sorted(self.replacing & group):
                hand_over(index)
            self.phase = 'ready'
        elif self.phase == 'ready' and group <= ready:
            self.groups.pop(0)
            self.replacing = set()
            self.phase = 'prepare'
        return not self.groups

    def forget(self, index: int) -> None:
        """Slot ``index`` is no longer replaced by a successor: it is started anew instead."""
        self.replacing.discard(index)


class RollingRestarts:
    """The rolling restarts of a :class:`~runner.main.supervisor.Supervisor`'s slots.

    Each HUP (``runner restart``) is a request; requests made while a restart is under
    way are served by the next one.  A restart re-reads the configuration with
    ``reload()`` and runs its app check in a child for at most ``check_timeout``
    seconds; if either fails, the deploy is refused and the slots keep running.  Once
    the check has passed, the slots are replaced group by group (see
    :class:`RollingRestart`): successors are forked beside them, and each old slot
    hands over to its successor (USR2) once the whole group is prepared.  The
    supervisor calls :meth:`advance` once per round of its loop and tells this object
    when a slot or successor exits.
    """

    def __init__(self, supervisor: 'Supervisor', reload: Callable[[], Reload],
                 check_timeout: float) -> None:
        self._supervisor = supervisor
        self.reload = reload
        self.check_timeout = check_timeout
        #: Slots started to replace a running one, by index.
        self.successors: dict[int, SlotProcess] = {}
        #: Successors told to stop before taking over, until they have exited.
        self.dismissed: list[SlotProcess] = []
        self.check: PendingCheck | None = None
        self.plan: RollingRestart | None = None
        self.requests = 0       # HUPs taken
        self._serving = 0       # HUPs covered by the restart under way
        self.served = 0         # HUPs covered by the last finished restart
        self.done = 0
        self.failed = 0
        #: Why the last restart was refused or stopped; None once one has succeeded.
        self.error: str | None = None
        self._fork_failure: str | None = None   # a successor could not be forked

    @property
    def under_way(self) -> bool:
        return bool(self.plan or self.check)

    def processes(self) -> list[SlotProcess]:
        """The successors, and the dismissed successors that have not exited yet."""
        return [*self.successors.values(), *self.dismissed]

    def counts(self) -> dict[str, Any]:
        """The restart fields of the status (``runner restart`` waits on them)."""
        return {'rolling_restarts': self.done, 'failed_restarts': self.failed,
                'restart_error': self.error, 'restart_requests': self.requests,
                'restart_requests_served': self.served}

    def request(self) -> None:
        """A HUP: a restart follows, once the one under way (if any) has finished."""
        self.requests += 1
        if self.under_way:
            log.info('HUP during a rolling restart: another one follows when it has finished')

    def advance(self) -> None:
        """One step: time out the app check, replace slots, or begin the next restart."""
        if self.check and time.monotonic() >= self.check.call.deadline:
            self.cancel_check()
            self.finish('rolling restart refused, slots keep running: the app check did '
                        f'not finish within {self.check_timeout:g}s')
        if self.plan:
            self._advance_replacements()
        elif not self.check and self.requests > self.served:
            self._begin()

    def stop(self) -> None:
        """The worker is stopping: no restart goes on (its successors are stopped with
        every other slot)."""
        self.plan = None
        self.cancel_check()

    def _begin(self) -> None:
        """Re-read the configuration and start the app check; the slots are restarted
        once it has passed."""
        self._serving = self.requests
        self._supervisor.publisher.reloading()
        refused = 'rolling restart refused, slots keep running'
        try:
            reload = self.reload()
        except RunnerError as exc:
            self.finish(f'{refused}: {exc}')
            return
        try:
            call = platform.ChildCall(reload.check, self.check_timeout,
                                      self._supervisor.fds_to_close())
        except CannotFork as exc:
            self.finish(f'{refused}: the app check: {exc}')
            return
        self.check = PendingCheck(call, reload.deploy)
        log.info('rolling restart: checking that the app loads (pid %d)', call.pid)

    def finish_check(self) -> None:
        """The check child has exited: roll the slots over, or refuse."""
        check, self.check = self.check, None
        try:
            checked = check.call.result()
        except platform.ChildFailed as exc:
            why = str(exc) if exc.code is not None else f'the app check {exc}'
            self.finish(f'rolling restart refused, slots keep running: {why}')
            return
        self._supervisor.deploy(check.deploy(checked))
        self.plan = RollingRestart(range(self._supervisor.workers))
        log.info('rolling restart: %s', self.plan.describe())

    def cancel_check(self) -> None:
        if self.check:
            self.check.call.cancel()
            self.check = None

    def finish(self, error: str | None = None) -> None:
        """End the restart under way: done when ``error`` is None, else failed.  A failed
        restart dismisses every successor that has not taken over, so none is left waiting
        to take over later with the code of this deploy; their slots go on, or are
        started anew if they were handing over."""
        self.plan = None
        self.served = self._serving
        self.error = error
        if error:
            log.error('%s', error)
            self.failed += 1
            for index in list(self.successors):
                self.dismiss(index, 'the rolling restart stopped')
        else:
            log.info('rolling restart done')
            self.done += 1

    def _advance_replacements(self) -> None:
        """One step of the plan; a successor that is not prepared in time is given up on
        (it hangs importing the app, or cannot reach the broker)."""
        now = time.monotonic()
        for successor in list(self.successors.values()):
            if (successor.report['phase'] == 'starting' and successor.started + 2 *
                    self.check_timeout < now and not successor.killed):
                successor.killed = 'not prepared in time'
                platform.kill_quietly(successor.pid)
        slots = self._supervisor.slots
        prepared = {index for index, successor in self.successors.items()
                    if successor.report['phase'] in ('prepared', 'running')}
        ready = {index for index, slot in slots.items() if slot.ready}
        done = self.plan.advance(prepared, ready, self._supervisor.workers,
                                 self._start_successor, self._hand_over)
        failure, self._fork_failure = self._fork_failure, None
        if failure or done:
            self.finish(failure)

    def _start_successor(self, index: int) -> bool:
        """Fork a successor beside slot ``index``; False if that slot is not running now
        (it is started anew as usual instead) or no process could be made (the restart
        stops)."""
        slot = self._supervisor.slots.get(index)
        if slot is None or slot.retiring:
            return False
        try:
            successor = self._supervisor.fork_slot(index, successor=True)
        except OSError as exc:
            self._fork_failure = (f'rolling restart stopped: slot {index}: cannot fork its '
                                  f'successor: {exc.strerror or exc}')
            return False
        except ResourceBusy as exc:     # the deploy moved it to a port in use
            self._fork_failure = f'rolling restart stopped: slot {index}: {exc}'
            return False
        self.successors[index] = successor
        log.info('slot %d: successor started (pid %d)', index, successor.pid)
        return True

    def _hand_over(self, index: int) -> None:
        """Stop one slot warm for its successor: USR2, so it stays in the group; the
        successor takes over once it has exited.  Only a slot told so lets its successor
        take over."""
        slot = self._supervisor.slots.get(index)
        if slot and not slot.retiring:
            slot.handing_over = True
            slot.stop(signal.SIGUSR2)

    def dismiss(self, index: int, why: str) -> None:
        """TERM the successor of slot ``index``, which has not taken over: it stops without
        taking over (KILLed if it does not), and the restart no longer waits for it."""
        successor = self.successors.pop(index)
        self.dismissed.append(successor)
        log.info('slot %d: stopping its successor (pid %d): %s', index, successor.pid, why)
        successor.stop(signal.SIGTERM)
        if self.plan:
            self.plan.forget(index)

    def slot_removed(self, index: int) -> None:
        """Slot ``index`` stops for good (TTOU): its successor, if any, is dismissed."""
        if index in self.successors:
            self.dismiss(index, f'slot {index} is removed')

    def slot_exited(self, slot: SlotProcess, code: int) -> SlotProcess | None:
        """A slot exited: its successor, which takes over if the slot was handing over
        (else it is dismissed), or None."""
        if slot.index not in self.successors:
            return None
        if slot.handing_over:
            successor = self.successors.pop(slot.index)
            log.info('slot %d (pid %d) %s; its successor (pid %d) takes over', slot.index,
                     slot.pid, how(code), successor.pid)
            return successor
        self.dismiss(slot.index, f'slot {slot.index} {how(code)} before handing over')
        return None

    def successor_exited(self, successor: SlotProcess, code: int) -> bool:
        """A process exited; False if it is no successor.  A successor that dies before
        it took over stops the restart; the old slot goes on (or, if it was handing over,
        is started anew)."""
        if successor in self.dismissed:
            self.dismissed.remove(successor)
            log.info('slot %d: its successor (pid %d) %s', successor.index, successor.pid,
                     successor.killed or how(code))
            return True
        if self.successors.get(successor.index) is not successor:
            return False
        del self.successors[successor.index]
        reason = successor.killed or (successor.error['error'] if successor.error
                                      else how(code))
        if self.plan:
            self.finish(f'rolling restart stopped: the new slot {successor.index} could not '
                        f'start: {reason}')
        return True

    def slot_given_up(self, index: int, reason: str) -> None:
        """Slot ``index`` was left stopped: the restart under way stops."""
        if self.plan:
            self.finish(f'rolling restart stopped: slot {index} {reason}')

    def slot_keeps_crashing(self, index: int, reason: str) -> None:
        """Slot ``index`` crashed too often in a row: a restart replacing it stops."""
        if self.plan and index in self.plan.groups[0]:
            self.finish(f'rolling restart stopped: slot {index} keeps crashing ({reason})')
