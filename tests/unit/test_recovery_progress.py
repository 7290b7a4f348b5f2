"""Table recovery says how far it is at least every 5 s: records done of all, rate, time left
(on a fake clock)."""

import logging

from runner.config import Settings
from runner.state import recovery
from runner.state.recovery import ChangelogReader, Replica


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now


def test_recovery_logs_records_done_rate_and_time_left_every_5_seconds(monkeypatch, caplog):
    clock = FakeClock()
    monkeypatch.setattr(recovery, 'time', clock)
    reader = ChangelogReader(Settings(), 'slot-0', None, lambda *a: None, lambda *a: None)
    for partition in (0, 1):
        replica = Replica(('app-counts-changelog', partition), None, 'topic-id', 0)
        replica.target = 5000
        reader._replicas[replica.key] = replica
    caplog.set_level(logging.INFO, logger=recovery.__name__)
    for second in range(1, 13):
        clock.now = float(second)
        for replica in reader._replicas.values():
            replica.offset = 250 * second                   # 500 records/s in all
        reader._log_progress()
    assert [record.getMessage() for record in caplog.records] == [     # at 5 s and 10 s
        'recovering tables: 2500 of 10000 records (25%), 500 records/s, about 15s left',
        'recovering tables: 5000 of 10000 records (50%), 500 records/s, about 10s left']


def test_recovery_that_made_no_progress_yet_says_so_without_a_time_left(monkeypatch, caplog):
    clock = FakeClock()
    monkeypatch.setattr(recovery, 'time', clock)
    reader = ChangelogReader(Settings(), 'slot-0', None, lambda *a: None, lambda *a: None)
    replica = Replica(('app-counts-changelog', 0), None, 'topic-id', 100)
    replica.target = 600
    reader._replicas[replica.key] = replica
    caplog.set_level(logging.INFO, logger=recovery.__name__)
    clock.now = 5.0
    reader._log_progress()
    assert [record.getMessage() for record in caplog.records] == [
        'recovering tables: 0 of 500 records (0%), 0 records/s, rate unknown']
