"""Table partitions without Kafka: layered reads, cuts, flushes, and access rules."""

import pytest

import runner
from runner.state import Cut
from runner.store import PartitionStore
from runner.stream import current
from runner.tables import DELETED, MISSING, Guard, TablePartition, partition_items


@pytest.fixture
def partition(tmp_path):
    app = runner.App('unit')
    table = app.Table('t', default=int, partitions=2)
    part = TablePartition(table, 0, PartitionStore(tmp_path / 'p0'), Guard(0), 'id')
    table.active[0] = part
    yield part
    part.store.close()


def test_reads_see_unflushed_then_flushing_then_stored_values(partition):
    partition.store.write([(b'a', b'1'), (b'b', b'2')], 'id', 5)
    partition.dirty['a'] = 10
    assert partition.get('a') == 10 and partition.get('b') == 2
    taken = partition.cut()
    assert taken == {'a': 10} and partition.get('a') == 10
    partition.dirty['b'] = DELETED
    assert partition.get('b') is MISSING
    partition.store.write(partition.encoded(taken), 'id', 6)
    partition.flushed(taken)
    assert partition.flushing is None and partition.get('a') == 10


def test_items_overlay_unflushed_changes_on_stored_ones(partition):
    partition.store.write([(b'a', b'1'), (b'b', b'2'), (b'c', b'3')], 'id', 1)
    partition.dirty.update({'b': DELETED, 'c': 30, 'd': 4})
    assert dict(partition_items(partition)) == {'a': 1, 'c': 30, 'd': 4}


def test_keys_hash_like_kafkas_default_partitioner(partition):
    from kafka.partitioner.default import murmur2
    table = partition.table
    assert table.partition_of('word') == (murmur2(b'word') & 0x7fffffff) % 2


def test_outside_agents_tables_can_be_read_but_not_written(partition):
    partition.dirty['k'] = 3
    current.partition = None
    number = partition.table.partition_of('k')
    assert partition.table.get('k') == (3 if number == 0 else None)
    with pytest.raises(RuntimeError, match='only be changed from an agent'):
        partition.table['k'] = 4


def test_a_cut_sends_the_latest_value_per_key_then_stores_the_offset(partition):
    sent = []

    class Producer:
        def send(self, topic, key, value, partition=None):
            sent.append((topic, key, value, partition))
            return Future(len(sent) + 41)

    class Future:
        def __init__(self, offset):
            self.offset = offset

        def get(self, timeout):
            return self

    partition.dirty.update({'a': 1, 'b': 2})
    cut = Cut(offsets={}, changes=[(partition, partition.cut())])
    cut.send(Producer())
    cut.store()
    assert sent == [('unit-t-changelog', b'a', b'1', 0), ('unit-t-changelog', b'b', b'2', 0)]
    assert partition.store.position() == ('id', 44)
    assert partition.store.get(b'b') == b'2'
