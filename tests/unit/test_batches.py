"""The changelog's batches built in bulk: the bytes kafka-python's own append writes, and
the producer's epochs settled per batch, over kafka-python's real accumulator with a
stand-in for its sender."""

import random
import threading

import pytest
from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, TransactionAbortedError
from kafka.future import Future
from kafka.producer.record_accumulator import RecordAccumulator
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

from runner.config import Settings
from runner.kafka import batches, fixes
from runner.kafka import producer as producer_module
from runner.kafka.producer import Producer, SendFailed

TP = TopicPartition('t', 3)
NOW = 1_765_000_000_000


class Metadata:
    def __init__(self):
        self._partitions = {'t': dict.fromkeys(range(4))}

    def partitions_for_topic(self, topic):
        return set(self._partitions[topic])


class Sender:
    def __init__(self):
        self.wakeups = 0

    def wakeup(self):
        self.wakeups += 1


class FakeKafkaProducer:
    """kafka-python's accumulator and size check; the sender is the test."""

    _ensure_valid_record_size = KafkaProducer._ensure_valid_record_size

    def __init__(self, batch_size=16384, compression_type=0, max_request_size=1048576,
                 **config):
        self.config = {'max_request_size': max_request_size, 'max_block_ms': 1000}
        self._accumulator = RecordAccumulator(batch_size=batch_size,
                                              compression_attrs=compression_type,
                                              linger_ms=5)
        self._metadata = Metadata()
        self._sender = Sender()
        self._closed = False
        self.sent = []            # what went through kafka-python's own send

    def send(self, topic, key=None, value=None, headers=None, partition=None, timestamp_ms=None):
        self.sent.append((topic, key, value, headers, partition))
        return Future()

    def _estimate_size_in_bytes(self, key, value, headers=None):
        return DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers or [])

    def queued(self, tp=TP):
        """The batches waiting in the accumulator, drained as the sender would."""
        queue = self._accumulator._batches[tp]
        drained = list(queue)
        queue.clear()
        return drained


def kafka_python_batches(records, **config):
    """What kafka-python's own append builds for the records (one timestamp for all)."""
    kafka = FakeKafkaProducer(**config)
    for key, value in records:
        kafka._accumulator.append(TP, NOW, key, value, [])
    return closed_buffers(kafka.queued())


def closed_buffers(queued):
    for batch in queued:
        batch.records.close()
    return [bytes(batch.records.buffer()) for batch in queued]


def bulk_batches(records, **config):
    return closed_buffers(batches.build(FakeKafkaProducer(**config), TP, records, NOW))


def random_bytes(rng, size):
    return bytes(rng.getrandbits(8) for _ in range(size))


RECORD_SETS = {
    'one record': [(b'k', b'v')],
    'tombstones': [(b'a', None), (b'b', b'1'), (b'c', None)],
    'empty keys and values': [(b'', b''), (b'', b'x'), (b'y', b'')],
    'a null key': [(None, b'v')],
    'large values': [(b'big', b'x' * 70_000), (b'small', b'1'), (b'big2', b'y' * 200)],
    'long keys': [(b'k' * 300, b'v' * 9000), (b'k' * 64, b'v' * 64)],
    'many records over several batches': [
        (f'key-{n}'.encode(), f'{{"count": {n}}}'.encode()) for n in range(10_000)],
    'random sizes': [
        (random_bytes(random.Random(n), n % 97),
         None if n % 13 == 0 else random_bytes(random.Random(-n), (n * 37) % 3000))
        for n in range(1500)],
}


@pytest.mark.parametrize('name', sorted(RECORD_SETS))
def test_bulk_batches_are_byte_for_byte_those_kafka_python_builds(name):
    records = RECORD_SETS[name]
    expected = kafka_python_batches(records)
    assert bulk_batches(records) == expected
    if name == 'many records over several batches':
        assert len(expected) > 10


def test_bulk_batches_are_compressed_as_kafka_python_compresses_them():
    records = RECORD_SETS['many records over several batches'][:3000]
    expected = kafka_python_batches(records, compression_type=1)       # gzip
    built = bulk_batches(records, compression_type=1)
    assert [len(buffer) for buffer in built] == [len(buffer) for buffer in expected]
    assert len(expected[0]) < 10_000
    for ours, theirs in zip(built, expected, strict=True):    # gzip writes the time
        assert record_tuples(ours) == record_tuples(theirs)
        assert ours[22] == theirs[22] == 1                    # attributes: gzip


def test_bulk_batches_respect_a_small_batch_size():
    records = RECORD_SETS['random sizes']
    expected = kafka_python_batches(records, batch_size=1024)
    assert bulk_batches(records, batch_size=1024) == expected


def test_bulk_batches_read_back_as_the_records_sent():
    records = RECORD_SETS['random sizes']
    found = [(record.key, record.value, record.timestamp, record.offset)
             for buffer in bulk_batches(records)
             for batch in MemoryRecords(bytearray(buffer)) for record in batch]
    assert [(key, value) for key, value, _, _ in found] == records
    assert {timestamp for _, _, timestamp, _ in found} == {NOW}


def refused_as_kafka_python_refuses(queue, limit=5000):
    """Queue records around ``limit`` (max_request_size) bytes: those kafka-python's ``send``
    refuses must be refused with its error, and the others queued; returns how many were."""
    accepted = 0
    for size in range(limit - 150, limit - 50):
        record = (b'key', b'x' * size)
        estimate = DefaultRecordBatchBuilder.estimate_size_in_bytes(*record, [])  # as send
        if estimate > limit:
            with pytest.raises(MessageSizeTooLargeError,
                               match=f'^.*The message is {estimate} bytes when serialized'):
                queue(record)
        else:
            queue(record)
            accepted += 1
    assert 0 < accepted < 100
    return accepted


def test_a_record_is_refused_for_its_size_exactly_when_kafka_python_refuses_it():
    kafka = FakeKafkaProducer(max_request_size=5000)
    refused_as_kafka_python_refuses(
        lambda record: batches.build(kafka, TP, [(b'a', b'1'), record], NOW))


@pytest.fixture
def kafka(monkeypatch):
    made = []

    def make(**config):
        made.append(FakeKafkaProducer(**config))
        return made[-1]
    monkeypatch.setattr(producer_module, 'KafkaProducer', make)
    return made


def slot_producer(kafka):
    producer = Producer(Settings(broker='h:1', broker_timeout=1.0), 'test')
    return producer, kafka[-1]


def test_an_epoch_waits_for_every_batch_of_a_checkpoint_and_passes_once_all_are_written(kafka):
    producer, fake = slot_producer(kafka)
    records = RECORD_SETS['many records over several batches']
    last = producer.send_batch('t', 3, records)
    epoch = producer.mark()
    queued = fake.queued()
    assert len(queued) > 10 and fake._sender.wakeups == 1
    assert epoch.pending == len(queued)
    base = 0
    for batch in queued:
        assert not producer.acknowledged(epoch)
        batch.complete(base, -1)
        base += batch.record_count
    assert producer.acknowledged(epoch)
    assert last.get(0).offset == len(records) - 1


def test_a_failed_batch_fails_the_epoch_and_every_later_one(kafka):
    producer, fake = slot_producer(kafka)
    producer.send_batch('t', 3, RECORD_SETS['tombstones'])
    first, second = fake.queued()[0], None
    producer.send_batch('t', 3, [(b'k', b'v')])
    second = fake.queued()[0]
    error = KafkaTimeoutError('broker gone')
    first.complete_exceptionally(error, lambda _index: error)
    second.complete(10, -1)
    with pytest.raises(SendFailed, match='a record could not be sent: .*broker gone'):
        producer.acknowledged(producer.mark())


def test_a_batch_of_an_aborted_transaction_settles_without_failing(kafka):
    producer, fake = slot_producer(kafka)
    last = producer.send_batch('t', 3, RECORD_SETS['tombstones'])
    fake.queued()[0].abort(TransactionAbortedError('aborted'))
    assert producer.acknowledged(producer.mark())
    with pytest.raises(TransactionAbortedError):
        last.get(0)


def test_records_queue_after_those_already_waiting_in_their_partition(kafka):
    producer, fake = slot_producer(kafka)
    producer.send_batch('t', 3, [(b'a', b'1')])
    producer.send_batch('t', 3, [(b'b', b'2'), (b'c', b'3')])
    found = [(record.key, record.value) for buffer in closed_buffers(fake.queued())
             for batch in MemoryRecords(bytearray(buffer)) for record in batch]
    assert found == [(b'a', b'1'), (b'b', b'2'), (b'c', b'3')]


def test_a_closed_accumulator_refuses_the_batch_and_its_epoch_owes_nothing(kafka):
    producer, fake = slot_producer(kafka)
    fake._accumulator.close()
    with pytest.raises(Exception, match='RecordAccumulator is closed'):
        producer.send_batch('t', 3, RECORD_SETS['many records over several batches'])
    assert producer.acknowledged(producer.mark())


def test_a_batch_split_by_kafka_python_is_waited_for_record_by_record(kafka):
    fixes.install()
    producer, fake = slot_producer(kafka)
    records = [(f'k{n}'.encode(), b'v' * 100) for n in range(40)]
    last = producer.send_batch('t', 3, records)
    epoch = producer.mark()
    (batch,) = fake.queued()
    batch.records.close()
    assert fake._accumulator.split_and_reenqueue(batch) == 2     # the broker: too large
    halves = fake.queued()
    assert [half.record_count for half in halves] == [20, 20]
    halves[0].complete(100, -1)
    assert not producer.acknowledged(epoch)
    halves[1].complete(120, -1)
    assert producer.acknowledged(epoch)
    assert last.get(0).offset == 139


class Transactions:
    """kafka-python's transaction manager, as far as a send asks it."""

    def __init__(self):
        self.added = []

    def maybe_add_partition_to_transaction(self, tp):
        self.added.append(tp)


def transactional_producer(kafka):
    """A producer in an open transaction, its stand-in, and that transaction."""
    producer = Producer(Settings(broker='h:1', broker_timeout=1.0), 'test', 'tid')
    kafka[-1]._transaction_manager = Transactions()
    producer._sealed = False
    return producer, kafka[-1], kafka[-1]._transaction_manager


def test_a_transactional_batch_is_added_to_the_transaction_and_not_counted(kafka):
    producer, fake, transaction = transactional_producer(kafka)
    producer.send_batch('t', 3, [(b'a', b'1')])
    assert transaction.added == [TP] and producer.acknowledged(producer.mark())
    assert len(fake.queued()) == 1


def test_concurrent_checkpoints_of_other_partitions_keep_each_its_own_order(kafka):
    producer, fake = slot_producer(kafka)
    records = {n: [(f'{n}-{i}'.encode(), b'v') for i in range(3000)] for n in range(4)}
    threads = [threading.Thread(target=producer.send_batch, args=('t', n, records[n]))
               for n in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n, sent in records.items():
        found = [(record.key, record.value)
                 for buffer in closed_buffers(fake.queued(TopicPartition('t', n)))
                 for batch in MemoryRecords(bytearray(buffer)) for record in batch]
        assert found == sent


# -- an agent's sends ---------------------------------------------------------


def test_a_keyed_send_is_appended_as_kafka_python_appends_it_and_acknowledged_on_its_own(kafka):
    producer, fake = slot_producer(kafka)
    records = RECORD_SETS['random sizes'][:300]
    futures = [producer.send('t', key, value, partition=3) for key, value in records]
    epoch = producer.mark()
    assert fake.sent == [] and epoch.pending == len(records)
    queued = fake.queued()
    expected = kafka_python_batches(records)
    assert [record_tuples(batch) for batch in closed_buffers(queued)] == \
        [record_tuples(batch) for batch in expected]
    base = 0
    for batch in queued:
        batch.complete(base, -1)
        base += batch.record_count
    assert producer.acknowledged(epoch)
    assert [future.get(0).offset for future in futures] == list(range(len(records)))


def record_tuples(buffer):
    return [(record.offset, record.key, record.value, record.headers)
            for batch in MemoryRecords(bytearray(buffer)) for record in batch]


@pytest.mark.parametrize('send', [
    {'key': b'k', 'value': b'v', 'headers': [('h', b'1')], 'partition': 1},    # headers
    {'key': b'k', 'value': b'v', 'partition': None},                           # unplaced
    {'key': None, 'value': b'v', 'partition': None},                           # no key
    {'key': b'k', 'value': b'v', 'partition': 9},                              # not in topic
    {'key': None, 'value': None, 'partition': 1},                              # nothing
])
def test_a_send_its_checks_concern_goes_through_kafka_pythons_send(kafka, send):
    producer, fake = slot_producer(kafka)
    producer.send('t', **send)
    assert fake.sent == [('t', send['key'], send['value'], send.get('headers'),
                          send['partition'])]
    assert fake.queued() == []


def test_a_send_to_an_unknown_topic_goes_through_kafka_pythons_send(kafka):
    producer, fake = slot_producer(kafka)
    producer.send('elsewhere', b'k', b'v', partition=0)
    assert fake.sent == [('elsewhere', b'k', b'v', None, 0)]


def test_a_sent_record_is_refused_for_its_size_exactly_when_kafka_python_refuses_it(kafka):
    producer = Producer(Settings(broker='h:1', broker_timeout=1.0, max_request_size=5000),
                        'test')
    fake = kafka[-1]
    fake.config['max_request_size'] = 5000
    accepted = refused_as_kafka_python_refuses(
        lambda record: producer.send('t', *record, partition=0))
    assert producer.mark().pending == accepted and fake.sent == []


def test_a_transactional_send_adds_its_partition_to_the_transaction(kafka):
    producer, fake, transaction = transactional_producer(kafka)
    producer.send('t', b'k', b'v', partition=2)
    assert transaction.added == [TopicPartition('t', 2)]
    assert len(fake.queued(TopicPartition('t', 2))) == 1


def test_for_message_formats_before_v2_a_checkpoint_appends_record_by_record(kafka):
    producer, fake = slot_producer(kafka)
    fake._accumulator.config['message_version'] = 1
    records = RECORD_SETS['tombstones']
    last = producer.send_batch('t', 3, records)
    epoch = producer.mark()
    assert epoch.pending == len(records)
    (batch,) = fake.queued()
    batch.records.close()
    assert [(record.key, record.value) for legacy in MemoryRecords(batch.records.buffer())
            for record in legacy] == records
    batch.complete(7, -1)
    assert producer.acknowledged(epoch) and last.get(0).offset == 9
