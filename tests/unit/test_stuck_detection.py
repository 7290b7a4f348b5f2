"""Finding a stuck agent thread: no progress since a moment while records wait for it,
with the time Kafka is away not counted."""

import threading
import time
from types import SimpleNamespace

from harness import wait_for
from kafka import TopicPartition

import runner
from runner.config import Settings
from runner.runtime.context import AgentContext
from runner.runtime.queues import Inbox, Stopped
from runner.runtime.slot import Slot
from runner.runtime.stream import Stream

TP = TopicPartition('t', 0)
TASK = SimpleNamespace(enter=lambda: None, leave=lambda: None)
TOPIC = SimpleNamespace(value_codec=SimpleNamespace(loads=lambda value: value))


def stream_of(inbox):
    slot = SimpleNamespace(producer=SimpleNamespace(transactional=False))
    return Stream(TOPIC, inbox, AgentContext(slot), policy=None)


def queue_records(inbox, count):
    inbox.put(TP, [SimpleNamespace(topic='t', partition=0, offset=o, value=o)
                   for o in range(count)])


def later():
    return time.monotonic() + 1


def test_a_thread_inside_a_record_is_stuck_once_it_stops_progressing():
    inbox = Inbox()
    inbox.assign(TP, TASK, held=False)
    queue_records(inbox, 2)
    stream = stream_of(inbox)
    records = iter(stream)
    assert next(records) == 0
    assert stream.stuck(later())
    assert stream.holding.offset == 0
    assert not stream.stuck(stream.progressed - 1)
    assert next(records) == 1                       # progress: the next record
    assert not stream.stuck(stream.progressed - 1)


def test_a_thread_waiting_for_records_is_never_stuck():
    inbox = Inbox()
    inbox.assign(TP, TASK, held=False)
    stream = stream_of(inbox)
    taken = []
    thread = threading.Thread(target=lambda: taken.append(next(iter(stream))), daemon=True)
    thread.start()
    wait_for(lambda: stream.progressed is None, 5, 'the thread to wait for records')
    assert not stream.stuck(later())
    queue_records(inbox, 1)
    thread.join(5)
    assert taken == [0]


def test_a_thread_outside_its_stream_is_stuck_only_while_records_wait():
    inbox = Inbox()
    inbox.assign(TP, TASK, held=False)
    stream = stream_of(inbox)                       # the agent function has not iterated yet
    assert not stream.stuck(later())
    queue_records(inbox, 1)
    assert stream.stuck(later())
    assert stream.holding is None


def test_time_without_kafka_does_not_count_towards_stuck(tmp_path):
    slot = Slot(runner.App('stuck'), Settings(datadir=str(tmp_path), stuck_timeout=5.0))
    always_stuck = SimpleNamespace(
        agent=SimpleNamespace(name='stuck.count'),
        stuck=lambda since: [(threading.current_thread(), 'inside record t[0]@7')])
    slot._agents = [always_stuck]
    slot.status.kafka_lost = time.monotonic()
    assert slot._stuck_agents() is None
    slot.status.kafka_lost = None                   # back, but only just
    assert slot._stuck_agents() is None
    slot._kafka_lost_seen -= 6
    assert slot._stuck_agents() == 'agent stuck.count stuck for 5s'


def test_stopping_a_partition_at_a_record_counts_as_progress():
    inbox = Inbox()
    inbox.assign(TP, TASK, held=False)
    inbox.put(TP, [SimpleNamespace(topic='t', partition=0, offset=o, value=o, key=None)
                   for o in range(3)])
    stream = stream_of(inbox)
    records = iter(stream)
    assert next(records) == 0
    since = later()
    stream.stop_partition(Stopped('a', stream.unfinished, 'raised'))
    assert stream.progressed >= since - 1 and not stream.stuck(since - 1)
