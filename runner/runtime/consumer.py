"""The consumer thread: the only thread that polls, pauses, resumes and takes checkpoints.

Each round of the loop polls (for at most ``POLL_MS``), hands the fetched
batches to the partition queues, hands out tasks whose tables have finished
recovering, applies back-pressure, and advances the checkpoint: one is opened
every ``commit_interval``, collects the cut of every task (made at a record
boundary, see :mod:`runner.state.checkpoint`), and is committed once every
task is cut — or when the interval is over, without the tasks that could not
be cut, such as one whose agent is stuck inside a record.  So offsets are
committed at least once per commit interval, whatever the load.

Rebalances: kafka-python runs the listener on its IO thread while this thread
waits inside ``poll()``, so the two never run at once.  The listener must not
block (heartbeats would stop): every wait in it (for busy agents, the barrier,
the offset commit) is awaited and bounded, and what it does synchronously
(cutting, encoding and sending changelog records, one LevelDB batch per
partition) is proportional to the writes since the last checkpoint.  On
revocation it fences the
partitions' queues, asks a checkpoint for the final cut of their tasks, waits
up to ``revoke_timeout``, commits what was cut and abandons the rest.  An
abandoned task's writes are never applied, what its agents send afterwards
is dropped, and if its partitions come back they are read again from the
committed offset, so its work is redone by the next owner, never lost.

Under exactly-once (see :mod:`.transactions`) a checkpoint is committed
only once every task is cut (a task created while one is pending joins it),
and what an agent sends after its task's cut waits for the next
transaction; a revocation ends the transaction of every task, kept or
revoked, since a transaction is the slot's.  Where it must abort, the tasks that stay are abandoned and created
again from their last commit, so their records are processed again.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import (
    FencedInstanceIdError,
    KafkaError,
    RebalanceInProgressError,
    RetriableError,
)
from kafka.structs import OffsetAndMetadata

from .. import logs
from ..config import Settings
from ..errors import EX_CANTCREAT, BrokerUnavailable, RunnerError
from ..kafka.admin import leave_group
from ..kafka.assignor import RunnerAssignor
from ..kafka.fixes import io_sleep, reaches_kafka, request_rebalance
from ..kafka.producer import Producer, SendFailed
from ..logs import plural
from ..state.checkpoint import Checkpoint
from ..state.manager import StateManager
from . import transactions
from .context import SlotContext
from .metrics import SlotMetrics
from .queues import Dispatcher
from .status import KAFKA_GRACE, SlotStatus
from .tasks import Task, Tasks
from .timers import Duty
from .transactions import WAITING_TICK, TransactionAborted

log = logging.getLogger(__name__)

POLL_MS = 100
#: How long a cold stop may spend on its last checkpoint and on leaving the group.
COLD_STOP_TIMEOUT = 0.3
#: How often a waiting rebalance listener looks again.
LISTENER_TICK = 0.005
#: How old the consumer's view of its topics may grow: a group leader notices a topic's
#: new partitions (and rebalances) within this long.
METADATA_MAX_AGE_MS = 10000
#: A member hears of a rebalance at its next heartbeat to the group coordinator: at
#: most this long after another member joins or leaves (or a third of the session).
GROUP_HEARTBEAT_MS = 300


class ConsumerLoop:
    """Owns the KafkaConsumer of a slot: feeds the partition queues, takes checkpoints."""

    def __init__(self, settings: Settings, group_id: str, client_id: str,
                 dispatcher: Dispatcher, tasks: Tasks, slot: SlotContext, status: SlotStatus,
                 on_failure: Callable[..., None], assignor: RunnerAssignor,
                 instance_id: str | None, metrics: SlotMetrics | None = None,
                 duty: Duty | None = None) -> None:
        self._settings = settings
        self._metrics = metrics or SlotMetrics()
        self._group_id = group_id
        self._client_id = client_id
        self._instance_id = instance_id
        self._dispatcher = dispatcher
        self._tasks = tasks
        self._slot = slot
        self._producer: Producer = slot.producer
        self._state: StateManager | None = slot.state
        self._status = status
        self._on_failure = on_failure
        self._assignor = assignor
        self._duty = duty or Duty(None)           # the leadership of on_leader timers
        self._consumer: KafkaConsumer | None = None
        self._checkpoint: Checkpoint | None = None
        self._next_checkpoint = 0.0
        self._rebalance = Rebalance(-1)
        self._warmups_asked = -1          # the generation a warm-up rebalance was asked in
        self._committed: dict[TopicPartition, int] = {}
        #: Where partitions revoked in this rebalance restart if it gives them straight
        #: back (kafka-python keeps a position across an eager rebalance): their last
        #: commit.  A later assignment starts from the committed offsets anyway, which
        #: may be newer; so this is forgotten once the rebalance has completed.
        self._rewind: dict[TopicPartition, int] = {}
        self._paused: frozenset[TopicPartition] = frozenset()   # as last seen, for the web
        self._stop_mode: str | None = None       # None, 'warm' or 'cold'
        self._stop_deadline = 0.0
        self._leave = False
        self._outage_logged = False      # the outage under way was logged
        self._outage_seen = False        # Kafka was out of reach since the last transaction
        self.thread = threading.Thread(target=self._run, name='consumer', daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, drain: bool, deadline: float, leave: bool) -> None:
        """Ask the loop to finish: ``drain`` waits (until ``deadline``) for queued records;
        ``leave`` takes this member out of its group (a stop for good), where a static
        member would otherwise keep its partitions for its session timeout.  Once asked to
        leave, it leaves, whatever a later call says; a cold stop stays cold."""
        self._leave = self._leave or leave
        if self._stop_mode == 'cold':
            return
        self._stop_mode = 'warm' if drain else 'cold'
        self._stop_deadline = deadline

    def offsets(self) -> dict[str, object]:
        """Processed and committed offsets (next offset to read) for the web server."""
        def named(offsets: dict[TopicPartition, int]) -> dict[str, int]:
            return {f'{tp.topic}:{tp.partition}': offset for tp, offset in sorted(offsets.items())}
        return {'processed': named(self._dispatcher.processed()),
                'committed': named(dict(self._committed)),
                'rebalances': self._rebalance.count,
                'paused': sorted(f'{tp.topic}:{tp.partition}' for tp in self._paused),
                'queued': named(self._dispatcher.backlog())}

    def lag(self) -> dict[TopicPartition, int]:
        """Per partition with a commit: the log end offset (as last fetched) minus the
        committed offset (for the metrics; read from the web server's thread)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        lag = {}
        for tp, offset in dict(self._committed).items():
            try:
                end = consumer.highwater(tp)
            except (KafkaError, KeyError):     # no longer assigned
                continue
            if end is not None:
                lag[tp] = max(0, end - offset)
        return lag

    def backlog(self) -> dict[TopicPartition, int]:
        """Records queued per partition (see :meth:`Dispatcher.backlog`)."""
        return self._dispatcher.backlog()

    @property
    def rebalances(self) -> int:
        return self._rebalance.count

    def stopped(self) -> dict[str, dict[str, object]]:
        """The partitions stopped at a record their agent raised on, and why, for the web."""
        return {f'{tp.topic}:{tp.partition}': stopped.describe()
                for tp, stopped in sorted(self._dispatcher.stopped().items())}

    def skip(self, tp: TopicPartition, offset: int) -> tuple[int, dict[str, object]]:
        """The operator's ``runner skip``: the record ``tp`` is stopped at (``offset``) goes
        to the dead-letter topic and the partition goes on.  (HTTP status, JSON body)."""
        place = f'{tp.topic}[{tp.partition}]'
        skipped = self._dispatcher.skip(tp, offset)
        if skipped:
            agents = ', '.join(sorted(stopped.agent for stopped in skipped))
            log.warning('the operator skipped %s@%d, which stopped agent %s: it goes to the '
                        'dead-letter topic and the partition goes on', place, offset, agents)
            return 200, {'skipped': f'{place}@{offset}', 'agents': agents}
        stopped = self._dispatcher.stopped().get(tp)
        if stopped is None:
            return 409, {'error': f'{place} is not stopped in this slot'}
        return 409, {'error': f'{place} is stopped at offset {stopped.record.offset}, not '
                              f'{offset}'}

    # -- the loop ------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._consumer = self._create_consumer()
            self._consumer.subscribe(self._dispatcher.topics, listener=_Listener(self))
            self._consumer.topics()        # metadata before joining (see kafka/fixes.py)
            while self._stop_mode is None:
                self._poll_once()
            self._finish()
        except SendFailed as exc:
            self._on_failure(str(exc))
        except RunnerError as exc:
            self._fail_with(exc)
        except FencedInstanceIdError:
            self._on_failure(f'another member joined group {self._group_id} as this slot '
                             f'({self._instance_id}): a copy of its data directory runs '
                             'elsewhere? this slot stops rather than commit in its place',
                             EX_CANTCREAT)
        except Exception as exc:
            log.exception('consumer loop failed')
            self._on_failure(f'consumer loop failed: {exc}')

    def _create_consumer(self) -> KafkaConsumer:
        settings = self._settings
        session_ms = int(settings.session_timeout * 1000)
        return KafkaConsumer(
            **settings.kafka_client(),
            group_id=self._group_id,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset='earliest',
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(min(session_ms // 3, GROUP_HEARTBEAT_MS), 100),
            group_instance_id=self._instance_id,
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            partition_assignment_strategy=[self._assignor],
            bootstrap_timeout_ms=int(settings.broker_timeout * 1000),
            isolation_level='read_committed' if self._producer.transactional
            else 'read_uncommitted',
        )

    def _poll_once(self) -> None:
        for tp, records in self._fetch().items():
            self._dispatcher.dispatch(tp, records)
        self._waiting_for_kafka()
        self._activate_recovered()
        assignment = frozenset(self._consumer.assignment())
        if self._assignor.generation != self._rebalance.generation:
            self._rebalanced(assignment)
        self._publish_membership(assignment)
        self._apply_backpressure(assignment)
        self._advance_checkpoint()
        self._ask_for_warm_tasks()

    def _fetch(self) -> dict[TopicPartition, list]:
        """The records of one ``poll()``.  While the broker is away, kafka-python's
        ``poll()`` may raise a retriable error where it would time out: looking for the
        group coordinator, a refused connection makes it wait for a metadata refresh,
        which fails the same way and escapes (seen in ``bench/soak.py``'s broker
        restart).  With the coordinator unknown that is the outage the slot rides out
        (see :meth:`_waiting_for_kafka`), so nothing is fetched this round."""
        try:
            return self._consumer.poll(timeout_ms=POLL_MS)
        except RetriableError as exc:
            if reaches_kafka(self._consumer):
                raise
            log.debug('poll() failed while Kafka cannot be reached: %s', exc)
            return {}

    def _activate_recovered(self) -> None:
        """Give recovered table partitions to their tasks; hand out tasks that are ready."""
        if self._state is None:
            return
        recovered = self._state.take_recovered()
        if not recovered:
            return
        tasks = {key: task for task in self._tasks for key in task.keys}
        for key, partition in recovered:
            task = tasks[key]
            task.partitions[partition.table.name] = partition
            self._slot.active[key] = partition
            if task.ready:
                self._dispatcher.unhold(task.queues)

    def _rebalanced(self, assignment: frozenset[TopicPartition]) -> None:
        """A rebalance completed: standbys and owners as assigned, and one line in the log."""
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

    def _ask_for_warm_tasks(self) -> None:
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
            request_rebalance(self._consumer)

    def _publish_membership(self, assignment: frozenset[TopicPartition]) -> None:
        meta = self._consumer.group_metadata()
        self._status.group_state = meta.state
        self._status.generation = meta.generation_id
        self._status.assignment = assignment
        self._status.beat()

    def _apply_backpressure(self, assignment: frozenset[TopicPartition]) -> None:
        """Pause partitions holding more than their share of ``max_inflight`` queued records
        (or whose tables are recovering, or stopped at a record); resume them at half their
        share."""
        share = max(1, self._settings.max_inflight // max(1, len(assignment)))
        backlog = self._dispatcher.backlog()
        paused = self._consumer.paused()
        stopping = self._stop_mode is not None
        waiting = {tp for task in self._tasks if not task.ready for tp in task.sources}
        waiting.update(self._dispatcher.stopped())

        def blocked(tp: TopicPartition, limit: int) -> bool:
            return stopping or tp in waiting or backlog.get(tp, 0) >= limit
        pause = {tp for tp in assignment if tp not in paused and blocked(tp, share)}
        resume = {tp for tp in paused if not blocked(tp, share // 2 + 1)}
        if pause:
            self._consumer.pause(*pause)
        if resume:
            self._consumer.resume(*resume)
        self._paused = frozenset((paused - resume) | pause)

    # -- checkpoints (this thread) -------------------------------------------

    def _advance_checkpoint(self) -> None:
        now = time.monotonic()
        if self._checkpoint is None and now >= self._next_checkpoint:
            self._next_checkpoint = now + self._settings.commit_interval
            self._checkpoint = self._new_checkpoint(self._next_checkpoint)
            self._checkpoint.request(self._tasks.active())
        checkpoint = self._checkpoint
        if checkpoint is None:
            return
        if self._producer.transactional:
            if checkpoint.complete():
                self._checkpoint = None
                self._transact(checkpoint)
                # counted from the end of the transaction: its changelog records cost in
                # proportion to how often it commits
                self._next_checkpoint = time.monotonic() + self._settings.commit_interval
            elif now >= checkpoint.deadline:
                checkpoint.deadline = now + self._settings.revoke_timeout
                log.warning('checkpoint waiting for %s: under exactly-once no commit is made '
                            'while an agent is inside a record',
                            _names(task for task in self._tasks if not checkpoint.has_cut([task])))
        elif checkpoint.complete() or now >= checkpoint.deadline:
            self._checkpoint = None
            self._commit(checkpoint)

    def _new_checkpoint(self, deadline: float) -> Checkpoint:
        producer = self._producer
        return Checkpoint(deadline, producer.transaction if producer.transactional else None)

    def _transact(self, checkpoint: Checkpoint) -> None:
        """Close a complete checkpoint and end its transaction, blocking this thread."""
        checkpoint.close()
        if checkpoint.empty and not self._producer.written:
            self._producer.renumber()       # nothing to commit
        elif not self._still_member():
            self._producer.renumber()       # deferred: the next cut takes this one's along
        else:
            self._status.committing = time.monotonic()
            try:
                with self._metrics.checkpoint_seconds.time():
                    transactions.run(self._transaction(checkpoint, self._tasks.active),
                                     self._settings.commit_timeout, self._waiting_for_kafka)
            except transactions.TransactionStuck as exc:
                if not (self._outage_seen and exc.uncommitted and self._producer.idle()):
                    raise
                log.warning('%s after Kafka was out of reach: a new producer aborts the '
                            'transaction; the records since the last commit are processed '
                            'again', exc)
                transactions.start_over(checkpoint, self._producer,
                                        lambda: self._reprocess(self._tasks.active()))
            finally:
                self._status.committing = None
            self._outage_seen = False

    def _transaction(self, checkpoint: Checkpoint,
                     again: Callable[[], list[Task]]) -> transactions.Steps:
        """Commit the checkpoint's transaction; if it cannot be, abort it and read the
        tasks ``again()`` returns from their last commit."""
        assert checkpoint.has_cut(again()), 'a task of the slot is missing from its commit'
        offsets = checkpoint.offsets()
        try:
            yield from transactions.commit(checkpoint, self._producer, _commit_request(offsets),
                                           self._consumer.group_metadata)
        except TransactionAborted as exc:
            log.warning('aborting the transaction: %s; the records since the last commit are '
                        'processed again', exc)
            self._metrics.transactions.labels('aborted').inc()
            yield from transactions.abort(checkpoint, self._producer,
                                          lambda: self._reprocess(again()))
        else:
            self._metrics.transactions.labels('committed').inc()
            self._counted_commit(checkpoint, offsets)

    def _commit(self, checkpoint: Checkpoint) -> None:
        """Close the checkpoint and drive its steps, blocking this thread."""
        busy = checkpoint.close()
        if busy:
            log.info('checkpoint without %s: %s', plural(len(busy), 'busy task'), _names(busy))
        if checkpoint.empty or not self._still_member():
            return
        with self._metrics.checkpoint_seconds.time():
            self._drive(checkpoint)

    def _drive(self, checkpoint: Checkpoint) -> None:
        """The checkpoint's steps, blocking this thread."""
        timeout = self._settings.commit_timeout
        for step, value in checkpoint.steps(self._producer):
            if step == 'barrier':
                self._wait(lambda epoch=value: self._producer.wait(epoch, WAITING_TICK),
                           'the records sent to be acknowledged')
            else:
                self._wait(lambda: reaches_kafka(self._consumer), 'the group coordinator')
                try:
                    self._consumer.commit(_commit_request(value), timeout_ms=int(timeout * 1000))
                except FencedInstanceIdError:
                    raise
                except RebalanceInProgressError:
                    log.info('offset commit deferred: the group is rebalancing')
                except KafkaError as exc:
                    log.warning('offset commit failed, will retry: %s', exc)
                else:
                    self._record_commit(checkpoint, value)

    def _wait(self, done: Callable[[], bool], what: str) -> None:
        """Block until ``done()``, for ``commit_timeout`` seconds of Kafka answering (an
        outage up to ``broker_outage_limit`` is waited through, not counted)."""
        timeout = self._settings.commit_timeout
        if not transactions.block_until(done, timeout, self._waiting_for_kafka):
            raise SendFailed(f'waited {timeout:g}s for {what} (commit_timeout)')

    def _waiting_for_kafka(self) -> bool:
        """Whether the slot cannot reach Kafka now (its group coordinator is unknown), as
        the status tells; BrokerUnavailable once that has lasted ``broker_outage_limit``."""
        status, now = self._status, time.monotonic()
        if reaches_kafka(self._consumer):
            if self._outage_logged:
                log.info('Kafka was away for %.0fs; %s of the Kafka client kept at debug level',
                         now - status.kafka_lost,
                         plural(logs.connection_errors_suppressed(), 'connection error'))
            status.kafka_lost, self._outage_logged = None, False
            return False
        status.beat()           # the loop is waiting for Kafka, not stalled
        self._outage_seen = True
        if status.kafka_lost is None:
            status.kafka_lost = now
        elif now - status.kafka_lost >= self._settings.broker_outage_limit:
            raise BrokerUnavailable(f'Kafka could not be reached for '
                                    f'{self._settings.broker_outage_limit:g}s '
                                    '(broker_outage_limit); the slot starts again')
        elif not self._outage_logged and now - status.kafka_lost >= KAFKA_GRACE:
            self._outage_logged = True
            log.warning('Kafka cannot be reached; the slot keeps its state and waits (at '
                        'most broker_outage_limit, %gs)', self._settings.broker_outage_limit)
        return True

    def _still_member(self) -> bool:
        """Whether this member is still in the generation of its last assignment (an
        expelled member must not write to changelogs that now belong to others)."""
        generation = self._consumer.group_metadata().generation_id
        if generation != self._assignor.generation:   # normal while it rejoins its group
            log.info('checkpoint deferred: this member is in generation %d, its last '
                     'assignment was for %d', generation, self._assignor.generation)
        return generation == self._assignor.generation

    def _record_commit(self, checkpoint: Checkpoint, offsets: dict[TopicPartition, int]) -> None:
        checkpoint.committed()
        self._counted_commit(checkpoint, offsets)

    def _counted_commit(self, checkpoint: Checkpoint, offsets: dict[TopicPartition, int]) -> None:
        """The checkpoint's offsets are committed: remembered, and counted."""
        self._committed.update(offsets)
        self._metrics.offsets_committed.inc(len(offsets))
        self._metrics.changelog_records.inc(checkpoint.changelog_records)

    def _finish(self) -> None:
        """Stop fetching, let the agents finish (warm), then leave the group: the listener
        takes the last checkpoint as the partitions are revoked."""
        self._consumer.pause(*self._consumer.assignment())
        while self._stop_mode == 'warm' and not self._dispatcher.idle():
            if time.monotonic() >= self._stop_deadline:
                log.warning('records still in progress at the shutdown deadline; '
                            'they will be processed again by the next owner')
                break
            self._consumer.poll(timeout_ms=POLL_MS)
            self._advance_checkpoint()
            self._status.beat()
        timeout = COLD_STOP_TIMEOUT if self._stop_mode == 'cold' else self._settings.revoke_timeout
        self._consumer.close(autocommit=False, timeout_ms=int(timeout * 1000))
        if self._leave and self._instance_id:
            leave_group(self._settings.kafka_client(), max(timeout, 1.0), self._client_id,
                        self._group_id, self._instance_id)

    # -- rebalancing (kafka-python's IO thread) --------------------------------

    async def _revoke(self, tps: Iterable[TopicPartition], lost: bool) -> None:
        """Fence the partitions, take the last cut of their tasks, commit, retire them."""
        self._status.group_state = '<rebalancing>'
        began = time.monotonic()
        tps = set(tps)
        if self._duty.revoked(tps) and not await self._awaited(    # before the handover
                self._duty.idle, 0.0 if lost else self._revoke_wait()):
            log.warning('an on_leader timer tick is still running as the lead is handed over')
        tasks = self._take_away(tps)
        if lost:          # others may own them now: this member no longer claims them
            self._assignor.forget(tps)
        checkpoint, self._checkpoint = self._checkpoint or self._new_checkpoint(0.0), None
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

    def _keep_the_rest(self, tasks: list[Task], revoked: set[TopicPartition]) -> None:
        """A task that lost only some of its partitions (a topic of its group changed its
        partition count) goes on with the others, read again from its last cut."""
        staying = {tp for task in tasks for tp in task.sources} - revoked
        if staying:
            self._read_again(tasks, staying)

    def _take_away(self, tps: set[TopicPartition]) -> list[Task]:
        """Fence the queues of ``tps`` and remove their tasks (and recoveries under way)."""
        self._dispatcher.revoke(tps)
        tasks = self._tasks.revoke(tps)
        if self._state is not None:
            self._state.cancel(key for task in tasks if not task.ready for key in task.keys)
        return tasks

    def _read_again(self, tasks: list[Task], tps: set[TopicPartition]) -> None:
        """New tasks for ``tps``, whose sources are read again from where ``tasks`` (the
        ones they replace) last committed them."""
        for task in tasks:
            for tp, offset in task.restart_offsets().items():
                if tp in tps:
                    self._consumer.seek(tp, offset)
        self._create_tasks(tps)

    async def _last_checkpoint(self, checkpoint: Checkpoint, tasks: list[Task]) -> None:
        """The final cut of revoked tasks, committed; tasks still busy are abandoned."""
        checkpoint.request(tasks, final=True)
        wait = self._revoke_wait()
        await self._awaited(lambda: checkpoint.has_cut(tasks), wait)
        busy = [task for task in checkpoint.close() if task in tasks]
        self._abandon(busy, f'still busy after {wait:.1f}s')
        try:
            await self._commit_revoked(checkpoint)
        except SendFailed as exc:
            self._on_failure(str(exc))

    async def _last_transaction(self, checkpoint: Checkpoint, revoked: list[Task],
                                lost: bool) -> None:
        """Revocation under exactly-once: cut every task (the transaction is the slot's),
        commit it, and abort it instead if a task stays busy or the membership is lost."""
        kept = self._tasks.active()
        checkpoint.request(revoked, final=True)
        checkpoint.request(kept)
        wait = 0.0 if lost else self._revoke_wait()
        await self._awaited(lambda: checkpoint.has_cut([*revoked, *kept]), wait)
        busy = checkpoint.close()
        try:
            if busy or lost:
                self._abandon(revoked, 'this member lost its membership' if lost else
                              f'{_names(busy)} still busy after {wait:.1f}s')
                steps = self._aborted(checkpoint, kept)
            else:
                steps = self._transaction(checkpoint, self._tasks.active)
            await transactions.run_awaited(steps, self._commit_timeout(), self._awaited)
        except RunnerError as exc:
            self._fail_with(exc)

    def _fail_with(self, exc: RunnerError) -> None:
        """Stop the slot for ``exc``; a fence may turn out to be the broker's abort of a
        transaction that outlived its timeout (then the slot starts again)."""
        if isinstance(exc, transactions.ProducerFenced):
            exc = transactions.fenced_or_timed_out(exc, self._producer, self._status.awake_since)
        log.error('%s', exc)
        self._on_failure(str(exc), exc.exit_code)

    def _aborted(self, checkpoint: Checkpoint, kept: list[Task]) -> transactions.Steps:
        log.warning('aborting the transaction; the records since the last commit are '
                    'processed again')
        yield from transactions.abort(checkpoint, self._producer, lambda: self._reprocess(kept))

    def _commit_timeout(self) -> float:
        return COLD_STOP_TIMEOUT if self._stop_mode == 'cold' else self._settings.commit_timeout

    def _revoke_wait(self) -> float:
        """How long a revocation waits for busy tasks: less when the slot is stopping."""
        if self._stop_mode == 'cold':
            return 0.0
        if self._stop_mode == 'warm':
            return max(0.0, min(self._settings.revoke_timeout,
                                self._stop_deadline - time.monotonic()))
        return self._settings.revoke_timeout

    def _abandon(self, tasks: list[Task], why: str) -> None:
        for task in tasks:
            task.finished = True
        if tasks:
            log.warning('abandoning %s (%s): not committed, their records will be processed '
                        'again by the next owner', _names(tasks), why)

    async def _commit_revoked(self, checkpoint: Checkpoint) -> None:
        """Drive the checkpoint's steps, awaiting instead of blocking the IO thread."""
        if checkpoint.empty:
            return
        timeout = self._commit_timeout()
        for step, value in checkpoint.steps(self._producer):
            if step == 'barrier':
                if not await self._awaited(lambda epoch=value: self._producer.acknowledged(epoch),
                                           timeout):
                    raise SendFailed(f'records sent were not acknowledged within {timeout:g}s')
                continue
            future = self._consumer.commit_async(_commit_request(value))
            if not await self._awaited(lambda done=future: done.is_done, timeout):
                log.warning('commit on revocation not answered within %gs; the next owner '
                            'resumes from the last commit', timeout)
            elif future.failed():
                log.warning('commit on revocation failed; the next owner resumes from the '
                            'last commit: %s', future.exception)
            else:
                self._record_commit(checkpoint, value)
                log.info('committed %s', plural(len(value), 'revoked partition'))

    async def _awaited(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Await ``condition`` on the IO loop; False if it is not true within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline:
                return False
            await io_sleep(self._consumer, LISTENER_TICK)
        return True

    def _retire(self, task: Task) -> None:
        """Forget a revoked task; its stores close once no agent is inside it."""
        for key in task.keys:
            self._slot.active.pop(key, None)
        for tp in task.sources:
            self._committed.pop(tp, None)

        held = [(partition.table.changelog.name, task.number)
                for partition in task.partitions.values()]

        def release() -> None:
            for key in held:
                self._state.stores.release(key)
        if held:
            task.retire(release)

    def _assign(self, tps: Iterable[TopicPartition]) -> None:
        """New tasks: their queues (held while tables recover) and a rewind to the last
        commit for partitions this slot had before."""
        tps = set(tps)
        for tp in tps & self._rewind.keys():
            self._consumer.seek(tp, self._rewind[tp])
        self._create_tasks(tps)
        self._duty.assigned(tps, self._assignor.generation)
        self._rebalance.assigned(tps)
        self._metrics.partitions_assigned.inc(len(tps))

    def _create_tasks(self, tps: set[TopicPartition]) -> None:
        """Queues for ``tps``, in new tasks or in tasks this slot has (a partition that joins
        a task whose other partitions stay); the tables of new tasks are recovered.  New
        tasks join a pending checkpoint: under exactly-once what they send before their cut
        goes into the transaction it commits, so it must carry their offsets."""
        added = sorted(tp for tp in tps if self._tasks.task_of(tp) is None)
        tasks = self._tasks.assign(added)
        for tp in added:
            task = self._tasks.task_of(tp)
            task.queues += self._dispatcher.assign(tp, task, held=not task.ready)
        if self._checkpoint is not None:     # it commits what they send before their cut
            self._checkpoint.request(tasks)
        if self._state is not None:
            self._state.recover([key for task in tasks for key in task.keys])

    def _reprocess(self, tasks: list[Task]) -> None:
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


class _Listener(AsyncConsumerRebalanceListener):
    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._loop._revoke(revoked, lost=False)

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        await self._loop._revoke(lost, lost=True)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._loop._assign(assigned)


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
            '(see "Changing partition counts" in the README)')


def _partitions(tps: set[TopicPartition]) -> str:
    return ', '.join(f'{tp.topic}:{tp.partition}' for tp in sorted(tps)) or 'none'


def _commit_request(offsets: dict[TopicPartition, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {tp: OffsetAndMetadata(offset, '', -1) for tp, offset in offsets.items()}


def _names(tasks: Iterable[Task]) -> str:
    return ', '.join(sorted(', '.join(f'{tp.topic}:{tp.partition}' for tp in task.sources)
                            or repr(task) for task in tasks))
