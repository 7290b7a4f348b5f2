"""Live table partitions without Kafka: layered reads, cuts, the cache, windows."""

import pytest

import runner
from runner.app.context import DELETED, MISSING
from runner.state.partitions import TablePartition, ValueCache, WindowedPartition
from runner.state.stores import PartitionStore


@pytest.fixture
def partition(tmp_path):
    table = runner.App('unit').Table('t', default=int, partitions=2)
    part = TablePartition(table, 0, PartitionStore(tmp_path / 'p0'), 'id', ValueCache())
    yield part
    part.store.close()


def test_reads_see_unflushed_then_flushing_then_stored_values(partition):
    partition.store.write([(b'a', b'1'), (b'b', b'2')], 'id', 5)
    partition.set('a', 10)
    assert partition.get('a') == 10 and partition.get('b') == 2
    taken = partition.cut()
    assert taken == {'a': 10} and partition.get('a') == 10
    partition.set('b', DELETED)
    assert partition.get('b') is MISSING
    partition.store.write(partition.encoded(taken), 'id', 6)
    partition.flushed(taken)
    assert partition.flushing is None and partition.get('a') == 10


def test_writes_of_a_skipped_checkpoint_are_taken_again_under_newer_ones(partition):
    partition.set('a', 1)
    partition.set('b', 1)
    partition.cut()                        # never stored: its checkpoint was skipped
    partition.set('a', 2)
    assert partition.cut() == {'a': 2, 'b': 1}


def test_only_the_guard_holder_fills_the_cache(partition):
    partition.store.write([(b'a', b'1')], 'id', 1)
    assert partition.get('a') == 1 and len(partition.cache) == 0     # a web request
    assert partition.get('a', fill_cache=True) == 1 and len(partition.cache) == 1
    partition.store.write([(b'a', b'5')], 'id', 2)                   # behind its back
    assert partition.get('a') == 1                                    # served from the cache


def test_a_partition_that_comes_back_never_sees_its_old_cache(partition, tmp_path):
    partition.get('k', fill_cache=True)                    # caches "missing"
    partition.store.write([(b'k', b'9')], 'id', 1)         # another owner wrote meanwhile
    again = TablePartition(partition.table, 0, partition.store, 'id', partition.cache)
    assert again.get('k') == 9


def test_the_cache_is_bounded_and_keeps_what_is_read_again():
    cache = ValueCache(size=10)
    for n in range(100):
        cache.put(n, n)
        assert cache.get(0, promote=True) == 0 or n == 0     # 0 is read all the time
    assert len(cache) <= 10 and cache.get(0) == 0


def test_items_overlay_unflushed_changes_on_stored_ones(partition):
    partition.store.write([(b'a', b'1'), (b'b', b'2'), (b'c', b'3')], 'id', 1)
    partition.dirty.update({'b': DELETED, 'c': 30, 'd': 4})
    assert dict(partition.items()) == {'a': 1, 'c': 30, 'd': 4}


def windowed_partition(tmp_path):
    table = runner.App('unit').Table('w', default=int).tumbling(10, expires=20)
    return WindowedPartition(table, 0, PartitionStore(tmp_path / 'w', windowed=True), 'id',
                             ValueCache())


def test_a_key_s_windows_come_from_a_prefix_of_the_store(tmp_path):
    part = windowed_partition(tmp_path)
    part.store.write(part.encoded({('a', 0.0): 1, ('ab', 0.0): 7, ('a', 10.0): 2}), 'id', 3)
    part.set(('a', 20.0), 3)
    assert part.windows('a') == [(0.0, 1), (10.0, 2), (20.0, 3)]
    part.store.close()


def test_windows_expire_oldest_first_from_the_index(tmp_path):
    part = windowed_partition(tmp_path)
    part.store.write(part.encoded({('a', 0.0): 1, ('b', 10.0): 1, ('a', 40.0): 1}), 'id', 3)
    part.observe(39.0)                       # newest event: windows ending before 19 expire
    assert part.cut() == {('a', 0.0): DELETED}
    part.store.close()
    reopened = windowed_partition(tmp_path)
    assert reopened.latest == 40.0           # newest window start after a restart
    reopened.store.close()


def test_a_read_that_may_not_fill_the_cache_never_writes_to_it():
    cache = ValueCache(size=4)
    cache.put('k', 1)
    cache.put('x', 0)                  # 'k' is now in the old generation
    young = dict(cache._young)
    assert cache.get('k') == 1 and cache._young == young
    assert cache.get('k', promote=True) == 1 and 'k' in cache._young


def test_keys_come_in_stored_order_with_unflushed_ones_merged_in(partition):
    partition.store.write([(b'a', b'1'), (b'c', b'3'), (b'e', b'5')], 'id', 1)
    partition.set('b', 2)
    partition.set('c', DELETED)
    partition.set('f', 6)
    assert [(k, v) for _, k, v in partition.ordered()] == [('a', 1), ('b', 2), ('e', 5),
                                                           ('f', 6)]
    assert [k for _, k, _ in partition.ordered(after=b'b')] == ['e', 'f']
