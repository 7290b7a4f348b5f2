"""How far a standby replica is behind its changelog, which decides when a warm-up ends."""

from kafka import TopicPartition

from runner.config import Settings
from runner.state.recovery import ChangelogReader, Replica

KEY = ('app-counts-changelog', 0)
TP = TopicPartition(*KEY)


class FakeConsumer:
    """A changelog under steady load: the high watermark runs ahead of what a read_committed
    reader can read (an open transaction's records, then its commit marker)."""

    def __init__(self, last_stable, highwater, position):
        self.last_stable, self._highwater, self._position = last_stable, highwater, position

    def highwater(self, tp):
        return self._highwater

    def end_offsets(self, tps):
        return {tp: self.last_stable for tp in tps}

    def position(self, tp):
        return self._position


def reader(guarantee, consumer):
    made = ChangelogReader(Settings(processing_guarantee=guarantee), 'slot-0', None,
                           lambda *args: None, lambda *args: None)
    made._consumer = consumer
    made._replicas[KEY] = Replica(KEY, None, 'topic-id', 9)     # data up to offset 8 applied
    return made


def test_under_exactly_once_a_replica_that_read_every_committed_record_has_no_lag():
    # offset 9 is the commit marker of the last committed transaction; 10 and 11 belong to
    # a transaction still open: read_committed cannot read them yet
    made = reader('exactly_once', FakeConsumer(last_stable=10, highwater=12, position=10))
    made._measure_lags()
    assert made.caught_up(0) == {KEY}


def test_under_exactly_once_a_replica_behind_the_last_stable_offset_lags_by_the_difference():
    made = reader('exactly_once', FakeConsumer(last_stable=15, highwater=15, position=10))
    made._measure_lags()
    assert made.caught_up(4) == set() and made.caught_up(5) == {KEY}


def test_under_at_least_once_the_lag_is_to_the_high_watermark():
    made = reader('at_least_once', FakeConsumer(last_stable=12, highwater=12, position=9))
    made._measure_lags()
    assert made.caught_up(2) == set() and made.caught_up(3) == {KEY}
