"""The real transactional Producer over a stand-in for KafkaProducer that keeps what a
``read_committed`` reader would see: its sealing, numbering, waits and aborts, and the
consumer loop's checkpoints with forced interleavings of agents and transactions."""

import collections
import threading
import time
from types import SimpleNamespace

import pytest
from harness import wait_for
from kafka import TopicPartition
from kafka.coordinator.assignors.abstract import RebalanceProtocol
from kafka.errors import KafkaError, ProducerFencedError
from kafka.future import Future
from kafka.producer.transaction_manager import TransactionalRequestResult, TransactionState
from kafka.structs import MemberState
from test_consumer_loop import FakeConsumer

import runner
from runner.app.layout import Layout
from runner.config import Settings
from runner.kafka import producer as producer_module
from runner.kafka.assignor import RunnerAssignor
from runner.kafka.producer import Producer
from runner.runtime.agents import AgentThreads
from runner.runtime.consumer import ConsumerLoop
from runner.runtime.context import SlotContext
from runner.runtime.queues import Dispatcher, Inbox
from runner.runtime.status import SlotStatus
from runner.runtime.tasks import Tasks
from runner.runtime.transactions import TransactionStuck

TP0, TP1 = TopicPartition('words', 0), TopicPartition('words', 1)

app = runner.App('races', processing_guarantee='exactly_once')
words = app.topic('words', partitions=2, value_serializer='str')
out = app.topic('out', partitions=1, value_serializer='str')
#: The agent blocks inside the record whose value is in ``BLOCK`` until it is set.
BLOCK: dict[str, threading.Event] = {}
INSIDE: dict[str, threading.Event] = {}


@app.agent(words, concurrency=2)
def echo(stream):
    for word in stream:
        if word in BLOCK:
            INSIDE[word].set()
            BLOCK[word].wait(30)
        out.send(value=word)


class FakeTransactionManager:
    """The transactional state kafka-python keeps, and its requests answered at once
    (``fail_commit``: the next commit fails, as with a coordinator gone)."""

    def __init__(self, broker):
        self.broker = broker
        self._current_state = TransactionState.READY
        self.last_error = None
        self.fail_commit = False
        #: While set, the commit of a transaction is this unanswered request.
        self.held: TransactionalRequestResult | None = None
        #: While set, adding offsets to a transaction is this unanswered request.
        self.held_offsets: TransactionalRequestResult | None = None
        self.offsets: dict = {}

    def has_error(self):
        return False

    def maybe_add_partition_to_transaction(self, tp):
        pass

    def send_offsets_to_transaction(self, offsets, group_metadata):
        if self.held_offsets is not None:
            return self.held_offsets
        self.offsets.update({tp: meta.offset for tp, meta in offsets.items()})
        return self._done()

    def begin_commit(self):
        if self.held is not None:
            return self.held
        if self.fail_commit:
            self.fail_commit = False
            self._current_state = TransactionState.ABORTABLE_ERROR
            return self._done(KafkaError('the transaction coordinator is gone'))
        self.broker.commit(self.offsets)
        return self._end()

    def begin_abort(self):
        self.broker.abort()
        return self._end()

    def _end(self):
        self._current_state, self.offsets = TransactionState.READY, {}
        return self._done()

    @staticmethod
    def _done(error=None):
        result = TransactionalRequestResult()
        result.done(error)
        return result


class FakeTransactionalKafkaProducer:
    """KafkaProducer as the real Producer uses it.  What is sent goes into the open
    transaction; ``transactions`` holds the committed ones as (outputs, offsets), shared by
    the producers of one transactional id (a new one aborts what the old one left open)."""

    def __init__(self, transactions, **config):
        self.config = config
        self._transaction_manager = FakeTransactionManager(self)
        self.open: list[str] = []
        self.transactions: list[tuple[list[str], dict]] = transactions
        self._sender = SimpleNamespace(wakeup=lambda: None, force_close=self._force_close)
        self._metadata = SimpleNamespace(_partitions={})     # no topic known: sends go to send()
        self._closed = False
        self.closed = False

    def _force_close(self):
        self.closed = True

    def init_transactions(self):
        pass

    def begin_transaction(self):
        assert self._transaction_manager._current_state == TransactionState.READY
        self._transaction_manager._current_state = TransactionState.IN_TRANSACTION

    def send(self, topic, key=None, value=None, headers=None, partition=None, timestamp_ms=None):
        assert self._transaction_manager._current_state == TransactionState.IN_TRANSACTION, \
            'a record was sent outside a transaction'
        self.open.append(value.decode())
        return Future().success(SimpleNamespace(offset=len(self.open)))

    def commit(self, offsets):
        self.transactions.append((self.open, dict(offsets)))
        self.open = []

    def abort(self):
        self.open = []

    def committed_outputs(self) -> collections.Counter:
        return collections.Counter(value for outputs, _ in self.transactions for value in outputs)


@pytest.fixture
def producer(monkeypatch):
    transactions, fakes = [], []

    def kafka_producer(**config):
        fakes.append(FakeTransactionalKafkaProducer(transactions, **config))
        return fakes[-1]
    monkeypatch.setattr(producer_module, 'KafkaProducer', kafka_producer)
    made = Producer(Settings(broker='h:1', broker_timeout=1.0), 'test', transactional_id='t')
    made._lock = WatchedCondition()
    made.fakes = fakes
    return made


class WatchedCondition(threading.Condition):
    """The producer's condition, counting the threads waiting on it."""

    waiting = 0

    def wait(self, timeout=None):
        self.waiting += 1
        try:
            return super().wait(timeout)
        finally:
            self.waiting -= 1


def send_in_thread(producer, value, after=-1, dropped=lambda: False):
    """Send ``value`` from another thread (as an agent would); returns the thread."""
    thread = threading.Thread(target=producer.send, args=('out', None, value.encode()),
                              kwargs={'dropped': dropped, 'after': after}, daemon=True)
    thread.start()
    return thread


def waits(producer, count=1):
    wait_for(lambda: producer._lock.waiting == count, 5, f'{count} send(s) to wait')


def commit(producer, offsets=None):
    """End the open transaction as a checkpoint does, and begin the next."""
    producer.seal()
    assert producer.idle()
    producer.send_offsets(offsets or {}, None)
    assert producer.end(commit=True).succeeded
    producer.begin()


# -- the producer's transactional paths ----------------------------------------------------


def test_sends_wait_for_the_first_transaction(producer):
    thread = send_in_thread(producer, 'a')
    waits(producer)
    producer.start_transactions()
    thread.join(5)
    assert producer.transaction == 1 and producer._producer.open == ['a']


def test_a_sealed_producer_holds_sends_for_the_next_transaction(producer):
    producer.start_transactions()
    producer.send('out', None, b'a')
    producer.seal()
    thread = send_in_thread(producer, 'b')
    waits(producer)
    assert producer.idle()                       # a waiting send is not under way
    producer.send_offsets({}, None)
    producer.end(commit=True)
    assert producer._producer.transactions == [(['a'], {})]
    producer.begin()
    thread.join(5)
    assert producer._producer.open == ['b'] and producer.transaction == 2


def test_a_send_after_a_cut_waits_for_a_later_transaction_and_a_renumber_lets_it_in(
        producer):
    producer.start_transactions()
    thread = send_in_thread(producer, 'late', after=1)    # cut in transaction 1
    waits(producer)
    assert producer._producer.open == []
    producer.renumber()                          # a deferred checkpoint: 1 goes on as 2
    thread.join(5)
    assert producer._producer.open == ['late']


def test_a_send_dropped_while_it_waited_is_not_sent(producer):
    producer.start_transactions()
    finished = threading.Event()
    thread = send_in_thread(producer, 'gone', after=1, dropped=finished.is_set)
    waits(producer)
    finished.set()
    commit(producer)
    thread.join(5)
    assert producer._producer.open == [] and producer._producer.transactions == [([], {})]


def test_a_transaction_ends_only_sealed_and_idle(producer):
    producer.start_transactions()
    with pytest.raises(AssertionError, match='sealed'):
        producer.end(commit=True)
    with pytest.raises(AssertionError, match='sealed'):
        producer.send_offsets({}, None)


def test_an_abort_forgets_the_open_transaction(producer):
    producer.start_transactions()
    producer.send('out', None, b'a')
    producer.seal()
    producer.end(commit=False)
    producer.begin()
    producer.send('out', None, b'b')
    commit(producer)
    assert producer._producer.transactions == [(['b'], {})]


# -- the consumer loop over the real producer -------------------------------------------


class World:
    """A consumer loop of app ``races`` (no tables) over the real transactional producer."""

    def __init__(self, producer, **settings):
        self.events: list = []
        self.failures: list = []
        self.producer = producer
        layout = Layout(app, {'words': 2, 'out': 1}, 2)
        slot = SlotContext(layout, producer, None)
        self.inbox = Inbox()
        self.dispatcher = Dispatcher({'words': [self.inbox]})
        self.assignor = RunnerAssignor(None, 'races-0', 0, RebalanceProtocol.COOPERATIVE, set,
                                       counts=layout.sources(), changelogs=layout.changelogs(),
                                       needs=layout.needs())
        self.assignor.generation = 1
        self.status = SlotStatus('races', 0, 150.0)
        self.loop = ConsumerLoop(Settings(**settings), 'races', 'races-0', self.dispatcher,
                                 Tasks(self.assignor.counts, layout.tables_of), slot,
                                 self.status, self.failures.append, self.assignor, None)
        self.consumer = FakeConsumer(self.events)
        self.loop._use(self.consumer)
        self.agents = AgentThreads(app.agents[0], self.inbox, slot, self.failures.append)
        producer.start_transactions()
        self.agents.start()

    @property
    def kafka(self):
        """The KafkaProducer the producer uses now."""
        return self.producer._producer

    def assign(self, *tps):
        """A cooperative round that only adds ``tps`` to this member."""
        self.consumer.assigned.update(tps)
        self.loop._rebalances.assign(set(tps))

    def feed(self, tp, *offsets):
        """Records whose value names their input, ``partition-offset``."""
        records = [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset,
                                   key=None, value=f'{tp.partition}-{offset}'.encode(),
                                   headers=None, timestamp=0) for offset in offsets]
        self.dispatcher.dispatch(tp, records)

    def processed(self, offsets):
        wait_for(lambda: self.dispatcher.processed() == offsets, 10, f'processed {offsets}',
                 interval=0.01)

    def open_checkpoint(self, complete=False):
        """Open a checkpoint and ask every task for its cut; one all tasks can serve at
        once is left ``complete``, not yet committed."""
        if complete:
            checkpoint = self.loop._checkpoints._pending = self.loop._checkpoints.new(0.0)
            checkpoint.request(self.loop._tasks.active())
            assert checkpoint.complete()
        else:
            self.loop._checkpoints._next_checkpoint = 0
            self.loop._checkpoints.advance()
            assert self.loop._checkpoints._pending is not None

    def checkpoint_now(self):
        """Open a checkpoint and drive it until it has ended."""
        checkpoints = self.loop._checkpoints
        checkpoints._next_checkpoint = 0
        wait_for(lambda: checkpoints.advance() or checkpoints._pending is None, 5,
                 'the checkpoint to end', interval=0.01)

    def assert_outputs_commit_with_their_offsets(self):
        """What makes any later failure harmless: every output a transaction commits has
        its input's offset committed by that transaction or an earlier one."""
        committed: dict[int, int] = {}
        for outputs, offsets in self.kafka.transactions:
            committed.update({tp.partition: offset for tp, offset in offsets.items()})
            for value in outputs:
                partition, offset = map(int, value.split('-'))
                assert offset < committed.get(partition, 0), \
                    f'output {value} committed without its offset (committed: {committed})'

    def close(self):
        for event in BLOCK.values():
            event.set()
        self.agents.stop(drain=False)
        self.agents.join(5)


@pytest.fixture
def worlds(producer):
    """Makes the test's world, with settings of its own."""
    BLOCK.clear()
    INSIDE.clear()
    made = []
    yield lambda **settings: made.append(World(producer, revoke_timeout=0.3,
                                               commit_interval=0.2, **settings)) or made[-1]
    for world in made:
        world.close()


@pytest.fixture
def world(worlds):
    return worlds()


def test_a_task_assigned_while_a_checkpoint_waits_commits_its_outputs_with_its_offsets(world):
    world.assign(TP0)
    release = BLOCK['0-1'] = threading.Event()
    INSIDE['0-1'] = threading.Event()
    world.feed(TP0, 0, 1)
    wait_for(INSIDE['0-1'].is_set, 5, 'the agent to be inside a slow record')
    world.open_checkpoint()                     # waits for the slow record
    world.assign(TP1)                           # another member left: TP1 comes here
    world.feed(TP1, 0)
    wait_for(lambda: '1-0' in world.kafka.open or world.producer._lock.waiting, 5,
             "TP1's output to be sent or to wait")
    release.set()
    wait_for(lambda: world.dispatcher.processed().get(TP0) == 2, 5, 'the slow record done')
    world.checkpoint_now()
    world.processed({TP0: 2, TP1: 1})
    world.checkpoint_now()
    assert world.failures == []
    world.assert_outputs_commit_with_their_offsets()
    assert world.kafka.committed_outputs() == {'0-0': 1, '0-1': 1, '1-0': 1}


def test_an_abort_fences_the_tasks_before_a_waiting_send_can_enter_the_next_transaction(
        world, monkeypatch):
    one_committed_one_processed(world)
    world.open_checkpoint(complete=True)        # TP0 cut at 2 in the open transaction
    world.feed(TP0, 2)                          # its output waits for the next one
    wait_for(lambda: world.producer._lock.waiting, 5, "2's output to wait")
    world.kafka._transaction_manager.fail_commit = True
    abandon = world.loop._rebalances._abandon

    def abandon_once_the_waiting_send_is_in(tasks, why):
        # The agent wins the race if it can: the tasks are abandoned only once its send
        # is in the next transaction, unless that transaction has not begun yet.
        wait_for(lambda: world.producer._sealed or '0-2' in world.kafka.open, 5,
                 'the waiting send to enter the next transaction')
        abandon(tasks, why)
    monkeypatch.setattr(world.loop._rebalances, '_abandon', abandon_once_the_waiting_send_is_in)
    world.checkpoint_now()                      # the commit fails: aborted
    assert ('seek', TP0, 1) in world.events     # read again from the last commit
    world.feed(TP0, 1, 2)
    world.processed({TP0: 3})
    world.checkpoint_now()
    assert world.failures == []
    assert world.kafka.committed_outputs() == {'0-0': 1, '0-1': 1, '0-2': 1}
    world.assert_outputs_commit_with_their_offsets()


def test_ready_says_503_while_a_transaction_cannot_commit(world):
    world.status.phase, world.status.group_state, world.status.generation = \
        'running', MemberState.STABLE, 1
    world.assign(TP0)
    world.feed(TP0, 0)
    world.processed({TP0: 1})
    assert world.status.ready() == (True, 'processing')
    held = world.kafka._transaction_manager.held = TransactionalRequestResult()
    committing = threading.Thread(target=world.checkpoint_now, daemon=True)
    committing.start()
    wait_for(lambda: not world.status.ready()[0], 10, 'the slot to say it is not ready')
    assert world.status.ready()[1].startswith('waiting for the commit of the transaction')
    world.kafka._transaction_manager.held = None
    world.kafka.commit({})
    world.kafka._transaction_manager._end()
    held.done()
    committing.join(10)
    assert world.status.ready() == (True, 'processing') and world.failures == []


def one_committed_one_processed(world):
    """TP0's record 0 committed (its output and offset 1), record 1 processed since."""
    world.assign(TP0)
    world.feed(TP0, 0)
    world.processed({TP0: 1})
    world.checkpoint_now()
    world.feed(TP0, 1)
    world.processed({TP0: 2})


def commit_through_an_outage(world, held, back=lambda _held: None):
    """Commit what was processed while the broker goes away and comes back, ``held``
    (a request of the transaction's) unanswered until ``back(request)`` (by default never);
    returns what the commit raised."""
    one_committed_one_processed(world)
    request = TransactionalRequestResult()
    setattr(world.kafka._transaction_manager, held, request)
    world.consumer.reachable = False            # the broker goes away
    raised = []
    committing = threading.Thread(target=lambda: raised.extend(failures(world.checkpoint_now)),
                                  daemon=True)
    committing.start()
    wait_for(lambda: world.status.kafka_lost is not None, 5, 'the slot to notice the outage')
    world.consumer.reachable = True             # back
    back(request)
    committing.join(10)
    return raised


def assert_started_over_and_commits_once(world, lost):
    """A new producer took over from ``lost``, TP0 is read again from its last commit, and
    its next checkpoint commits each output once, with its offset."""
    assert lost.closed and world.kafka is not lost
    assert ('seek', TP0, 1) in world.events
    world.feed(TP0, 1)
    world.processed({TP0: 2})
    world.checkpoint_now()
    assert world.kafka.committed_outputs() == {'0-0': 1, '0-1': 1}
    world.assert_outputs_commit_with_their_offsets()


def test_a_transaction_that_cannot_end_after_an_outage_starts_over_with_a_new_producer(
        worlds):
    world = worlds(commit_timeout=0.3, broker_outage_limit=60)
    lost = world.kafka
    assert commit_through_an_outage(world, 'held_offsets') == [] and world.failures == []
    assert_started_over_and_commits_once(world, lost)


def failures(call):
    """What ``call()`` raised, as a list."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the test reports it
        return [exc]
    return []


def test_a_commit_that_may_have_reached_the_broker_is_not_started_over(worlds):
    world = worlds(commit_timeout=0.3, broker_outage_limit=60)
    [stuck] = commit_through_an_outage(world, 'held')   # the slot stops; its successor
    assert isinstance(stuck, TransactionStuck)          # reads the group's commit
    assert len(world.producer.fakes) == 1


def test_a_transaction_the_broker_timed_out_during_an_outage_starts_over_without_a_restart(
        worlds):
    """Back from an outage longer than the transaction timeout, the broker has aborted the
    open transaction and bumped the producer's epoch: the offsets (or the commit) are
    answered PRODUCER_FENCED.  That is no newer incarnation (the transaction is older than
    its timeout and this process was awake throughout): a new producer takes over and the
    records since the last commit are processed again, the slot stays up."""
    world = worlds(commit_timeout=0.3, broker_outage_limit=60)
    lost = world.kafka

    def back_after_the_timeout(offsets):
        world.producer.written_at = time.monotonic() - 60     # open for a minute, awake
        world.status.awake_since = time.monotonic() - 120
        offsets.done(ProducerFencedError())
    assert commit_through_an_outage(world, 'held_offsets', back_after_the_timeout) == []
    assert world.failures == []
    assert_started_over_and_commits_once(world, lost)


def test_a_fence_of_a_young_transaction_after_an_outage_still_stops_the_slot(worlds):
    """A newer incarnation fences while this one's transaction is young: that stops it."""
    world = worlds(commit_timeout=0.3, broker_outage_limit=60)
    raised = commit_through_an_outage(world, 'held_offsets',
                                      lambda offsets: offsets.done(ProducerFencedError()))
    assert [type(exc).__name__ for exc in raised] == ['ProducerFenced']
    assert len(world.producer.fakes) == 1
