"""Table state bookkeeping without Kafka: cuts, recovery requests, local cleanup."""

import os
import time

from kafka import TopicPartition

import runner
from runner.state import StateManager
from runner.store import PartitionStore


class FakeReader:
    """Stands in for the changelog reader thread: records what it was asked to do."""

    def __init__(self, store_path, on_recovered):
        self.store_path = store_path
        self.on_recovered = on_recovered
        self.asked: list = []
        self.remaining = 0

    def recover(self, keys, request):
        self.asked.append(('recover', keys, request))

    def drop(self, keys):
        self.asked.append(('drop', keys))

    def follow(self, keys):
        self.asked.append(('follow', keys))

    def positions(self):
        return {}

    def store_for(self, key):
        return None


def make_state(tmp_path, partitions=2):
    app = runner.App('stateapp')
    table = app.Table('counts', default=int, partitions=partitions)
    state = StateManager([table], tmp_path, FakeReader)
    return app, table, state


def recover_all(state, numbers, tmp_path):
    """Play the reader: hand over a store for every partition it was asked to recover."""
    state.assigned(set(numbers))
    _, keys, request = state.reader.asked[-1]
    for key in keys:
        state.reader.on_recovered(key, request, PartitionStore(state.store_path(key)), 'id-1')


def test_partitions_are_held_until_recovered(tmp_path):
    _, table, state = make_state(tmp_path)
    assert state.assigned({0, 1}) == {0, 1}
    assert state.recovering()[0] == {0, 1}
    _, keys, request = state.reader.asked[-1]
    state.reader.on_recovered(keys[0], request, PartitionStore(state.store_path(keys[0])), 'x')
    assert state.take_recovered() == {0}
    assert sorted(table.active) == [0]
    assert state.assigned({0, 1}) == set()          # nothing new to recover


def test_a_stale_recovery_is_closed_not_activated(tmp_path):
    _, table, state = make_state(tmp_path, partitions=1)
    state.assigned({0})
    _, [key], old = state.reader.asked[-1]
    state.revoked({0})
    state.assigned({0})
    _, _, new = state.reader.asked[-1]
    stale = PartitionStore(state.store_path(key))
    state.reader.on_recovered(key, old, stale, 'x')
    assert not table.active and state.take_recovered() == set()
    fresh = PartitionStore(state.store_path(key))   # the stale store released its lock
    state.reader.on_recovered(key, new, fresh, 'x')
    assert list(table.active) == [0] and table.active[0].store is fresh


def test_a_cut_takes_writes_and_offsets_under_the_guard(tmp_path):
    _, table, state = make_state(tmp_path)
    recover_all(state, {0, 1}, tmp_path)
    table.active[0].dirty['a'] = 3
    tp = TopicPartition('words', 0)
    cut = state.cut(lambda numbers: {tp: 7} if 0 in numbers else {}, {0, 1})
    assert cut.offsets == {tp: 7} and not cut.busy
    [(partition, changes)] = cut.changes
    assert changes == {'a': 3} and partition.dirty == {} and partition.get('a') == 3
    table.active[1].guard.lock.acquire()
    busy = state.cut(lambda numbers: {}, {0, 1})
    assert busy.busy == {1}


def test_unused_local_state_is_removed_after_the_delay(tmp_path):
    _, _, state = make_state(tmp_path, partitions=3)
    recover_all(state, {0}, tmp_path)
    state.follow({1})
    for number in (1, 2):
        PartitionStore(state.store_path(('stateapp-counts-changelog', number))).close()
    old = time.time() - 3600
    for path in (tmp_path / 'tables' / 'counts').glob('*/*'):
        os.utime(path, (old, old))
    removed = state.remove_unused(older_than=600)
    assert [p.name for p in removed] == ['2']
    assert sorted(p.name for p in (tmp_path / 'tables' / 'counts').iterdir()) == ['0', '1']
