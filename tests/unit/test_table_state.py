"""A slot's table state without Kafka: recovery requests, stale recoveries, cleanup."""

import os
import time

import runner
from runner.state.manager import StateManager

CHANGELOG = 'stateapp-counts-changelog'


class FakeReader:
    """Stands in for the changelog reader thread: records what it was asked to do."""

    def __init__(self, stores, on_recovered):
        self.stores = stores
        self.on_recovered = on_recovered
        self.asked: list = []

    def remaining(self, requests):
        return None                # this reader never reads where changelogs end

    def recover(self, keys, request):
        self.asked.append(('recover', keys, request))

    def drop(self, keys):
        self.asked.append(('drop', keys))

    def follow(self, keys):
        self.asked.append(('follow', keys))

    def positions(self):
        return {}

    def finish(self, key, request):
        """Play the reader thread: the partition caught up with its changelog."""
        store = self.stores.open(key)
        self.on_recovered(key, request, store, 'id-1')
        return store


def make_state(tmp_path, partitions=2):
    table = runner.App('stateapp').Table('counts', default=int, partitions=partitions)
    return table, StateManager([table], tmp_path, FakeReader)


def test_recovered_partitions_are_handed_over_once(tmp_path):
    _, state = make_state(tmp_path)
    state.recover([(CHANGELOG, 0), (CHANGELOG, 1)])
    _, keys, request = state.reader.asked[-1]
    assert state.recovering() == ({(CHANGELOG, 0), (CHANGELOG, 1)}, None)
    state.reader.finish(keys[0], request)
    [(key, partition)] = state.take_recovered()
    assert key == (CHANGELOG, 0) and partition.number == 0
    assert state.take_recovered() == [] and state.describe_recovering() == (['counts[1]'], None)


def test_a_recovery_asked_for_before_a_revocation_is_released_not_handed_over(tmp_path):
    _, state = make_state(tmp_path, partitions=1)
    key = (CHANGELOG, 0)
    state.recover([key])
    _, _, old = state.reader.asked[-1]
    state.cancel([key])
    assert state.reader.asked[-1] == ('drop', [key])
    state.recover([key])
    _, _, new = state.reader.asked[-1]
    stale = state.reader.finish(key, old)
    assert state.take_recovered() == [] and stale.closed
    state.reader.finish(key, new)
    [(_, partition)] = state.take_recovered()
    assert not partition.store.closed


def test_unused_local_state_is_removed_after_the_delay(tmp_path):
    _, state = make_state(tmp_path, partitions=3)
    held = state.stores.open((CHANGELOG, 0))             # active or standby here
    for number in (1, 2):
        state.stores.open((CHANGELOG, number))
        state.stores.release((CHANGELOG, number))
    old = time.time() - 3600
    for path in (tmp_path / 'tables' / 'counts').glob('*'):
        for entry in path.iterdir():
            os.utime(entry, (old, old))
    state.stores.open((CHANGELOG, 1))                    # in use again, however old
    removed = state.remove_unused(older_than=600)
    assert [p.name for p in removed] == ['2']
    assert sorted(p.name for p in (tmp_path / 'tables' / 'counts').iterdir()) == ['0', '1']
    assert not held.closed
