"""LevelDB stores: reference counts, reads that keep a store open, the window index."""

import json
from types import SimpleNamespace

import plyvel
import pytest

from runner.errors import DiskError
from runner.state.stores import PartitionStore, Stores

KEY = ('app-t-changelog', 0)


def stores(tmp_path, windowed=False):
    return Stores(lambda key: tmp_path / key[0] / str(key[1]), lambda _changelog: windowed)


def test_a_store_closes_when_its_last_reference_goes(tmp_path):
    registry = stores(tmp_path)
    first = registry.open(KEY)
    assert registry.open(KEY) is first                 # the task and the reader share it
    registry.release(KEY)
    assert not first.closed
    registry.release(KEY)
    assert first.closed


def test_a_read_keeps_the_store_open_after_its_owner_lets_go(tmp_path):
    registry = stores(tmp_path)
    store = registry.open(KEY)
    store.write([(b'k', b'1')], 'id', 1)
    with registry.reading(KEY) as read:
        registry.release(KEY)                           # the partition moves away meanwhile
        assert read is store and not store.closed and store.get(b'k') == b'1'
    assert store.closed
    with registry.reading(KEY) as late:
        assert late is None                             # the request answers 503


def test_values_and_position_are_written_together_and_cleared_together(tmp_path):
    store = PartitionStore(tmp_path / 's')
    assert store.position() == (None, 0)
    store.write([(b'a', b'1'), (b'b', b'2')], 'id', 7)
    store.write([(b'a', None)], 'id', 8)
    assert dict(store.items()) == {b'b': b'2'} and store.position() == ('id', 8)
    store.clear()
    assert dict(store.items()) == {} and store.position() == (None, 0)
    store.close()


def test_the_window_index_lists_windows_oldest_first(tmp_path):
    store = PartitionStore(tmp_path / 'w', windowed=True)

    def key(name, start):
        return json.dumps([name, start], separators=(',', ':')).encode()
    store.write([(key('a', 120.0), b'1'), (key('b', 60.0), b'1'), (key('a', 60.0), b'2')],
                'id', 3)
    assert list(store.windows_before(120.0)) == [key('a', 60.0), key('b', 60.0)]
    assert store.newest_window() == 120.0
    store.write([(key('a', 60.0), None)], 'id', 4)
    assert list(store.windows_before(1e9)) == [key('b', 60.0), key('a', 120.0)]
    assert dict(store.items(b'["a",')) == {key('a', 120.0): b'1'}
    store.close()


def test_items_after_a_key_start_past_it(tmp_path):
    store = PartitionStore(tmp_path / 's')
    store.write([(b'a', b'1'), (b'b', b'2'), (b'c', b'3'), (b'ca', b'4')], 'id', 4)
    assert [k for k, _ in store.items(after=b'b')] == [b'c', b'ca']
    assert [k for k, _ in store.items(after=b'bb')] == [b'c', b'ca']
    assert [k for k, _ in store.items(b'c', after=b'c')] == [b'ca']
    store.close()


def test_a_corrupt_store_is_deleted_so_that_its_changelog_restores_it(tmp_path, caplog):
    store = PartitionStore(tmp_path / 'p0')
    store.write([(b'k', b'v')], 'topic-id', 5)
    store.close()
    for manifest in (tmp_path / 'p0').glob('MANIFEST-*'):
        manifest.write_bytes(b'garbage' * 10)
    store = PartitionStore(tmp_path / 'p0')
    assert store.get(b'k') is None
    assert store.position() == (None, 0)            # recovery reads the whole changelog
    assert 'is corrupt (Corruption: ' in caplog.text


def test_a_store_that_cannot_be_written_says_so_in_one_line(tmp_path):
    store = PartitionStore(tmp_path / 'p0')
    store.close()

    def full_disk():
        raise plyvel.IOError(b'IO error: p0/000003.log: No space left on device')
    store._db = SimpleNamespace(write_batch=full_disk)
    with pytest.raises(DiskError) as raised:
        store.write([(b'k', b'v')], 'topic-id', 1)
    assert str(raised.value) == (f'cannot write table store {tmp_path / "p0"}: '
                                 'IO error: p0/000003.log: No space left on device')


def test_a_store_that_cannot_be_opened_says_so_in_one_line(tmp_path):
    (tmp_path / 'p0').write_text('a file where the directory goes')
    with pytest.raises(DiskError, match=r'^cannot open table store .*p0: File exists$'):
        PartitionStore(tmp_path / 'p0')
