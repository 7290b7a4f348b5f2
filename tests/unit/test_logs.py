"""Log lines: kafka-python's expected complaints at a stop are debug lines; plurals."""

import logging

import pytest

from runner import logs


@pytest.fixture
def logfile(tmp_path):
    path = tmp_path / 'log'
    logs.setup('info', str(path), 'slot 0')
    yield path
    logs.setup('info', None, 'test')
    logs._stop_noise.stopping = False


def test_cancelled_requests_at_a_stop_are_not_errors(logfile):
    kafka = logging.getLogger('kafka.cluster')
    kafka.error('Metadata refresh: failed %s', 'Cancelled')
    logs.stopping()
    kafka.error('Metadata refresh: failed %s', 'Cancelled')
    kafka.error('Metadata refresh: failed %s', 'KafkaConnectionError')
    lines = logfile.read_text().splitlines()
    assert len(lines) == 2
    assert 'ERROR kafka.cluster: Metadata refresh: failed Cancelled' in lines[0]
    assert 'ERROR kafka.cluster: Metadata refresh: failed KafkaConnectionError' in lines[1]


def test_plurals():
    assert [logs.plural(n, 'slot') for n in (0, 1, 2)] == ['0 slots', '1 slot', '2 slots']
