"""A changelog reader that cannot work reports why, so the slot stops with an exit code
rather than waiting forever for a recovery that never finishes."""

from types import SimpleNamespace

import pytest
from kafka.errors import KafkaConnectionError

from runner.errors import EX_SOFTWARE
from runner.state import recovery
from runner.state.recovery import ChangelogReader

SETTINGS = SimpleNamespace(processing_guarantee='at_least_once', kafka_client=dict,
                           broker_timeout=1)


class Stores:
    def release(self, key):
        pass


def failures_of(reader):
    """Start ``reader``, wait for its thread to end and return the failures it reported."""
    reader.start()
    reader.thread.join(10)
    assert not reader.thread.is_alive()
    return reader.failures


def made():
    failures = []
    reader = ChangelogReader(SETTINGS, 'slot-0', Stores(), lambda *args: None,
                             lambda reason, code=EX_SOFTWARE: failures.append((reason, code)))
    reader.failures = failures
    return reader


def refused(**_):
    raise KafkaConnectionError('no broker')


class Consumer:
    """A consumer that cannot say where a changelog ends."""

    def __init__(self, **_):
        self.closed = False

    def end_offsets(self, tps):
        raise RuntimeError('end_offsets went wrong')

    def close(self, autocommit):
        self.closed = True


class Admin:
    def __init__(self, **_):
        pass

    def close(self):
        pass


@pytest.mark.parametrize('place', ['KafkaConsumer', 'KafkaAdminClient'])
def test_a_reader_that_cannot_create_its_clients_reports_the_failure(monkeypatch, place):
    monkeypatch.setattr(recovery, 'KafkaConsumer', Consumer)
    monkeypatch.setattr(recovery, 'KafkaAdminClient', Admin)
    monkeypatch.setattr(recovery, place, refused)
    reader = made()
    assert failures_of(reader) == [
        ('the changelog reader failed: KafkaConnectionError: no broker', EX_SOFTWARE)]


def test_a_reader_that_raises_while_recovering_reports_the_failure(monkeypatch):
    monkeypatch.setattr(recovery, 'KafkaConsumer', Consumer)
    monkeypatch.setattr(recovery, 'KafkaAdminClient', Admin)
    reader = made()
    reader.recover([('app-t-changelog', 0)], 1)
    assert failures_of(reader) == [
        ('the changelog reader failed: end_offsets went wrong', EX_SOFTWARE)]
