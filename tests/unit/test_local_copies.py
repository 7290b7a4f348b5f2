"""What a local copy of a partition answers for a key, plain and windowed."""

import runner
from runner.app.context import MISSING
from runner.runtime.queries import _stored, key_from_text, url_text
from runner.state.partitions import TablePartition, ValueCache
from runner.state.stores import PartitionStore


def test_a_standby_copy_answers_a_windowed_key_with_its_windows(tmp_path):
    app = runner.App('q')
    table = app.Table('w', default=int).tumbling(10)
    store = PartitionStore(tmp_path / 'w', windowed=True)
    writer = TablePartition(table, 0, store, 'id', ValueCache())
    store.write(writer.encoded({('a', 10.0): 2, ('a', 0.0): 1, ('ab', 0.0): 9}), 'id', 3)
    assert _stored(table, store, 'a') == [(0.0, 1), (10.0, 2)]
    assert _stored(table, store, 'zz') is MISSING
    store.close()


def test_a_standby_copy_answers_a_plain_key(tmp_path):
    table = runner.App('q').Table('t', default=int)
    store = PartitionStore(tmp_path / 't')
    store.write([(b'k', b'5')], 'id', 1)
    assert _stored(table, store, 'k') == 5 and _stored(table, store, 'x') is MISSING
    store.close()


def test_keys_travel_in_urls_as_they_came():
    table = runner.App('q').Table('t', key_serializer='json')
    for key in (42, '42', 'a b', ['x', 1]):
        assert key_from_text(table, url_text(table, key)) == key
