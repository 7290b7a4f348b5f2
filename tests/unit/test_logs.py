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


def test_secrets_are_written_as_stars_wherever_they_show_up(tmp_path):
    path = tmp_path / 'log'
    secret = 'pa55-wörd'
    logs.setup('debug', str(path), 'slot 0', ['', secret, 'T0K3N'])
    try:
        sasl_bytes = b'u\0u\0' + secret.encode()         # as kafka-python logs a login
        logging.getLogger('kafka.protocol.parser').debug('Sending %r', sasl_bytes)
        logging.getLogger('kafka.admin').debug('configuration: %s', {'password': secret})
        try:
            raise ValueError(f'bad {secret}')
        except ValueError:
            logging.getLogger('runner').exception('token T0K3N failed')
    finally:
        logs.setup('info', None, 'test')
    text = path.read_text()
    assert 'pa55' not in text and 'T0K3N' not in text and text.count('***') == 4
