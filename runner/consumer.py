"""The consumer thread: the only thread that polls, pauses, resumes and commits.

Commit ordering (the at-least-once invariant): offsets are read from the
partition queues first (only records an agent has finished are marked) and,
for tables, under each partition's guard together with its unflushed writes;
then changelog records are sent and the producer is flushed (so everything
those records produced is written); only then are the offsets committed, and
last the table values are written to LevelDB.  A failed send stops the slot
before any offset past it is committed.

The rebalance listener runs on kafka-python's IO thread, where a blocking
consumer call raises; it only touches the dispatcher and the table state, and
awaits the async commit.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from . import kafka_fixes  # noqa: F401 - patches kafka-python on import
from .assignor import RunnerAssignor
from .config import Settings
from .producer import Producer, SendFailed
from .queues import Dispatcher, PartitionQueue, by_partition, committable, resume_offsets
from .state import Cut, Processed, StateManager
from .status import SlotStatus

log = logging.getLogger(__name__)

POLL_MS = 100
#: Upper bound for one flush-and-commit; the consumer keeps its membership meanwhile.
COMMIT_TIMEOUT = 30.0
#: How long a cold stop may spend on its final commit and on leaving the group.
COLD_STOP_TIMEOUT = 0.3


class ConsumerLoop:
    """Owns the KafkaConsumer of a slot and feeds the agents' partition queues."""

    def __init__(self, settings: Settings, group_id: str, client_id: str,
                 dispatcher: Dispatcher, producer: Producer, status: SlotStatus,
                 on_failure: Callable[..., None], assignor: RunnerAssignor,
                 state: StateManager | None = None) -> None:
        self._settings = settings
        self._group_id = group_id
        self._client_id = client_id
        self._dispatcher = dispatcher
        self._producer = producer
        self._status = status
        self._on_failure = on_failure
        self._assignor = assignor
        self._state = state
        self._consumer: KafkaConsumer | None = None
        self._committed: dict[TopicPartition, int] = {}
        self._resume_at: dict[TopicPartition, int] = {}
        self._held: set[int] = set()
        self._paused: frozenset[TopicPartition] = frozenset()   # as last seen, for the web
        self._stop_mode: str | None = None       # None, 'warm' or 'cold'
        self._stop_deadline = 0.0
        self._last_commit = 0.0
        self.thread = threading.Thread(target=self._run, name='consumer', daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, drain: bool, deadline: float) -> None:
        """Ask the loop to finish: ``drain`` waits (until ``deadline``) for queued records."""
        if self._stop_mode == 'cold':
            return
        self._stop_mode = 'warm' if drain else 'cold'
        self._stop_deadline = deadline

    def offsets(self) -> dict[str, dict[str, int]]:
        """Processed and committed offsets (next offset to read) for the web server."""
        def named(offsets: dict[TopicPartition, int]) -> dict[str, int]:
            return {f'{tp.topic}:{tp.partition}': offset for tp, offset in sorted(offsets.items())}
        return {'processed': named(self._dispatcher.processed()),
                'committed': named(dict(self._committed)),
                'paused': sorted(f'{tp.topic}:{tp.partition}' for tp in self._paused),
                'queued': named(self._dispatcher.backlog())}

    def _run(self) -> None:
        try:
            self._consumer = self._create_consumer()
            self._consumer.subscribe(self._dispatcher.topics, listener=_Listener(self))
            self._load_metadata()
            while self._stop_mode is None:
                self._poll_once()
            self._finish()
        except SendFailed as exc:
            self._on_failure(str(exc))
        except Exception as exc:
            log.exception('consumer loop failed')
            self._on_failure(f'consumer loop failed: {exc}')

    def _create_consumer(self) -> KafkaConsumer:
        settings = self._settings
        session_ms = int(settings.session_timeout * 1000)
        return KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers(),
            group_id=self._group_id,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset='earliest',
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(session_ms // 3, 100),
            partition_assignment_strategy=[self._assignor],
            bootstrap_timeout_ms=int(settings.broker_timeout * 1000),
        )

    def _load_metadata(self) -> None:
        """Fetch metadata once subscribed and before joining.

        Without it the first assignment is computed without partitions, or the
        leader notices "new" metadata right after it and rebalances again.
        """
        self._consumer.topics()

    def _poll_once(self) -> None:
        batches = self._consumer.poll(timeout_ms=POLL_MS)
        for tp, records in batches.items():
            self._dispatcher.dispatch(tp, records)
        self._release_recovered()
        assignment = frozenset(self._consumer.assignment())
        self._publish_membership(assignment)
        self._apply_backpressure(assignment)
        if time.monotonic() >= self._last_commit + self._settings.commit_interval:
            self._commit()

    def _release_recovered(self) -> None:
        """Hand out the records of partitions whose tables finished recovering."""
        if self._state is not None:
            done = self._state.take_recovered() & self._held
            if done:
                self._held -= done
                self._dispatcher.unhold(done)

    def _publish_membership(self, assignment: frozenset[TopicPartition]) -> None:
        meta = self._consumer.group_metadata()
        self._status.group_state = meta.state
        self._status.generation = meta.generation_id
        self._status.assignment = assignment
        self._status.beat()

    def _apply_backpressure(self, assignment: frozenset[TopicPartition]) -> None:
        """Pause partitions with too many queued records (or recovering tables); resume at half."""
        high = self._settings.max_inflight
        backlog = self._dispatcher.backlog()
        paused = self._consumer.paused()
        stopping = self._stop_mode is not None

        def blocked(tp: TopicPartition, limit: int) -> bool:
            return stopping or tp.partition in self._held or backlog.get(tp, 0) >= limit
        pause = {tp for tp in assignment if tp not in paused and blocked(tp, high)}
        resume = {tp for tp in paused if not blocked(tp, high // 2 + 1)}
        if pause:
            self._consumer.pause(*pause)
        if resume:
            self._consumer.resume(*resume)
        self._paused = frozenset((paused - resume) | pause)

    # -- committing ---------------------------------------------------------

    def _commit(self, timeout: float = COMMIT_TIMEOUT) -> None:
        """Cut, send changelogs, flush, commit offsets, write table stores."""
        self._last_commit = time.monotonic()
        numbers = {tp.partition for tp in self._consumer.assignment()}
        cut = self._cut(self._dispatcher.processed, numbers)
        offsets = self._uncommitted(cut.offsets)
        if not offsets and not cut.changes:
            return
        cut.send(self._producer)
        self._producer.flush(timeout)
        if offsets:
            try:
                self._consumer.commit(_commit_request(offsets), timeout_ms=int(timeout * 1000))
                self._committed.update(offsets)
            except KafkaError as exc:
                log.warning('offset commit failed, will retry: %s', exc)
        cut.store()

    def _cut(self, processed: Processed, numbers: set[int]) -> Cut:
        if self._state is None:
            return Cut(offsets=processed(numbers))
        return self._state.cut(processed, numbers)

    def _uncommitted(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        return {tp: offset for tp, offset in offsets.items()
                if offset > self._committed.get(tp, -1)}

    def _finish(self) -> None:
        """Stop fetching, let the agents finish (warm), commit, and leave the group."""
        self._consumer.pause(*self._consumer.assignment())
        while self._stop_mode == 'warm' and not self._dispatcher.idle():
            if time.monotonic() >= self._stop_deadline:
                log.warning('records still in progress at the shutdown deadline; '
                            'they will be processed again by the next owner')
                break
            self._consumer.poll(timeout_ms=POLL_MS)
            self._status.beat()
        if self._stop_mode == 'cold':
            self._commit_before_cold_stop()
            self._consumer.close(autocommit=False, timeout_ms=int(COLD_STOP_TIMEOUT * 1000))
        else:
            try:
                self._commit()
            finally:
                self._consumer.close(autocommit=False,
                                     timeout_ms=int(self._settings.revoke_timeout * 1000))

    def _commit_before_cold_stop(self) -> None:
        try:
            self._commit(COLD_STOP_TIMEOUT)
        except SendFailed as exc:
            log.warning('cold stop: nothing committed, outputs not confirmed: %s', exc)

    # -- rebalancing (IO thread) -----------------------------------------------

    async def _release(self, tps: Iterable[TopicPartition], commit: bool) -> None:
        """Revoke: abandon queued records, let in-flight ones end, flush tables, commit."""
        self._status.group_state = '<rebalancing>'
        tps = set(tps)
        queues = self._dispatcher.revoke(tps)
        await self._wait_released(queues)
        kept = {tp.partition for tp in self._consumer.assignment() - tps}
        lost = {tp.partition for tp in tps} - kept
        if commit and queues:
            self._resume_at.update(resume_offsets(queues))
            await self._commit_revoked(queues, {tp.partition for tp in tps})
        for queue in queues:
            self._committed.pop(queue.tp, None)
        if self._state is not None:
            self._state.revoked(lost)
        self._held -= lost

    async def _wait_released(self, queues: list[PartitionQueue]) -> None:
        wait = 0.0 if self._stop_mode == 'cold' else self._settings.revoke_timeout
        deadline = time.monotonic() + wait
        while any(q.leased and not q.failed for q in queues):
            if time.monotonic() >= deadline:
                if wait:
                    log.warning('revoked partitions still busy after %.1fs; their in-flight '
                                'records will be processed again by the next owner', wait)
                return
            await _io_sleep(self._consumer, 0.01)

    async def _commit_revoked(self, queues: list[PartitionQueue], numbers: set[int]) -> None:
        def processed(wanted: set[int]) -> dict[TopicPartition, int]:
            return committable(qs for tp, qs in by_partition(queues).items()
                               if tp.partition in wanted)
        cut = self._cut(processed, numbers)
        offsets = self._uncommitted(cut.offsets)
        try:
            cut.send(self._producer)
            self._producer.flush(COMMIT_TIMEOUT)
        except SendFailed as exc:
            self._on_failure(str(exc))
            return
        if offsets:
            try:
                await self._consumer.commit_async(_commit_request(offsets))
                self._committed.update(offsets)
                log.info('committed %d revoked partitions', len(offsets))
            except KafkaError as exc:
                log.warning('commit on revoke failed; the next owner resumes from the last '
                            'commit: %s', exc)
        cut.store()

    def _take_over(self, tps: Iterable[TopicPartition]) -> None:
        """Assign: kept partitions resume where we stopped; tables recover before processing."""
        tps = set(tps)
        for tp in tps & set(self._resume_at):
            self._consumer.seek(tp, self._resume_at[tp])
        self._resume_at.clear()
        held: set[int] = set()
        if self._state is not None:
            held = self._state.assigned({tp.partition for tp in tps})
            self._state.follow(self._assignor.standbys)
            self._held |= held
        self._dispatcher.assign(tps, held)
        self._status.owners = dict(self._assignor.owners)
        log.info('assigned %s', ', '.join(f'{tp.topic}:{tp.partition}' for tp in sorted(tps))
                 or 'no partitions')


class _Listener(AsyncConsumerRebalanceListener):
    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._loop._release(revoked, commit=True)

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        await self._loop._release(lost, commit=False)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._loop._take_over(assigned)


def _commit_request(offsets: dict[TopicPartition, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {tp: OffsetAndMetadata(offset, '', -1) for tp, offset in offsets.items()}


async def _io_sleep(consumer: KafkaConsumer, seconds: float) -> None:
    # kafka-python has no public sleep for listener coroutines; its own
    # coordinator awaits the IO loop's sleep the same way.
    await consumer._net.sleep(seconds)
