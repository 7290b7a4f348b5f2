"""The slot's checkpoints: opened every ``commit_interval``, committed by the consumer thread.

A checkpoint collects the cut of every task (made at a record boundary, see
:mod:`runner.state.checkpoint`) and is committed once every task is cut — or
when the interval is over, without the tasks that could not be cut, such as
one whose agent is stuck inside a record.  So offsets are committed at least
once per commit interval, whatever the load.

Under exactly-once (see :mod:`.transactions`) a checkpoint is committed only
once every task is cut (a task created while one is pending joins it), as one
Kafka transaction; where that transaction cannot be committed it is aborted,
and the tasks it asked for are read again from their last commit (the
``reprocess`` the rebalance handling gives, see :mod:`.rebalances`).

The consumer thread drives checkpoints here, blocking; the rebalance listener
takes the pending one and drives its last steps awaiting (see
:mod:`.rebalances`).  The two never run at once: kafka-python runs the
listener while the consumer thread waits inside ``poll()``.
"""

import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import FencedInstanceIdError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata

from ..config import Settings
from ..errors import RunnerError
from ..kafka.assignor import RunnerAssignor
from ..kafka.fixes import reaches_kafka
from ..kafka.producer import Producer, SendFailed
from ..logs import plural
from ..state.checkpoint import Checkpoint
from . import transactions
from .metrics import SlotMetrics
from .outage import KafkaOutage
from .status import SlotStatus
from .tasks import Task, Tasks, names
from .transactions import WAITING_TICK, TransactionAborted

#: The consumer loop's logger: its lines keep one name whichever part logs them.
log = logging.getLogger('runner.runtime.consumer')

#: Awaits a condition on kafka-python's IO loop: True once it holds, False after the timeout.
Awaited = Callable[[Callable[[], bool], float], Awaitable[bool]]


class Checkpoints:
    """Opens the slot's checkpoints and commits them: offsets, or one transaction each."""

    def __init__(self, settings: Settings, tasks: Tasks, producer: Producer,
                 assignor: RunnerAssignor, status: SlotStatus, metrics: SlotMetrics,
                 outage: KafkaOutage, on_failure: Callable[..., None],
                 reprocess: Callable[[list[Task]], None]) -> None:
        self._settings = settings
        self._tasks = tasks
        self._producer = producer
        self._assignor = assignor
        self._status = status
        self._metrics = metrics
        self._outage = outage
        self._on_failure = on_failure
        self._reprocess = reprocess
        #: Set by the consumer loop once it has created its consumer.
        self.consumer: KafkaConsumer | None = None
        #: The offsets committed per partition (the next offset to read).
        self.committed: dict[TopicPartition, int] = {}
        self._pending: Checkpoint | None = None
        self._next_checkpoint = 0.0

    # -- the consumer thread -------------------------------------------------

    def advance(self) -> None:
        """Open a checkpoint when one is due; commit the pending one once it may be."""
        now = time.monotonic()
        if self._pending is None and now >= self._next_checkpoint:
            self._next_checkpoint = now + self._settings.commit_interval
            self._pending = self.new(self._next_checkpoint)
            self._pending.request(self._tasks.active())
        checkpoint = self._pending
        if checkpoint is None:
            return
        if self._producer.transactional:
            self._advance_transaction(checkpoint, now)
        elif checkpoint.complete() or now >= checkpoint.deadline:
            self._pending = None
            self._commit(checkpoint)

    def _advance_transaction(self, checkpoint: Checkpoint, now: float) -> None:
        """Exactly-once: commit only once every task is cut; say which ones it waits for."""
        if checkpoint.complete():
            self._pending = None
            self._transact(checkpoint)
            # counted from the end of the transaction: its changelog records cost in
            # proportion to how often it commits
            self._next_checkpoint = time.monotonic() + self._settings.commit_interval
        elif now >= checkpoint.deadline:
            checkpoint.deadline = now + self._settings.revoke_timeout
            log.warning('checkpoint waiting for %s: under exactly-once no commit is made '
                        'while an agent is inside a record',
                        names(task for task in self._tasks if not checkpoint.has_cut([task])))

    def new(self, deadline: float) -> Checkpoint:
        """A checkpoint to commit by ``deadline`` (in the open transaction, if any)."""
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
                    transactions.run(self.transaction(checkpoint, self._tasks.active),
                                     self._settings.commit_timeout,
                                     self._outage.waiting_for_kafka)
            except transactions.TransactionStuck as exc:
                self._start_over(checkpoint, exc)
            except transactions.ProducerFenced as exc:
                self._start_over_timed_out(checkpoint, exc)
            finally:
                self._status.committing = None
            self._outage.seen = False

    def _start_over(self, checkpoint: Checkpoint, stuck: transactions.TransactionStuck) -> None:
        """A transaction stuck after an outage, surely not committed, with nothing being
        sent: a new producer aborts it.  Any other stuck transaction stops the slot."""
        if not (self._outage.seen and stuck.uncommitted and self._producer.idle()):
            raise stuck
        log.warning('%s after Kafka was out of reach: a new producer aborts the '
                    'transaction; the records since the last commit are processed '
                    'again', stuck)
        transactions.start_over(checkpoint, self._producer,
                                lambda: self._reprocess(self._tasks.active()))

    def _start_over_timed_out(self, checkpoint: Checkpoint,
                              fenced: transactions.ProducerFenced) -> None:
        """Back from an outage longer than the transaction timeout, the broker has aborted
        the open transaction and bumped the producer's epoch, which fences it: a new
        producer takes the next epoch and the records since the last commit are processed
        again, as the slot's restart would do.  A fence that may be a newer incarnation's
        (see :func:`~.transactions.fenced_or_timed_out`) stops the slot."""
        timed_out = transactions.fenced_or_timed_out(fenced, self._producer,
                                                      self._status.awake_since)
        if not (self._outage.seen and isinstance(timed_out, transactions.TransactionTimedOut)
                and self._producer.idle()):
            raise fenced
        log.warning('the broker aborted the open transaction after Kafka was out of reach (it '
                    'was open for %.0fs, longer than its timeout): a new producer takes over; '
                    'the records since the last commit are processed again',
                    self._producer.transaction_age())
        transactions.start_over(checkpoint, self._producer,
                                lambda: self._reprocess(self._tasks.active()))

    def _commit(self, checkpoint: Checkpoint) -> None:
        """Close the checkpoint and drive its steps, blocking this thread."""
        busy = checkpoint.close()
        if busy:
            log.info('checkpoint without %s: %s', plural(len(busy), 'busy task'), names(busy))
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
                self._wait(lambda: reaches_kafka(self.consumer), 'the group coordinator')
                try:
                    self.consumer.commit(_commit_request(value), timeout_ms=int(timeout * 1000))
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
        if not transactions.block_until(done, timeout, self._outage.waiting_for_kafka):
            raise SendFailed(f'waited {timeout:g}s for {what} (commit_timeout)')

    def _still_member(self) -> bool:
        """Whether this member is still in the generation of its last assignment (an
        expelled member must not write to changelogs that now belong to others)."""
        generation = self.consumer.group_metadata().generation_id
        if generation != self._assignor.generation:   # normal while it rejoins its group
            log.info('checkpoint deferred: this member is in generation %d, its last '
                     'assignment was for %d', generation, self._assignor.generation)
        return generation == self._assignor.generation

    # -- for the rebalances (the listener, or a reprocess on the consumer thread) ----

    def take(self) -> Checkpoint:
        """The pending checkpoint, or a new one due at once; no longer pending either way
        (the caller closes it)."""
        checkpoint, self._pending = self._pending or self.new(0.0), None
        return checkpoint

    def join(self, tasks: list[Task]) -> None:
        """New tasks join the pending checkpoint, if any: under exactly-once what they send
        before their cut goes into the transaction it commits, so it must carry their
        offsets."""
        if self._pending is not None:
            self._pending.request(tasks)

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions no longer assigned: their commits are no longer this slot's to show."""
        for tp in tps:
            self.committed.pop(tp, None)

    async def commit_awaited(self, checkpoint: Checkpoint, timeout: float,
                             awaited: Awaited) -> None:
        """Drive the checkpoint's steps, awaiting instead of blocking the IO thread; records
        not acknowledged in time stop the slot."""
        try:
            await self._commit_awaited(checkpoint, timeout, awaited)
        except SendFailed as exc:
            self._on_failure(str(exc))

    async def _commit_awaited(self, checkpoint: Checkpoint, timeout: float,
                              awaited: Awaited) -> None:
        if checkpoint.empty:
            return
        for step, value in checkpoint.steps(self._producer):
            if step == 'barrier':
                if not await awaited(lambda epoch=value: self._producer.acknowledged(epoch),
                                     timeout):
                    raise SendFailed(f'records sent were not acknowledged within {timeout:g}s')
                continue
            future = self.consumer.commit_async(_commit_request(value))
            if not await awaited(lambda done=future: done.is_done, timeout):
                log.warning('commit on revocation not answered within %gs; the next owner '
                            'resumes from the last commit', timeout)
            elif future.failed():
                log.warning('commit on revocation failed; the next owner resumes from the '
                            'last commit: %s', future.exception)
            else:
                self._record_commit(checkpoint, value)
                log.info('committed %s', plural(len(value), 'revoked partition'))

    # -- either thread (never both at once) ---------------------------------

    def transaction(self, checkpoint: Checkpoint,
                    again: Callable[[], list[Task]]) -> transactions.Steps:
        """Commit the checkpoint's transaction; if it cannot be, abort it and read the
        tasks ``again()`` returns from their last commit."""
        assert checkpoint.has_cut(again()), 'a task of the slot is missing from its commit'
        offsets = checkpoint.offsets()
        try:
            yield from transactions.commit(checkpoint, self._producer, _commit_request(offsets),
                                           self.consumer.group_metadata)
        except TransactionAborted as exc:
            log.warning('aborting the transaction: %s; the records since the last commit are '
                        'processed again', exc)
            self._metrics.transactions.labels('aborted').inc()
            yield from transactions.abort(checkpoint, self._producer,
                                          lambda: self._reprocess(again()))
        else:
            self._metrics.transactions.labels('committed').inc()
            self._counted_commit(checkpoint, offsets)

    def aborted(self, checkpoint: Checkpoint, kept: list[Task]) -> transactions.Steps:
        """Abort the checkpoint's transaction; the tasks ``kept`` are read again from their
        last commit."""
        log.warning('aborting the transaction; the records since the last commit are '
                    'processed again')
        yield from transactions.abort(checkpoint, self._producer, lambda: self._reprocess(kept))

    def fail(self, exc: RunnerError) -> None:
        """Stop the slot for ``exc``; a fence may turn out to be the broker's abort of a
        transaction that outlived its timeout (then the slot starts again)."""
        if isinstance(exc, transactions.ProducerFenced):
            exc = transactions.fenced_or_timed_out(exc, self._producer, self._status.awake_since)
        log.error('%s', exc)
        self._on_failure(str(exc), exc.exit_code)

    def _record_commit(self, checkpoint: Checkpoint, offsets: dict[TopicPartition, int]) -> None:
        checkpoint.committed()
        self._counted_commit(checkpoint, offsets)

    def _counted_commit(self, checkpoint: Checkpoint, offsets: dict[TopicPartition, int]) -> None:
        """The checkpoint's offsets are committed: remembered, and counted."""
        self.committed.update(offsets)
        self._metrics.offsets_committed.inc(len(offsets))
        self._metrics.changelog_records.inc(checkpoint.changelog_records)


def _commit_request(offsets: dict[TopicPartition, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {tp: OffsetAndMetadata(offset, '', -1) for tp, offset in offsets.items()}
