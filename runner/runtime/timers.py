"""The timers of a slot: one thread per declared timer, ticking on schedule.

Each thread waits for its timer's next due time on a :class:`Clock` (the
system's, or one a test injects), runs the tick if the slot is on duty (every
slot for a plain timer; the leader only for ``on_leader``), and counts the due
times that passed while the tick ran as skipped: a tick is never started twice
at once.

Leadership (:class:`Duty`) follows the group assignment: the slot that owns
partition 0 of the app's leader topic (see :func:`runner.app.timers.leader_topic`)
leads from the assignment that gives it that partition until its revocation.
The revocation waits (up to ``revoke_timeout``) for a leader tick under way
before the partition is handed over, and the next owner is given it only in a
later generation, so two slots never lead in one generation.

A tick's table access (:class:`TimerContext`) holds the guard of each task it
touches until the tick ends, as an agent holds its task's for a record: the
tick's writes are cut together into the next checkpoint (changelog, then the
store), or taken back together if the tick raises.  One timer at a time holds
guards (the slot's timer lock), and an agent holds one task's at most, so
guards are never waited for in a cycle.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from kafka import TopicPartition

from ..app import context
from ..app.globals import GlobalTable
from ..app.tables import Table, tables_used_by
from ..app.timers import NotOwned, Timer, leader_topic
from ..app.topics import Topic
from ..config import Settings
from ..errors import ConfigError, RunnerError, shown
from ..state.partitions import TablePartition
from .context import SlotContext
from .policy import error_text
from .tasks import Task, TaskId, Tasks

log = logging.getLogger(__name__)


class Clock(Protocol):
    """Where timers read the time and wait for it."""

    def time(self) -> float:
        """Seconds since the epoch (cron schedules)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (interval schedules)."""

    def wait(self, stop: threading.Event, until: float, now: Callable[[], float]) -> bool:
        """Wait until ``now()`` (one of its readings) reaches ``until``, or ``stop`` is set;
        True if it is set."""


class SystemClock:
    """The real clocks."""

    #: The longest wait before the wall clock is read again (it may be set meanwhile).
    LOOK_EVERY = 60.0

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, stop: threading.Event, until: float, now: Callable[[], float]) -> bool:
        while (left := until - now()) > 0:
            if stop.wait(min(left, self.LOOK_EVERY)):
                return True
        return stop.is_set()


class ManualClock:
    """A clock that moves only when told (:meth:`advance`): both its readings move
    together, and timer threads waiting on it wake when it passes their due time."""

    #: How often a waiting thread looks at the stop event (real seconds).
    LOOK_EVERY = 0.01

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._moved = threading.Condition()

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        with self._moved:
            self._now += seconds
            self._moved.notify_all()

    def wait(self, stop: threading.Event, until: float, now: Callable[[], float]) -> bool:
        with self._moved:
            while now() < until and not stop.is_set():
                self._moved.wait(self.LOOK_EVERY)
        return stop.is_set()


class Duty:
    """Whether this slot leads the app: it owns partition 0 of the leader topic.

    The consumer calls :meth:`assigned` and :meth:`revoked` from its rebalance
    listener; leader ticks run between :meth:`enter` and :meth:`leave`.
    """

    def __init__(self, topic: str | None) -> None:
        self.partition = None if topic is None else TopicPartition(topic, 0)
        self._lock = threading.Lock()
        #: The generation whose assignment made this slot the leader; None when it is not.
        self.generation: int | None = None
        self._running = 0

    def assigned(self, tps: set[TopicPartition], generation: int) -> None:
        if self.partition in tps:
            with self._lock:
                self.generation = generation
            log.info('this slot leads the app from generation %d (it owns %s:0): on_leader '
                     'timers run here', generation, self.partition.topic)

    def revoked(self, tps: set[TopicPartition]) -> bool:
        """Stop leading if ``tps`` take the leader partition; True if they do."""
        if self.partition not in tps:
            return False
        with self._lock:
            was, self.generation = self.generation, None
        if was is not None:
            log.info('this slot no longer leads the app (%s:0 revoked)', self.partition.topic)
        return True

    def idle(self) -> bool:
        """No leader tick is running."""
        return self._running == 0

    def enter(self) -> bool:
        """A leader tick may start: True (and counted as running) if this slot leads."""
        with self._lock:
            if self.generation is None:
                return False
            self._running += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._running -= 1


class TimerContext:
    """The processing context of a timer thread during a tick.

    A key is served if this slot owns its partition now (its task is assigned
    and its tables recovered); any other is refused with :class:`NotOwned`.  The
    first access to a task's tables leases the task and takes its guard until
    the tick ends, under the slot's timer lock (see the module docstring).
    Sends go through the slot's producer, as any send outside a record does
    (under exactly-once, the plain producer: at least once).
    """

    def __init__(self, slot: SlotContext, tasks: Tasks, lock: threading.Lock) -> None:
        self.slot = slot
        self._tasks = tasks
        self._lock = lock
        self._locked = False
        self._held: dict[TaskId, Task] = {}
        #: The tick's table writes, as (partition, key, value before), taken back if it raises.
        self.undone: list[tuple[TablePartition, Any, Any]] = []
        #: Seconds since the epoch when the tick started: its event time (windowed tables).
        self.started = 0.0

    def begin(self, started: float) -> None:
        self.started = started

    def end(self, failed: bool) -> None:
        """The tick is over: take its writes back if it ``failed``, let go of its tasks."""
        if failed:
            while self.undone:
                partition, key, before = self.undone.pop()
                partition.unset(key, before)
        self.undone.clear()
        for task in self._held.values():
            task.guard.release()
            task.leave()
        self._held.clear()
        if self._locked:
            self._locked = False
            self._lock.release()

    def event_time(self) -> float | None:
        return self.started

    def read(self, table: Table, key: Any) -> Any:
        return self._partition(table, table.routing_key(key)).get(key, fill_cache=True)

    def write(self, table: Table, key: Any, value: Any) -> None:
        table.check(key, value)
        partition = self._partition(table, table.routing_key(key))
        self.undone.append((partition, key, partition.set(key, value)))
        if table.windowing is not None:
            partition.observe(self.started)

    def items(self, table: Table) -> Iterator[tuple[Any, Any]]:
        return self.slot.items(table)

    def windows(self, table: Table, key: Any) -> list[tuple[float, Any]]:
        return self._partition(table, key).windows(key)

    def read_global(self, table: GlobalTable, key: Any) -> Any:
        """Any key of a global table: every slot holds all of it."""
        return self.slot.read_global(table, key)

    def items_global(self, table: GlobalTable) -> Iterator[tuple[Any, Any]]:
        return self.slot.items_global(table)

    def write_global(self, table: GlobalTable, key: Any, value: Any) -> None:
        """Refused, as outside agents: only the agent of its source topic writes it."""
        self.slot.write_global(table, key, value)

    def send(self, topic: Topic, key: bytes | None, value: bytes | None,
             headers: list | None = None, partition: int | None = None) -> Any:
        return self.slot.send(topic, key, value, headers, partition)

    def flush(self, timeout: float) -> None:
        self.slot.flush(timeout)

    def _partition(self, table: Table, routing_key: Any) -> TablePartition:
        """The live partition of ``routing_key``'s task, held for the rest of the tick."""
        self.slot.check_declared(table)
        layout = self.slot.layout
        number = layout.partition_of(table, routing_key)
        task_id = (layout.partitions(table), number)
        task = self._held.get(task_id) or self._hold(task_id)
        partition = task.partitions.get(table.name) if task is not None else None
        if partition is None or task.finished:
            raise NotOwned(f'table {table.name!r}: key {shown(routing_key)} is in partition '
                           f'{number}, which this slot does not own now (a timer reads and '
                           'writes the keys of the partitions its slot owns)')
        return partition

    def _hold(self, task_id: TaskId) -> Task | None:
        """Lease the task and take its guard, if this slot has it."""
        task = self._tasks.get(task_id)
        if task is None:
            return None
        if not self._locked:
            self._lock.acquire()
            self._locked = True
        task.enter()
        if self._tasks.get(task_id) is not task:     # revoked meanwhile: its stores may close
            task.leave()
            return None
        task.guard.take()
        self._held[task_id] = task
        return task


class TimerThread:
    """One timer's thread, its counts, and what it is doing now."""

    def __init__(self, timer: Timer, slot: SlotContext, tasks: Tasks, duty: Duty,
                 lock: threading.Lock, clock: Clock, on_failure: Callable[..., None]) -> None:
        self.timer = timer
        self._context = TimerContext(slot, tasks, lock)
        self._duty = duty
        self._clock = clock
        self._now = clock.monotonic if timer.schedule.monotonic else clock.time
        self._on_failure = on_failure
        self._stop = threading.Event()
        #: Ticks run, due times skipped (a tick ran over them), ticks that raised.
        self.counts = {'ticks': 0, 'skipped': 0, 'failed': 0}
        #: When (monotonic, real) the tick under way started; None between ticks.
        self.running_since: float | None = None
        #: When the next tick is due, on the timer's clock (None before it starts).
        self.due: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f'timer-{timer.fn.__name__}')

    def stop(self) -> None:
        """No tick starts from now on; one under way finishes."""
        self._stop.set()

    def _run(self) -> None:
        context.bind(self._context)
        self.due = self.timer.schedule.first(self._now())
        while not self._clock.wait(self._stop, self.due, self._now):
            self.due = self.run_due(self.due)

    def run_next(self) -> None:
        """Run the tick due next in the calling thread (or greenlet), its context bound to
        it: see :meth:`Timers.run_until`."""
        context.bind(self._context)
        self.due = self.run_due(self.due)

    def run_due(self, due: float) -> float:
        """Run the tick due at ``due`` if this slot is on duty; returns the next due time
        (the due times that passed meanwhile are counted as skipped).  Called by the
        thread, or by a test driving the timer itself."""
        if self.timer.on_leader:
            if self._duty.enter():
                try:
                    self._tick()
                finally:
                    self._duty.leave()
        else:
            self._tick()
        following, skipped = self.timer.schedule.next(due, self._now())
        if skipped:
            self.counts['skipped'] += skipped
            log.warning('timer %s: %d tick(s) skipped, the tick due before them was still '
                        'running', self.timer.name, skipped)
        return following

    def _tick(self) -> None:
        self.running_since = time.monotonic()
        self._context.begin(self._clock.time())
        failed = True
        try:
            self.timer.fn()
            failed = False
        except RunnerError as exc:
            log.error('timer %s stopped: %s', self.timer.name, exc)
            self._on_failure(f'timer {self.timer.name}: {exc}', exc.exit_code)
            self._stop.set()
        except Exception as exc:  # noqa: BLE001 - whatever user code raises meets the policy
            self._failed(exc)
        finally:
            self._context.end(failed)
            self.counts['ticks'] += 1
            self.running_since = None

    def _failed(self, exc: Exception) -> None:
        self.counts['failed'] += 1
        if isinstance(exc, NotOwned):     # the slot's partitions, not the code: no traceback
            log.warning('timer %s: %s', self.timer.name, exc)
            return
        if self.timer.on_error == 'stop':
            log.error('timer %s raised; stopping the slot (on_error=stop)', self.timer.name,
                      exc_info=exc)
            self._on_failure(f'timer {self.timer.name} raised: {error_text(exc)}')
            self._stop.set()
            return
        log.error('timer %s raised (its table writes are taken back; it runs again at its '
                  'next tick)', self.timer.name, exc_info=exc)


class Timers:
    """The timer threads of a slot."""

    def __init__(self, timers: list[Timer], slot: SlotContext, tasks: Tasks, duty: Duty,
                 on_failure: Callable[..., None], clock: Clock | None = None) -> None:
        lock = threading.Lock()
        self.duty = duty
        self.clock = clock or SystemClock()
        self.threads = [TimerThread(timer, slot, tasks, duty, lock, self.clock, on_failure)
                        for timer in timers]

    def start(self) -> None:
        for timer in self.threads:
            timer.thread.start()

    def stop(self) -> None:
        for timer in self.threads:
            timer.stop()

    def run_until(self, until: float,
                  call: Callable[[Callable[[], None]], None] = lambda tick: tick()) -> None:
        """Without the timers' threads, on a :class:`ManualClock`: run every tick due up to
        ``until``, earliest first, the clock moved to each due time, each through ``call``
        (a test driver runs each in a greenlet of its own; the tick binds its context to
        whatever runs it).  How :mod:`runner.testing` runs timers."""
        clock = self.clock
        assert isinstance(clock, ManualClock), 'timers run without threads on a ManualClock'
        for timer in self.threads:
            if timer.due is None:
                timer.due = timer.timer.schedule.first(clock.monotonic())
        while due := [timer for timer in self.threads if timer.due <= until]:
            timer = min(due, key=lambda timer: timer.due)
            clock.advance(timer.due - clock.monotonic())
            call(timer.run_next)
        clock.advance(until - clock.monotonic())

    def running(self) -> bool:
        """Whether a tick is under way."""
        return any(timer.running_since is not None for timer in self.threads)

    def stuck(self, since: float) -> list[tuple[str, threading.Thread]]:
        """(name, thread) of the timers whose tick under way started before ``since``."""
        return [(timer.timer.name, timer.thread) for timer in self.threads
                if (started := timer.running_since) is not None and started < since]

    def describe(self) -> dict[str, Any]:
        """For the slot's status: whether it leads (and from which generation), and each
        timer's counts."""
        generation = self.duty.generation
        return {'leader': generation is not None, 'leader_generation': generation,
                'timers': {timer.timer.name: {**timer.counts,
                                              'running': timer.running_since is not None}
                           for timer in self.threads}}


def check_timers(app: Any, settings: Settings) -> None:
    """Refuse at start (78) what timers cannot do correctly here: an ``on_leader`` timer in
    an app without agents (no partition to lead by), a timer using tables under
    exactly-once (its writes would belong to no record that a transaction could replay)."""
    for timer in app.timers:
        if timer.on_leader and leader_topic(app) is None:
            raise ConfigError(f'timer {timer.name}: on_leader=True needs an agent: the leader '
                              "is the slot owning partition 0 of the app's first agent topic")
        if settings.processing_guarantee == 'exactly_once' and tables_used_by(timer.fn):
            names = ', '.join(sorted(repr(table.name) for table in tables_used_by(timer.fn)))
            raise ConfigError(f'timer {timer.name} uses tables {names}, which timers cannot '
                              'update under exactly_once (a tick is in no transaction); use '
                              'at_least_once, or send to a topic an agent applies')
