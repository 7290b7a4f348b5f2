"""The consumer thread: the only thread that polls, pauses, resumes and takes checkpoints.

Each round of the loop polls (for at most ``POLL_MS``), hands the fetched
batches to the partition queues, hands out tasks whose tables have finished
recovering, applies back-pressure, and delegates the rest to the parts it
owns: advancing the slot's checkpoints to :class:`~.checkpoints.Checkpoints`,
the rebalances to :class:`~.rebalances.Rebalances` (whose listener
kafka-python runs on its IO thread while this thread waits inside ``poll()``,
so the two never run at once), and an outage of Kafka to
:class:`~.outage.KafkaOutage`.  A stop drains the queues (warm) and closes the
consumer, whose last revocation takes the last checkpoint.
"""

import logging
import threading
import time
from collections.abc import Callable

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import FencedInstanceIdError, KafkaError, RetriableError

from ..config import Settings
from ..errors import EX_CANTCREAT, RunnerError
from ..kafka.admin import leave_group
from ..kafka.assignor import RunnerAssignor
from ..kafka.fixes import reaches_kafka
from ..kafka.producer import Producer, SendFailed
from ..state.manager import StateManager
from .checkpoints import Checkpoints
from .context import SlotContext
from .metrics import SlotMetrics
from .outage import KafkaOutage
from .queues import Dispatcher
from .rebalances import Rebalances, StopRequest
from .status import SlotStatus
from .tasks import Task, Tasks

log = logging.getLogger(__name__)

POLL_MS = 100
#: How old the consumer's view of its topics may grow: a group leader notices a topic's
#: new partitions (and rebalances) within this long.
METADATA_MAX_AGE_MS = 10000
#: A member hears of a rebalance at its next heartbeat to the group coordinator: at
#: most this long after another member joins or leaves (or a third of the session).
GROUP_HEARTBEAT_MS = 300


class ConsumerLoop:
    """Owns the KafkaConsumer of a slot: feeds the partition queues; its checkpoints and
    rebalances are delegated."""

    def __init__(self, settings: Settings, group_id: str, client_id: str,
                 dispatcher: Dispatcher, tasks: Tasks, slot: SlotContext, status: SlotStatus,
                 on_failure: Callable[..., None], assignor: RunnerAssignor,
                 instance_id: str | None, metrics: SlotMetrics | None = None) -> None:
        self._settings = settings
        metrics = metrics or SlotMetrics()
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
        self._consumer: KafkaConsumer | None = None
        self._stop = StopRequest()
        self._outage = KafkaOutage(settings, status)
        self._checkpoints = Checkpoints(settings, tasks, slot.producer, assignor, status,
                                        metrics, self._outage, on_failure, self._reprocess)
        self._rebalances = Rebalances(settings, dispatcher, tasks, slot, status, metrics,
                                      assignor, self._checkpoints, self._stop)
        self._paused: frozenset[TopicPartition] = frozenset()   # as last seen, for the web
        self.thread = threading.Thread(target=self._run, name='consumer', daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, drain: bool, deadline: float, leave: bool) -> None:
        """Ask the loop to finish: ``drain`` waits (until ``deadline``) for queued records;
        ``leave`` takes this member out of its group (a stop for good), where a static
        member would otherwise keep its partitions for its session timeout.  Once asked to
        leave, it leaves, whatever a later call says; a cold stop stays cold."""
        self._stop.ask(drain, deadline, leave)

    def offsets(self) -> dict[str, object]:
        """Processed and committed offsets (next offset to read) for the web server."""
        def named(offsets: dict[TopicPartition, int]) -> dict[str, int]:
            return {f'{tp.topic}:{tp.partition}': offset for tp, offset in sorted(offsets.items())}
        return {'processed': named(self._dispatcher.processed()),
                'committed': named(dict(self._checkpoints.committed)),
                'rebalances': self._rebalances.count,
                'paused': sorted(f'{tp.topic}:{tp.partition}' for tp in self._paused),
                'queued': named(self._dispatcher.backlog())}

    def lag(self) -> dict[TopicPartition, int]:
        """Per partition with a commit: the log end offset (as last fetched) minus the
        committed offset (for the metrics; read from the web server's thread)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        lag = {}
        for tp, offset in dict(self._checkpoints.committed).items():
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
        return self._rebalances.count

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
            self._use(self._create_consumer())
            self._consumer.subscribe(self._dispatcher.topics,
                                     listener=self._rebalances.listener())
            self._consumer.topics()        # metadata before joining (see kafka/fixes.py)
            while self._stop.mode is None:
                self._poll_once()
            self._finish()
        except SendFailed as exc:
            self._on_failure(str(exc))
        except RunnerError as exc:
            self._checkpoints.fail(exc)
        except FencedInstanceIdError:
            self._on_failure(f'another member joined group {self._group_id} as this slot '
                             f'({self._instance_id}): a copy of its data directory runs '
                             'elsewhere? this slot stops rather than commit in its place',
                             EX_CANTCREAT)
        except Exception as exc:
            log.exception('consumer loop failed')
            self._on_failure(f'consumer loop failed: {exc}')

    def _use(self, consumer: KafkaConsumer) -> None:
        """The loop and the parts it delegates to work with ``consumer`` from now on."""
        self._consumer = consumer
        self._outage.consumer = self._checkpoints.consumer = self._rebalances.consumer = consumer

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
        self._outage.waiting_for_kafka()
        self._activate_recovered()
        assignment = frozenset(self._consumer.assignment())
        self._rebalances.complete(assignment)
        self._publish_membership(assignment)
        self._apply_backpressure(assignment)
        self._checkpoints.advance()
        self._rebalances.ask_for_warm_tasks()

    def _fetch(self) -> dict[TopicPartition, list]:
        """The records of one ``poll()``.  While the broker is away, kafka-python's
        ``poll()`` may raise a retriable error where it would time out: looking for the
        group coordinator, a refused connection makes it wait for a metadata refresh,
        which fails the same way and escapes (seen in ``bench/soak.py``'s broker
        restart).  With the coordinator unknown that is the outage the slot rides out
        (see :class:`~.outage.KafkaOutage`), so nothing is fetched this round."""
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
        stopping = self._stop.mode is not None
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

    def _finish(self) -> None:
        """Stop fetching, let the agents finish (warm), then leave the group: the listener
        takes the last checkpoint as the partitions are revoked."""
        self._consumer.pause(*self._consumer.assignment())
        while self._stop.mode == 'warm' and not self._dispatcher.idle():
            if time.monotonic() >= self._stop.deadline:
                log.warning('records still in progress at the shutdown deadline; '
                            'they will be processed again by the next owner')
                break
            self._consumer.poll(timeout_ms=POLL_MS)
            self._checkpoints.advance()
            self._status.beat()
        timeout = self._stop.bounded(self._settings.revoke_timeout)
        self._consumer.close(autocommit=False, timeout_ms=int(timeout * 1000))
        if self._stop.leave and self._instance_id:
            leave_group(self._settings.kafka_client(), max(timeout, 1.0), self._client_id,
                        self._group_id, self._instance_id)

    def _reprocess(self, tasks: list[Task]) -> None:
        """After an aborted transaction (see :meth:`Rebalances.reprocess`)."""
        self._rebalances.reprocess(tasks)
