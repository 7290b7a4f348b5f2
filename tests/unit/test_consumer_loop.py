"""The consumer loop's checkpoints and rebalances, driven with a fake consumer and producer
and real queues, tasks, agent threads and LevelDB stores."""

import logging
import threading
from types import SimpleNamespace

import pytest
from harness import wait_for
from kafka import TopicPartition
from kafka.coordinator.assignors.abstract import RebalanceProtocol
from kafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaError,
    RebalanceInProgressError,
)
from kafka.future import Future

import runner
from runner import logs
from runner.app.layout import Layout
from runner.config import Settings
from runner.errors import BrokerUnavailable
from runner.kafka.assignor import RunnerAssignor
from runner.kafka.producer import SendFailed
from runner.runtime import consumer as consumer_module
from runner.runtime.agents import AgentThreads
from runner.runtime.consumer import ConsumerLoop
from runner.runtime.context import SlotContext
from runner.runtime.queues import Dispatcher, Inbox
from runner.runtime.status import SlotStatus
from runner.runtime.tasks import Tasks
from runner.state.manager import StateManager

TP0, TP1 = TopicPartition('words', 0), TopicPartition('words', 1)
CLICKS0 = TopicPartition('clicks', 0)
CHANGELOG = 'loop-counts-changelog'

app = runner.App('loop')
words = app.topic('words', partitions=2, value_serializer='str')
clicks = app.topic('clicks', partitions=2)        # in the same task as words
counts = app.Table('counts', default=int)
#: The agent blocks inside the record whose value is in ``BLOCK``, until released.
BLOCK: dict[str, threading.Event] = {}
INSIDE: dict[str, threading.Event] = {}


@app.agent(words, concurrency=2)
def count(stream):
    for word in stream:
        counts[word] += 1
        if word in BLOCK:
            INSIDE[word].set()
            BLOCK[word].wait(30)


@app.agent(clicks)
def click(stream):                                 # not started by these tests
    for _ in stream:
        pass


def block_on(word):
    BLOCK[word], INSIDE[word] = threading.Event(), threading.Event()
    return BLOCK[word]


class FakeConsumer:
    """Enough of KafkaConsumer for the loop; every commit and seek goes to ``events``."""

    def __init__(self, events):
        self.events = events
        self.assigned: set[TopicPartition] = set()
        self.paused_set: set[TopicPartition] = set()
        self.generation = 1
        self.reachable = True           # False: the broker is away
        self.poll_error: Exception | None = None    # raised by poll()
        self._coordinator = SimpleNamespace(coordinator_unknown=lambda: not self.reachable)
        self._net = SimpleNamespace(sleep=self._sleep)
        self._never = threading.Event()

    async def _sleep(self, seconds):
        self._never.wait(seconds)        # the real IO loop would run heartbeats meanwhile

    def poll(self, timeout_ms):
        if self.poll_error is not None:
            raise self.poll_error
        return {}

    def assignment(self):
        return set(self.assigned)

    def paused(self):
        return set(self.paused_set)

    def pause(self, *tps):
        self.paused_set.update(tps)

    def resume(self, *tps):
        self.paused_set.difference_update(tps)

    def group_metadata(self):
        return SimpleNamespace(state='stable', generation_id=self.generation, member_id='m')

    def commit(self, offsets, timeout_ms=None):
        self.events.append(('commit', {tp: meta.offset for tp, meta in offsets.items()}))

    def commit_async(self, offsets):
        self.commit(offsets)
        return Future().success(None)

    def seek(self, tp, offset):
        self.events.append(('seek', tp, offset))

    def close(self, autocommit, timeout_ms):
        self.events.append(('close',))


class FakeProducer:
    """Sends are acknowledged at once; every send, barrier and transaction step goes to
    ``events``.  A transactional one fails the commit of the transaction after
    ``fail_commit`` is set, and refuses sends after ``broker_aborted`` is (the broker
    aborted the open transaction) until the next transaction begins."""

    def __init__(self, events, transactional=False):
        self.events = events
        self.ends: dict = {}
        self.transactional = transactional
        self.written = False
        self.fail_commit = False
        self.broker_aborted = False
        self.transaction = 0
        self.waiting = False
        self.acked = True               # False: sends wait for a broker
        self._lock = threading.Condition()

    def send(self, topic, key, value, headers=None, partition=None, dropped=None, after=-1,
             timestamp_ms=None):
        with self._lock:
            self.waiting = True
            while self.transaction <= after:
                self._lock.wait()
            self.waiting = False
        if dropped is not None and dropped():
            return None
        self.written = True
        self.events.append(('send', topic, key, value, partition))
        offset = self.ends.get((topic, partition), 0)
        self.ends[(topic, partition)] = offset + 1
        return Future().success(SimpleNamespace(offset=offset))

    def send_batch(self, topic, partition, records):
        if self.broker_aborted:
            raise KafkaError('Cannot call send in state READY')
        future = None
        for key, value in records:
            future = self.send(topic, key, value, partition=partition)
        return future

    def mark(self):
        self.events.append(('barrier',))
        return len(self.events)

    def acknowledged(self, epoch):
        return self.acked

    def wait(self, epoch, timeout):
        return self.acked

    def seal(self):
        pass

    def idle(self):
        return True

    def aborted_by_broker(self):
        return self.broker_aborted

    def ready(self):
        return True

    def send_offsets(self, offsets, group_metadata):
        self.events.append(('offsets', {tp: meta.offset for tp, meta in offsets.items()}))
        return SimpleNamespace(is_done=True, failed=False)

    def end(self, commit):
        if commit and self.fail_commit:
            self.events.append(('commit failed',))
            return SimpleNamespace(is_done=True, failed=True,
                                   exception=KafkaError('coordinator gone'))
        self.events.append(('end', 'commit' if commit else 'abort'))
        return SimpleNamespace(is_done=True, failed=False)

    def renumber(self):
        with self._lock:
            self.transaction += 1
            self._lock.notify_all()

    def begin(self):
        self.written = False
        self.broker_aborted = False
        with self._lock:
            self.transaction += 1
            self._lock.notify_all()


class FakeReader:
    """Recovers every partition at once from its (local) store."""

    def __init__(self, stores, on_recovered):
        self.stores, self.on_recovered = stores, on_recovered

    def remaining(self, requests):
        return 0

    def recover(self, keys, request):
        for key in keys:
            self.on_recovered(key, request, self.stores.open(key), 'topic-id')

    def drop(self, keys):
        for key in keys:
            self.stores.release(key)

    def follow(self, keys):
        pass

    def positions(self):
        return {}


class World:
    """A consumer loop of app ``loop`` with its agent running on one thread."""

    def __init__(self, tmp_path, transactional=False, **settings):
        self.events: list = []
        self.failures: list = []
        layout = Layout(app, {'words': 2, 'clicks': 2}, 2)
        producer = self.producer = FakeProducer(self.events, transactional)
        self.state = StateManager(app.tables.values(), tmp_path, FakeReader)
        slot = SlotContext(layout, producer, self.state)
        self.inbox = Inbox()
        self.dispatcher = Dispatcher({'words': [self.inbox], 'clicks': [Inbox()]})
        self.assignor = RunnerAssignor(None, 'loop-0', 0, RebalanceProtocol.EAGER, set,
                                       counts=layout.sources(), changelogs=layout.changelogs(),
                                       needs=layout.needs())
        self.assignor.generation = 1
        self.status = SlotStatus('loop', 0, 150.0)
        self.status.phase = 'running'
        self.loop = ConsumerLoop(Settings(**settings), 'loop', 'loop-0', self.dispatcher,
                                 Tasks(self.assignor.counts, layout.tables_of), slot,
                                 self.status, self.failures.append,
                                 self.assignor, None)
        self.consumer = FakeConsumer(self.events)
        self.loop._use(self.consumer)
        self.agents = AgentThreads(app.agents[0], self.inbox, slot, self.failures.append)
        self.agents.start()

    def assign(self, *tps):
        self.consumer.assigned.update(tps)
        self.loop._rebalances.assign(set(tps))
        self.loop._activate_recovered()

    def feed(self, tp, *values, first=0):
        records = [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=first + n,
                                   key=value.encode(), value=value.encode(), headers=None,
                                   timestamp=0) for n, value in enumerate(values)]
        self.dispatcher.dispatch(tp, records)

    def processed(self, offsets):
        wait_for(lambda: self.dispatcher.processed() == offsets, 10, f'processed {offsets}',
                 interval=0.01)

    def revoke(self, *tps, lost=False):
        self.consumer.assigned.difference_update(tps)
        _run(self.loop._rebalances.revoke(set(tps), lost=lost))

    def stored(self, number):
        with self.state.stores.reading((CHANGELOG, number)) as store:
            if store is None:
                store = self.state.stores.open((CHANGELOG, number))
                try:
                    return dict(store.items()), store.position()[1]
                finally:
                    self.state.stores.release((CHANGELOG, number))
            return dict(store.items()), store.position()[1]

    def close(self):
        for event in BLOCK.values():
            event.set()
        self.agents.stop(drain=False)
        self.agents.join(5)


def _run(coroutine):
    """Drive a listener coroutine whose waits (the fake sleep) never suspend."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise AssertionError('the coroutine waited on something the fakes cannot give')


@pytest.fixture
def world(tmp_path):
    BLOCK.clear()
    INSIDE.clear()
    made = World(tmp_path, revoke_timeout=0.3, commit_interval=0.2)
    yield made
    made.close()


def kinds(events):
    return [event[0] for event in events]


def test_revocation_sends_changelogs_then_commits_then_stores(world):
    world.assign(TP0, TP1)
    world.feed(TP0, 'a', 'b', 'a')
    world.feed(TP1, 'c')
    world.processed({TP0: 3, TP1: 1})
    world.revoke(TP0, TP1)
    assert kinds(world.events) == ['send', 'send', 'send', 'barrier', 'commit']
    assert world.events[-1] == ('commit', {TP0: 3, TP1: 1})
    assert {event[2]: event[4] for event in world.events[:3]} == {b'a': 0, b'b': 0, b'c': 1}
    assert world.stored(0) == ({b'a': b'2', b'b': b'1'}, 2)
    assert world.stored(1) == ({b'c': b'1'}, 1)
    assert world.failures == []
    world.events.clear()
    world.assign(TP0, TP1)                     # the same partitions come back
    assert sorted(world.events) == [('seek', TP0, 3), ('seek', TP1, 1)]   # what was committed


def test_a_partition_back_after_another_member_had_it_starts_from_the_group_commit(world):
    world.assign(TP0, TP1)
    world.feed(TP0, 'a')
    world.processed({TP0: 1})
    world.revoke(TP0)                           # cooperatively: TP0 moves to another member
    world.assignor.generation = 2
    world.loop._rebalances.complete(frozenset({TP1}))   # that rebalance completes without TP0
    world.events.clear()
    world.assign(TP0)                           # the other member left: TP0 comes back
    assert world.events == []                   # kafka-python reads the group's commit


def test_a_task_busy_past_the_revoke_timeout_is_abandoned_and_read_again_from_its_commit(
        world):
    world.assign(TP0, TP1)
    world.feed(TP0, 'a')
    world.processed({TP0: 1})
    world.loop._checkpoints.advance()                      # commits TP0 at 1
    assert world.events[-1] == ('commit', {TP0: 1})
    release = block_on('stuck')
    world.feed(TP0, 'b', 'stuck', first=1)
    world.feed(TP1, 'c')
    wait_for(INSIDE['stuck'].is_set, 10, 'the agent to be stuck inside a record')
    wait_for(lambda: world.dispatcher.processed().get(TP1) == 1, 10, 'TP1 processed')
    world.events.clear()
    world.revoke(TP0, TP1)
    assert world.events == [('send', CHANGELOG, b'c', b'1', 1), ('barrier',),
                            ('commit', {TP1: 1})]         # TP0 abandoned: nothing of it
    release.set()
    wait_for(lambda: not world.inbox.queues() and world.inbox.idle(), 10, 'the agent to leave')
    world.events.clear()
    world.assign(TP0, TP1)
    assert sorted(world.events) == [('seek', TP0, 1), ('seek', TP1, 1)]   # not TP0 at 3
    assert world.stored(0) == ({b'a': b'1'}, 1)            # 'b' and 'stuck' were never applied


def test_a_stuck_task_does_not_hold_up_the_commit_of_the_others(world):
    world.assign(TP0, TP1)
    release = block_on('stuck')
    world.feed(TP0, 'stuck')
    wait_for(INSIDE['stuck'].is_set, 10, 'the agent to be stuck inside a record')
    world.loop._checkpoints.advance()                      # opens a checkpoint
    assert 'commit' not in kinds(world.events)
    world.feed(TP1, 'c')
    world.processed({TP1: 1})                              # TP0's record is still in hand
    wait_for(lambda: world.loop._checkpoints.advance() or 'commit' in kinds(world.events), 5,
             'a commit within a commit interval', interval=0.01)
    assert world.events[-1] == ('commit', {TP1: 1})
    release.set()
    world.processed({TP0: 1, TP1: 1})
    wait_for(lambda: world.loop._checkpoints.advance() or ('commit', {TP0: 1}) in world.events,
             5, 'the released task to be committed', interval=0.01)


def test_a_checkpoint_is_skipped_once_the_member_left_its_generation(world):
    world.assign(TP0)
    world.feed(TP0, 'a')
    world.processed({TP0: 1})
    world.consumer.generation = 2                          # expelled, not yet told
    world.loop._checkpoints.advance()
    assert world.events == []
    world.consumer.generation = 1
    world.loop._checkpoints._next_checkpoint = 0
    world.loop._checkpoints.advance()                      # the writes were kept
    assert kinds(world.events) == ['send', 'barrier', 'commit']


def test_lost_partitions_send_and_commit_nothing(world):
    world.assign(TP0)
    world.feed(TP0, 'a')
    world.processed({TP0: 1})
    world.revoke(TP0, lost=True)
    assert world.events == []
    world.assign(TP0)                          # kafka-python asks the group where to start
    assert world.events == []


def test_partitions_pause_at_their_share_of_max_inflight(tmp_path):
    made = World(tmp_path, max_inflight=20)
    try:
        made.assign(TP0, TP1)
        made.agents.stop(drain=False)                      # nobody takes the records
        made.agents.join(5)
        made.inbox._closing = False
        made.feed(TP0, *['x'] * 10)
        made.feed(TP1, *['x'] * 9)
        made.loop._apply_backpressure(frozenset({TP0, TP1}))
        assert made.consumer.paused_set == {TP0}           # 10 of a share of 20 / 2
    finally:
        made.close()


def test_a_stop_for_good_after_one_that_keeps_the_membership_leaves_the_group(world,
                                                                              monkeypatch):
    left = []
    monkeypatch.setattr(consumer_module, 'leave_group', lambda *args: left.append(args[-1]))
    world.loop._instance_id = 'loop-identity'
    world.loop.stop(drain=False, deadline=0.0, leave=False)    # a failure: cold, stays
    world.loop.stop(drain=False, deadline=0.0, leave=True)     # then TERM: for good
    world.loop._finish()
    assert left == ['loop-identity']



def test_a_task_that_loses_one_topic_goes_on_with_the_others(world):
    world.assign(TP0, CLICKS0)
    world.feed(TP0, 'a')
    world.processed({TP0: 1})
    world.events.clear()
    world.revoke(CLICKS0)                  # clicks changed its partition count
    assert world.events[-1] == ('seek', TP0, 1)
    world.loop._activate_recovered()
    world.feed(TP0, 'b', first=1)
    world.processed({TP0: 2})              # words:0 is still processed
    world.loop._checkpoints._next_checkpoint = 0
    world.loop._checkpoints.advance()
    assert world.events[-1] == ('commit', {TP0: 2})


def test_a_partition_that_joins_a_task_the_slot_has_gets_its_queue(world):
    world.assign(TP0)
    world.assign(CLICKS0)                  # clicks:0 joins task 0, which stays
    assert [queue.tp for queue in world.loop._tasks.task_of(CLICKS0).queues] == [TP0, CLICKS0]
    world.feed(TP0, 'a')
    world.processed({TP0: 1})


def test_lost_partitions_are_no_longer_claimed(world):
    world.assign(TP0, TP1)
    world.assignor._held = {('words', 0), ('words', 1)}
    world.revoke(TP0, lost=True)
    assert world.assignor._held == {('words', 1)}


# -- exactly-once ------------------------------------------------------------------------


def test_a_checkpoint_waits_through_an_outage_and_commits_once_kafka_is_back(tmp_path):
    world = World(tmp_path, commit_timeout=0.2, broker_outage_limit=60)
    try:
        world.assign(TP0)
        world.feed(TP0, 'a', 'b')
        world.processed({TP0: 2})
        world.producer.acked = world.consumer.reachable = False
        checkpoint = world.loop._checkpoints.new(0.0)
        checkpoint.request(world.loop._tasks.active())
        thread = threading.Thread(target=world.loop._checkpoints._commit, args=(checkpoint,),
                                  daemon=True)
        thread.start()
        wait_for(lambda: 'waiting for Kafka' in world.status.ready()[1], 10,
                 'the slot to say it waits for Kafka')        # well past commit_timeout
        assert thread.is_alive() and world.status.live()[0]
        world.producer.acked = world.consumer.reachable = True
        thread.join(10)
        assert world.events[-1] == ('commit', {TP0: 2}) and world.failures == []
        assert not world.loop._outage.waiting_for_kafka()     # as the next round sees it
        assert 'waiting for Kafka' not in world.status.ready()[1]
    finally:
        world.close()


def test_an_outage_past_the_limit_stops_the_slot_as_broker_unavailable(tmp_path):
    world = World(tmp_path, commit_timeout=0.2, broker_outage_limit=0.5)
    try:
        world.assign(TP0)
        world.feed(TP0, 'a')
        world.processed({TP0: 1})
        world.producer.acked = world.consumer.reachable = False
        checkpoint = world.loop._checkpoints.new(0.0)
        checkpoint.request(world.loop._tasks.active())
        with pytest.raises(BrokerUnavailable, match=r'could not be reached for 0.5s'):
            world.loop._checkpoints._commit(checkpoint)
    finally:
        world.close()


def test_a_retriable_error_out_of_poll_during_an_outage_is_waited_out(tmp_path):
    world = World(tmp_path, broker_outage_limit=60)
    try:
        world.consumer.reachable = False
        world.consumer.poll_error = KafkaConnectionError('111 ECONNREFUSED')
        world.loop._poll_once()
        assert world.status.kafka_lost is not None and world.status.live()[0]
        world.consumer.reachable = True         # Kafka answers: the same error is a failure
        with pytest.raises(KafkaConnectionError):
            world.loop._poll_once()
    finally:
        world.close()


def test_records_not_acknowledged_while_kafka_answers_fail_after_the_commit_timeout(
        tmp_path):
    world = World(tmp_path, commit_timeout=0.2)
    try:
        world.assign(TP0)
        world.feed(TP0, 'a')
        world.processed({TP0: 1})
        world.producer.acked = False
        checkpoint = world.loop._checkpoints.new(0.0)
        checkpoint.request(world.loop._tasks.active())
        with pytest.raises(SendFailed, match='commit_timeout'):
            world.loop._checkpoints._commit(checkpoint)
        assert 'commit' not in kinds(world.events)
    finally:
        world.close()


@pytest.fixture
def eos(tmp_path):
    BLOCK.clear()
    INSIDE.clear()
    made = World(tmp_path, transactional=True, revoke_timeout=0.3, commit_interval=0.2)
    yield made
    made.close()


def checkpoint_now(world):
    """Open a checkpoint and drive it until it has ended."""
    checkpoints = world.loop._checkpoints
    checkpoints._next_checkpoint = 0
    wait_for(lambda: checkpoints.advance() or checkpoints._pending is None, 5,
             'the checkpoint to end', interval=0.01)


def test_a_transaction_carries_changelogs_and_offsets_and_is_stored_only_once_committed(eos):
    eos.assign(TP0, TP1)
    eos.feed(TP0, 'a', 'b', 'a')
    eos.feed(TP1, 'c')
    eos.processed({TP0: 3, TP1: 1})
    checkpoint_now(eos)
    assert kinds(eos.events) == ['send', 'send', 'send', 'offsets', 'end']
    assert eos.events[-2:] == [('offsets', {TP0: 3, TP1: 1}), ('end', 'commit')]
    assert eos.stored(0) == ({b'a': b'2', b'b': b'1'}, 2)
    assert eos.failures == []


def test_an_aborted_transaction_stores_nothing_and_its_records_are_processed_again(eos):
    eos.assign(TP0, TP1)
    eos.feed(TP0, 'a')
    eos.processed({TP0: 1})
    checkpoint_now(eos)                                     # a committed at 1
    eos.feed(TP0, 'a', 'b', first=1)
    eos.processed({TP0: 3})
    eos.producer.fail_commit = True
    eos.events.clear()
    checkpoint_now(eos)
    assert kinds(eos.events) == ['send', 'send', 'offsets', 'commit failed', 'end', 'seek']
    assert eos.events[-2:] == [('end', 'abort'), ('seek', TP0, 1)]
    assert eos.stored(0) == ({b'a': b'1'}, 1)             # nothing of the aborted one
    eos.loop._activate_recovered()                          # the task, created again
    eos.producer.fail_commit = False
    eos.events.clear()
    eos.feed(TP0, 'a', 'b', first=1)                        # read again from the commit
    eos.processed({TP0: 3})
    checkpoint_now(eos)
    assert eos.stored(0) == ({b'a': b'2', b'b': b'1'}, 5)   # aborted records took 1 and 2
    assert eos.failures == []


def test_a_transaction_the_broker_aborted_is_given_up_and_its_records_processed_again(eos):
    eos.assign(TP0)
    eos.feed(TP0, 'a')
    eos.processed({TP0: 1})
    checkpoint_now(eos)                                     # a committed at 1
    eos.feed(TP0, 'a', 'b', first=1)
    eos.processed({TP0: 3})
    eos.producer.broker_aborted = True                      # it outlived its timeout
    eos.events.clear()
    checkpoint_now(eos)
    assert eos.events == [('seek', TP0, 1)]                 # no abort of its own
    assert eos.stored(0) == ({b'a': b'1'}, 1)
    assert eos.failures == []
    assert not eos.producer.broker_aborted                  # a new transaction began


def test_after_its_cut_an_agent_goes_on_and_its_sends_wait_for_the_next_transaction(eos):
    eos.assign(TP0)
    checkpoint = eos.loop._checkpoints.new(deadline=0.0)
    checkpoint.request(eos.loop._tasks.active())
    assert checkpoint.complete()                            # the task is cut
    task = eos.loop._tasks.task_of(TP0)
    sent = []
    thread = threading.Thread(target=lambda: sent.append(
        eos.producer.send('out', b'k', b'v', dropped=lambda: False, after=task.cut_in)))
    thread.start()
    eos.feed(TP0, 'a')
    eos.processed({TP0: 1})                                 # processing goes on
    wait_for(lambda: eos.producer.waiting, 5, 'the send to wait')
    assert sent == []
    eos.producer.begin()                                    # the next transaction
    thread.join(5)
    assert ('send', 'out', b'k', b'v', None) in eos.events


def test_an_empty_checkpoint_lets_sends_waiting_for_the_next_transaction_through(eos):
    eos.assign(TP0)
    checkpoint_now(eos)                                     # nothing to commit
    assert eos.producer.transaction == 1
    assert 'end' not in kinds(eos.events)


def test_a_checkpoint_of_a_member_between_generations_is_deferred_not_aborted(eos):
    eos.assign(TP0)
    eos.feed(TP0, 'a')
    eos.processed({TP0: 1})
    eos.consumer.generation = 2                              # rejoining its group
    checkpoint_now(eos)
    assert eos.events == [] and eos.producer.transaction == 1
    eos.consumer.generation = 1
    checkpoint_now(eos)                                     # the writes were kept
    assert kinds(eos.events) == ['send', 'offsets', 'end']
    assert eos.stored(0) == ({b'a': b'1'}, 1)


def test_a_busy_task_at_revocation_aborts_the_transaction_and_the_kept_tasks_read_again(eos):
    eos.assign(TP0, TP1)
    eos.feed(TP1, 'c')
    eos.processed({TP1: 1})
    checkpoint_now(eos)                                     # c committed at 1
    eos.feed(TP1, 'd', first=1)
    eos.processed({TP1: 2})
    release = block_on('stuck')
    eos.feed(TP0, 'stuck')
    wait_for(INSIDE['stuck'].is_set, 10, 'the agent to be stuck inside a record')
    eos.events.clear()
    eos.revoke(TP0)
    assert eos.events == [('end', 'abort'), ('seek', TP1, 1)]   # TP1 stays, read again
    release.set()
    assert eos.stored(1) == ({b'c': b'1'}, 1)


@pytest.mark.parametrize('refusal', [RebalanceInProgressError, CommitFailedError])
def test_a_deferred_or_failed_offset_commit_stores_nothing_until_a_commit_succeeds(
        world, refusal):
    world.assign(TP0)
    world.feed(TP0, 'a')
    world.processed({TP0: 1})
    commit = world.consumer.commit

    def refused(offsets, timeout_ms=None):
        raise refusal('not now')
    world.consumer.commit = refused
    world.loop._checkpoints._next_checkpoint = 0
    world.loop._checkpoints.advance()
    assert world.stored(0) == ({}, 0)            # changelog sent, offsets not committed
    world.consumer.commit = commit
    world.loop._checkpoints._next_checkpoint = 0
    world.loop._checkpoints.advance()
    assert world.events[-1] == ('commit', {TP0: 1})
    assert world.stored(0) == ({b'a': b'1'}, 2)     # its changelog record sent again


def test_a_revocation_whose_commit_fails_stores_nothing(world):
    world.assign(TP0)
    world.feed(TP0, 'a')
    world.processed({TP0: 1})
    world.consumer.commit_async = lambda offsets: Future().failure(CommitFailedError('gone'))
    world.revoke(TP0)
    assert world.stored(0) == ({}, 0)


def test_an_outage_is_said_once_and_summed_up_with_the_client_errors_kept_from_the_log(
        tmp_path):
    logfile = tmp_path / 'log'
    logs.setup('info', str(logfile), 'slot 0')
    world = World(tmp_path / 'w', broker_outage_limit=60)
    try:
        logs.connection_errors_suppressed()
        world.consumer.reachable = False
        assert world.loop._outage.waiting_for_kafka()
        world.status.kafka_lost -= 5                         # away for 5 s
        for _ in range(3):
            logging.getLogger('kafka.net.manager').error('Connection failed: %s',
                                                         'KafkaConnectionError')
        assert world.loop._outage.waiting_for_kafka() and world.loop._outage.waiting_for_kafka()
        world.consumer.reachable = True
        assert not world.loop._outage.waiting_for_kafka()
        lines = [line.split(': ', 1)[1] for line in logfile.read_text().splitlines()]
        assert lines[0].startswith('Kafka cannot be reached')
        assert lines[1:] == [('Kafka was away for 5s; 3 connection errors of the Kafka client '
                             'kept at debug level')]
    finally:
        world.close()
        logs.setup('info', None, 'test')
