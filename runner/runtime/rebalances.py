"""Rebalances: the tasks of the partitions assigned to this member, and their handover.

kafka-python runs the listener on its IO thread while the consumer thread
waits inside ``poll()``, so the two never run at once.  The listener must not
block (heartbeats would stop): every wait in it (for busy agents, the barrier,
the offset commit) is awaited and bounded, and what it does synchronously
(cutting, encoding and sending changelog records, one LevelDB batch per
partition) is proportional to the writes since the last checkpoint.  On
revocation it fences the partitions' queues, asks a checkpoint for the final
cut of their tasks, waits up to ``revoke_timeout``, commits what was cut and
abandons the rest.  An abandoned task's writes are never applied, what its
agents send afterwards is dropped, and if its partitions come back they are
read again from the committed offset, so its work is redone by the next owner,
never lost.

Under exactly-once (see :mod:`.transactions`) a revocation ends the transaction
of every task, kept or revoked, since a transaction is the slot's.  Where it
must abort, the tasks that stay are abandoned and created again from their last
commit (:meth:`Rebalances.reprocess`), so their records are processed again.
"""

import logging
import time
from collections.abc import Callable, Iterable

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, TopicPartition

from ..config import Settings
from ..errors import RunnerError
from ..kafka.assignor import RunnerAssignor
from ..kafka.fixes import io_sleep, request_rebalance
from ..kafka.producer import Producer
from ..state.checkpoint import Checkpoint
from ..state.manager import StateManager
from . import transactions
from .checkpoints import Checkpoints
from .context import SlotContext
from .metrics import SlotMetrics
from .queues import Dispatcher
from .status import SlotStatus
from .tasks import Task, Tasks, names

#: The consumer loop's logger: its lines keep one name whichever part logs them
#: (``bench/rebalance.py`` and the rebalancing tests read the rebalance lines).
log = logging.getLogger('runner.runtime.consumer')

#: How long a cold stop may spend on its last checkpoint and on leaving the group.
COLD_STOP_TIMEOUT = 0.3
#: How often a waiting rebalance listener looks again.
LISTENER_TICK = 0.005


class StopRequest:
    """The stop the slot asked of its consumer loop, if any (written by the slot's main
    thread): it bounds how long the last revocation and leaving the group may wait."""

    def __init__(self) -> None:
        self.mode: str | None = None      # None, 'warm' or 'cold'
        self.deadline = 0.0
        self.leave = False

    def ask(self, drain: bool, deadline: float, leave: bool) -> None:
        """See :meth:`runner.runtime.consumer.ConsumerLoop.stop`."""
        self.leave = self.leave or leave
        if self.mode == 'cold':
            return
        self.mode = 'warm' if drain else 'cold'
        self.deadline = deadline

    def bounded(self, timeout: float) -> float:
        """``timeout``, or ``COLD_STOP_TIMEOUT`` in a cold stop."""
        return COLD_STOP_TIMEOUT if self.mode == 'cold' else timeout

    def revoke_wait(self, revoke_timeout: float) -> float:
        """How long a revocation waits for busy tasks: less when the slot is stopping."""
        if self.mode == 'cold':
            return 0.0
        if self.mode == 'warm':
            return max(0.0, min(revoke_timeout, self.deadline - time.monotonic()))
        return revoke_timeout


class Rebalances:
    """The rebalances of this member: tasks created on assignment, handed over on
    revocation, created again after an aborted transaction; one log line each."""

    def __init__(self, settings: Settings, dispatcher: Dispatcher, tasks: Tasks,
                 slot: SlotContext, status: SlotStatus, metrics: SlotMetrics,
                 assignor: RunnerAssignor, checkpoints: Checkpoints, stop: StopRequest) -> None:
        self._settings = settings
        self._dispatcher = dispatcher
        self._tasks = tasks
        self._slot = slot
        self._producer: Producer = slot.producer
        self._state: StateManager | None = slot.state
        self._status = status
        self._metrics = metrics
        self._assignor = assignor
        self._checkpoints = checkpoints
        self._stop = stop
        #: Set by the consumer loop once it has created its consumer.
        self.consumer: KafkaConsumer | None = None
        self._rebalance = Rebalance(-1)
        self._warmups_asked = -1          # the generation a warm-up rebalance was asked in
        #: Where partitions revoked in this rebalance restart if it gives them straight
        #: back (kafka-python keeps a position across an eager rebalance): their last
        #: commit.  A later assignment starts from the committed offsets anyway, which
        #: may be newer; so this is forgotten once the rebalance has completed.
        self._rewind: dict[TopicPartition, int] = {}

    def listener(self) -> AsyncConsumerRebalanceListener:
        return _Listener(self)

    @property
    def count(self) -> int:
        """Rebalances this member went through."""
        return self._rebalance.count

    # -- the consumer thread -------------------------------------------------

    def complete(self, assignment: frozenset[TopicPartition]) -> None:
        """Once a rebalance has completed (a new generation): standbys and owners as
        assigned, and one line in the log."""
        if self._assignor.generation != self._rebalance.generation:
            self._completed(assignment)

    def _completed(self, assignment: frozenset[TopicPartition]) -> None:
        done, self._rebalance = self._rebalance, self._rebalance.next(self._assignor.generation)
        self._rewind.clear()
        if self._state is not None:
            self._state.follow(self._assignor.standbys)
        self._status.owners = dict(self._assignor.owners)
        log.info('rebalance %s', done.describe(self._assignor.generation, assignment,
                                                 self._assignor.warmups))
        self._metrics.partitions_kept.inc(done.kept(assignment))
        if done.revoked_any:
            self._metrics.handover_seconds.observe(done.handover)
        self._status.unassigned = _unassigned(self._assignor.broken)
        if self._status.unassigned:
            log.error('%s', self._status.unassigned)

    def ask_for_warm_tasks(self) -> None:
        """Once this slot has warmed up a task it is to take over, ask for the rebalance
        that hands it over (once per generation)."""
        warmups = self._assignor.warmups
        if not warmups or self._warmups_asked == self._assignor.generation:
            return
        ready = self._slot.caught_up(self._settings.acceptable_lag)
        warm = [task for task in warmups
                if {(changelog, task[1]) for changelog, count in self._slot.layout.changelogs(
                ).items() if count == task[0]} <= ready]
        if warm:
            self._warmups_asked = self._assignor.generation
            log.info('caught up on %d task(s) to take over; asking for a rebalance', len(warm))
            request_rebalance(self.consumer)

    # -- the listener (kafka-python's IO thread) -------------------------------

    async def revoke(self, tps: Iterable[TopicPartition], lost: bool) -> None:
        """Fence the partitions, take the last cut of their tasks, commit, retire them."""
        self._status.group_state = '<rebalancing>'
        began = time.monotonic()
        tps = set(tps)
        tasks = self._take_away(tps)
        if lost:          # others may own them now: this member no longer claims them
            self._assignor.forget(tps)
        checkpoint = self._checkpoints.take()
        if self._producer.transactional:
            await self._last_transaction(checkpoint, tasks, lost)
        elif lost:
            checkpoint.close()
            self._abandon(tasks, 'this member lost its membership')
        else:
            await self._last_checkpoint(checkpoint, tasks)
        if not lost:     # kafka-python forgets the positions of lost partitions by itself
            for task in tasks:     # partitions kept keep their fetch positions: rewind them
                self._rewind.update(task.restart_offsets())
        for task in tasks:
            self._retire(task)
        self._keep_the_rest(tasks, tps)
        self._rebalance.revoked(tps, time.monotonic() - began)
        self._metrics.partitions_revoked.inc(len(tps))

    async def _last_checkpoint(self, checkpoint: Checkpoint, tasks: list[Task]) -> None:
        """The final cut of revoked tasks, committed; tasks still busy are abandoned."""
        checkpoint.request(tasks, final=True)
        wait = self._stop.revoke_wait(self._settings.revoke_timeout)
        await self._awaited(lambda: checkpoint.has_cut(tasks), wait)
        busy = [task for task in checkpoint.close() if task in tasks]
        self._abandon(busy, f'still busy after {wait:.1f}s')
        await self._checkpoints.commit_awaited(checkpoint, self._commit_timeout(), self._awaited)

    async def _last_transaction(self, checkpoint: Checkpoint, revoked: list[Task],
                                lost: bool) -> None:
        """Revocation under exactly-once: cut every task (the transaction is the slot's),
        commit it, and abort it instead if a task stays busy or the membership is lost."""
        kept = self._tasks.active()
        checkpoint.request(revoked, final=True)
        checkpoint.request(kept)
        wait = 0.0 if lost else self._stop.revoke_wait(self._settings.revoke_timeout)
        await self._awaited(lambda: checkpoint.has_cut([*revoked, *kept]), wait)
        busy = checkpoint.close()
        try:
            if busy or lost:
                self._abandon(revoked, 'this member lost its membership' if lost else
                              f'{names(busy)} still busy after {wait:.1f}s')
                steps = self._checkpoints.aborted(checkpoint, kept)
            else:
                steps = self._checkpoints.transaction(checkpoint, self._tasks.active)
            await transactions.run_awaited(steps, self._commit_timeout(), self._awaited)
        except RunnerError as exc:
            self._checkpoints.fail(exc)

    def _commit_timeout(self) -> float:
        return self._stop.bounded(self._settings.commit_timeout)

    async def _awaited(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Await ``condition`` on the IO loop; False if it is not true within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline:
                return False
            await io_sleep(self.consumer, LISTENER_TICK)
        return True

    def assign(self, tps: Iterable[TopicPartition]) -> None:
        """New tasks: their queues (held while tables recover) and a rewind to the last
        commit for partitions this slot had before."""
        tps = set(tps)
        for tp in tps & self._rewind.keys():
            self.consumer.seek(tp, self._rewind[tp])
        self._create_tasks(tps)
        self._rebalance.assigned(tps)
        self._metrics.partitions_assigned.inc(len(tps))

    # -- the tasks -----------------------------------------------------------

    def reprocess(self, tasks: list[Task]) -> None:
        """After an aborted transaction: abandon ``tasks`` and create them again, reading
        their sources from the last commit and their tables from the store (which holds
        nothing of the aborted transaction)."""
        tps = {tp for task in tasks for tp in task.sources}
        if not tps:
            return
        self._take_away(tps)
        self._abandon(tasks, 'their transaction was aborted')
        for task in tasks:
            self._retire(task)
        self._read_again(tasks, tps)

    def _take_away(self, tps: set[TopicPartition]) -> list[Task]:
        """Fence the queues of ``tps`` and remove their tasks (and recoveries under way)."""
        self._dispatcher.revoke(tps)
        tasks = self._tasks.revoke(tps)
        if self._state is not None:
            self._state.cancel(key for task in tasks if not task.ready for key in task.keys)
        return tasks

    def _abandon(self, tasks: list[Task], why: str) -> None:
        for task in tasks:
            task.finished = True
        if tasks:
            log.warning('abandoning %s (%s): not committed, their records will be processed '
                        'again by the next owner', names(tasks), why)

    def _retire(self, task: Task) -> None:
        """Forget a revoked task; its stores close once no agent is inside it."""
        for key in task.keys:
            self._slot.active.pop(key, None)
        self._checkpoints.forget(task.sources)

        held = [(partition.table.changelog.name, task.number)
                for partition in task.partitions.values()]

        def release() -> None:
            for key in held:
                self._state.stores.release(key)
        if held:
            task.retire(release)

    def _keep_the_rest(self, tasks: list[Task], revoked: set[TopicPartition]) -> None:
        """A task that lost only some of its partitions (a topic of its group changed its
        partition count) goes on with the others, read again from its last cut."""
        staying = {tp for task in tasks for tp in task.sources} - revoked
        if staying:
            self._read_again(tasks, staying)

    def _read_again(self, tasks: list[Task], tps: set[TopicPartition]) -> None:
        """New tasks for ``tps``, whose sources are read again from where ``tasks`` (the
        ones they replace) last committed them."""
        for task in tasks:
            for tp, offset in task.restart_offsets().items():
                if tp in tps:
                    self.consumer.seek(tp, offset)
        self._create_tasks(tps)

    def _create_tasks(self, tps: set[TopicPartition]) -> None:
        """Queues for ``tps``, in new tasks or in tasks this slot has (a partition that joins
        a task whose other partitions stay); the tables of new tasks are recovered.  New
        tasks join a pending checkpoint (it commits what they send before their cut)."""
        added = sorted(tp for tp in tps if self._tasks.task_of(tp) is None)
        tasks = self._tasks.assign(added)
        for tp in added:
            task = self._tasks.task_of(tp)
            task.queues += self._dispatcher.assign(tp, task, held=not task.ready)
        self._checkpoints.join(tasks)
        if self._state is not None:
            self._state.recover([key for task in tasks for key in task.keys])


class _Listener(AsyncConsumerRebalanceListener):
    def __init__(self, rebalances: Rebalances) -> None:
        self._rebalances = rebalances

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._rebalances.revoke(revoked, lost=False)

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        await self._rebalances.revoke(lost, lost=True)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._rebalances.assign(assigned)


class Rebalance:
    """What one rebalance did to this member, for its line in the log."""

    def __init__(self, generation: int, count: int = 0) -> None:
        self.generation = generation
        #: Rebalances this member went through before this one.
        self.count = count
        self._revoked: set[TopicPartition] = set()
        self._assigned: set[TopicPartition] = set()
        self._handover = 0.0

    def next(self, generation: int) -> 'Rebalance':
        return Rebalance(generation, self.count + 1)

    def revoked(self, tps: set[TopicPartition], seconds: float) -> None:
        self._revoked |= tps
        self._handover += seconds

    def assigned(self, tps: set[TopicPartition]) -> None:
        self._assigned |= tps

    @property
    def revoked_any(self) -> bool:
        return bool(self._revoked)

    @property
    def handover(self) -> float:
        """Seconds the revoked partitions took to hand over (their last commit): how long
        they paused."""
        return self._handover

    def kept(self, assignment: frozenset[TopicPartition]) -> int:
        """Partitions of ``assignment`` this member had before the rebalance too."""
        return len(assignment - self._assigned)

    def describe(self, generation: int, assignment: frozenset[TopicPartition],
                 warmups: set) -> str:
        handed = f' (handed over in {self._handover:.2f}s)' if self._revoked else ''
        kept = self.kept(assignment)
        warm = f', warming up {len(warmups)} task(s) to take over' if warmups else ''
        return (f'to generation {generation}: revoked {_partitions(self._revoked)}{handed}, '
                f'assigned {_partitions(self._assigned)}, kept {kept} partition(s){warm}')


def _unassigned(broken: dict[str, tuple[int, int]]) -> str | None:
    """Why topics whose partition count changed are left unprocessed, or None."""
    if not broken:
        return None
    topics = '; '.join(f'topic {topic!r} has {now} partitions, its tables {need}'
                       for topic, (now, need) in sorted(broken.items()))
    return (f'not processing: {topics}: its keys are no longer where their table state is '
            '(see "Changing partition counts" in the manual, docs/ops/rebalancing.rst)')


def _partitions(tps: set[TopicPartition]) -> str:
    return ', '.join(f'{tp.topic}:{tp.partition}' for tp in sorted(tps)) or 'none'
