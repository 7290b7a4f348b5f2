"""Where keys land: murmur2 as Java clients and kafka-python, crc32 as librdkafka."""

import random

import pytest
from kafka.partitioner.default import DefaultPartitioner

import runner
from runner.app.layout import Layout
from runner.app.partitioners import crc32_partition, murmur2_partition, resolve
from runner.errors import ConfigError


class Cluster:
    """What kafka-python's partitioner asks of its cluster metadata."""

    def __init__(self, count=7):
        self.count = count

    def topics(self):
        return {'t'}

    def partitions_for_topic(self, topic):
        return set(range(self.count))

    available_partitions_for_topic = partitions_for_topic


def test_murmur2_places_keys_as_kafka_python_does():
    for n in range(200):
        key = f'key-{n}'.encode()
        assert murmur2_partition(key, 7) == DefaultPartitioner().partition(
            't', None, key, None, None, Cluster())


def test_murmur2_places_random_keys_as_kafka_python_does_again_and_after_a_repartition():
    rng = random.Random(18)
    keys = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(40))) for _ in range(3000)]
    for count in (1, 4, 7, 12):
        cluster = Cluster(count)
        for key in keys + keys:                      # the second time from the cache
            assert murmur2_partition(key, count) == DefaultPartitioner().partition(
                't', None, key, None, None, cluster)
    assert murmur2_partition(bytearray(b'k'), 7) == murmur2_partition(b'k', 7)


def test_crc32_is_the_standard_crc_32_modulo_the_count():
    assert crc32_partition(b'123456789', 1 << 32) == 0xCBF43926     # CRC-32 check value
    assert crc32_partition(b'123456789', 10) == 0xCBF43926 % 10


def test_partitioners_are_named_or_given():
    def first(key, partitions):
        return 0
    assert resolve('crc32', 'x') is crc32_partition and resolve(first, 'x') is first
    with pytest.raises(ConfigError, match="topic 't': unknown partitioner 'fnv' "
                                          r'\(choose from murmur2, crc32, or give a function\)'):
        runner.App('p').topic('t', partitioner='fnv')


def test_a_table_takes_the_partitioner_of_the_topics_that_update_it():
    app = runner.App('p')
    orders = app.topic('orders', partitions=4, partitioner='crc32')
    totals = app.Table('totals', default=int)
    plain = app.Table('plain', default=int)

    @app.agent(orders)
    def total(stream):
        for customer in stream:
            totals[customer] += 1
    layout = Layout(app, {}, 4)
    assert layout.partition_of(totals, '123456789') == 0xCBF43926 % 4
    assert layout.partition_of(plain, 'k') == murmur2_partition(b'k', 4)


def test_a_key_is_placed_as_its_topic_encodes_it_not_as_the_table_stores_it():
    app = runner.App('p')
    orders = app.topic('orders', partitions=8, key_serializer='json')
    totals = app.Table('totals', default=int)              # str keys in the table

    @app.agent(orders)
    def total(stream):
        for event in stream.events():
            totals[event.key] += 1
    layout = Layout(app, {}, 8)
    assert layout.partition_of(totals, 'ab') == murmur2_partition(b'"ab"', 8)


def test_a_table_declared_with_another_partitioner_than_its_topic_is_refused():
    app = runner.App('p')
    orders = app.topic('orders', partitions=4, partitioner='crc32')
    totals = app.Table('totals', default=int, partitioner='murmur2')

    @app.agent(orders)
    def total(stream):
        for customer in stream:
            totals[customer] += 1
    with pytest.raises(ConfigError, match="table 'totals' and the topics that update it place "
                                          'keys with different partitioners'):
        Layout(app, {}, 4)
