"""The slot's producer against a real broker: the changelog's batch path, plain and in a
transaction, and an agent's keyed sends."""

import json
import random

from harness import consume, consume_committed
from kafka.admin import NewTopic
from kafka.partitioner.default import DefaultPartitioner

from runner.app.partitioners import murmur2_partition
from runner.config import Settings
from runner.kafka import fixes
from runner.kafka.producer import Producer


def test_a_batch_lands_in_its_partition_in_order_and_its_future_gives_the_last_offset(
        kafka_bootstrap, admin, topic_name):
    admin.create_topics([NewTopic(topic_name, 2, 1)])
    producer = Producer(Settings(broker=kafka_bootstrap), 'batch')
    records = [(f'k{n}'.encode(), f'{n}'.encode()) for n in range(5000)] + [(b'gone', None)]
    future = producer.send_batch(topic_name, 1, records)
    producer.wait(producer.mark(), 30)
    assert future.get(0).offset == len(records) - 1
    producer.close(10)
    found = consume(kafka_bootstrap, topic_name, len(records))
    assert {record.partition for record in found} == {1}
    assert [(record.key, record.value) for record in found] == records


def test_a_batch_in_a_transaction_is_seen_once_committed(kafka_bootstrap, admin, topic_name):
    admin.create_topics([NewTopic(topic_name, 1, 1)])
    producer = Producer(Settings(broker=kafka_bootstrap), 'batch', f'{topic_name}-tid')
    producer.start_transactions()
    producer.send_batch(topic_name, 0, [(b'a', b'1'), (b'b', b'2')])
    producer.seal()
    assert producer.end(commit=True).wait(30000)
    producer.begin()
    producer.send_batch(topic_name, 0, [(b'c', b'3')])
    producer.seal()
    assert producer.end(commit=False).wait(30000)
    producer.close(10)
    assert [(r.key, r.value) for r in consume_committed(kafka_bootstrap, topic_name)] == [
        (b'a', b'1'), (b'b', b'2')]


def test_a_checkpoint_of_many_records_in_a_transaction_reads_back_identical(
        kafka_bootstrap, admin, topic_name):
    admin.create_topics([NewTopic(topic_name, 1, 1)])
    producer = Producer(Settings(broker=kafka_bootstrap), 'batch', f'{topic_name}-tid')
    producer.start_transactions()
    records = [(f'k{n}'.encode(), None if n % 7 == 0 else b'v' * (n % 300))
               for n in range(6000)]
    future = producer.send_batch(topic_name, 0, records[:4000])
    producer.send_batch(topic_name, 0, records[4000:])
    producer.seal()
    assert producer.end(commit=True).wait(30000)
    assert future.get(0).offset == 3999
    producer.close(10)
    found = consume_committed(kafka_bootstrap, topic_name)
    assert [(r.key, r.value) for r in found] == records


def test_a_batch_the_broker_finds_too_large_is_split_and_still_acknowledged(
        kafka_bootstrap, admin, topic_name, caplog):
    fixes.install()
    admin.create_topics([NewTopic(topic_name, 1, 1,
                                  topic_configs={'max.message.bytes': '3000'})])
    producer = Producer(Settings(broker=kafka_bootstrap), 'batch')
    records = [(f'k{n}'.encode(), b'v' * 200) for n in range(300)]
    future = producer.send_batch(topic_name, 0, records)
    assert producer.wait(producer.mark(), 60)
    assert future.get(0).offset == len(records) - 1
    producer.close(10)
    assert 'splitting batch and retrying' in caplog.text
    assert [(r.key, r.value) for r in consume(kafka_bootstrap, topic_name, len(records))] == \
        records


def test_keyed_sends_land_where_kafka_pythons_partitioner_puts_them_in_order(
        kafka_bootstrap, admin, topic_name):
    admin.create_topics([NewTopic(topic_name, 4, 1)])
    producer = Producer(Settings(broker=kafka_bootstrap), 'sends')
    count = producer.partition_count(topic_name)
    rng = random.Random(18)
    sent = []
    for n in range(3000):
        key = f'user-{rng.randrange(500)}'.encode()
        headers = [('n', str(n).encode())] if n % 100 == 0 else None
        producer.send(topic_name, key, json.dumps({'n': n}).encode(), headers,
                      murmur2_partition(key, count))
        sent.append((key, n, headers or []))
    producer.send(topic_name, b'placed-by-kafka-python', b'{}')
    assert producer.wait(producer.mark(), 60)
    producer.close(10)
    found = consume(kafka_bootstrap, topic_name, len(sent) + 1)
    cluster = Cluster(count)
    assert all(record.partition == DefaultPartitioner().partition(
        topic_name, None, record.key, None, None, cluster) for record in found)
    keyed = [record for record in found if record.key != b'placed-by-kafka-python']
    assert len(keyed) == len(sent)
    assert sorted(((r.key, json.loads(r.value)['n'], r.headers) for r in keyed),
                  key=lambda record: record[1]) == sent
    for partition in range(count):
        numbers = [json.loads(r.value)['n'] for r in keyed if r.partition == partition]
        assert numbers == sorted(numbers)


class Cluster:
    def __init__(self, count):
        self.count = count

    def topics(self):
        return self

    def __contains__(self, topic):
        return True

    def partitions_for_topic(self, topic):
        return set(range(self.count))

    available_partitions_for_topic = partitions_for_topic
