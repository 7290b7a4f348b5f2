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
    kafka.error('Metadata refresh: failed %s', 'TopicAuthorizationFailedError')
    lines = logfile.read_text().splitlines()
    assert len(lines) == 2
    assert 'ERROR kafka.cluster: Metadata refresh: failed Cancelled' in lines[0]
    assert 'ERROR kafka.cluster: Metadata refresh: failed TopicAuthorization' in lines[1]


def test_slow_task_warnings_are_debug_lines_at_any_time(logfile):
    logging.getLogger('kafka.net.selector').warning(
        'Task %r ran for %.3fs (>%.3fs threshold). It is blocking the event loop -- likely a '
        'tight sync loop inside a coroutine. Other pollers will time out.', 'poll', 0.17, 0.1)
    logging.getLogger('kafka.net.selector').warning('Task %s left RUNNING after step', 'poll')
    lines = logfile.read_text().splitlines()
    assert len(lines) == 1 and 'left RUNNING after step' in lines[0]


def test_heartbeats_cancelled_at_a_stop_are_not_errors(logfile):
    coordinator = logging.getLogger('kafka.coordinator')
    logs.stopping()
    coordinator.error('Error sending %s to node %s [%s]', 'HeartbeatRequest', 1, 'Cancelled')
    coordinator.error('Error sending %s to node %s [%s]', 'HeartbeatRequest', 1,
                      'NotCoordinatorError')
    lines = logfile.read_text().splitlines()
    assert len(lines) == 1 and 'NotCoordinatorError' in lines[0]


def test_connection_errors_while_kafka_is_away_are_counted_debug_lines(logfile):
    logs.connection_errors_suppressed()
    for _ in range(3):
        logging.getLogger('kafka.net.manager').error(
            'Connection failed: %s', 'KafkaConnectionError: [Errno 111] Connection refused')
        logging.getLogger('kafka.coordinator').error(
            'Error sending %s to node %s [%s]', 'HeartbeatRequest', 1, 'KafkaConnectionError')
        logging.getLogger('kafka.cluster').warning(
            'No node available for metadata refresh - backoff/retry')
    logging.getLogger('runner.runtime.consumer').warning('Kafka cannot be reached')
    lines = logfile.read_text().splitlines()
    assert len(lines) == 1 and 'Kafka cannot be reached' in lines[0]
    assert logs.connection_errors_suppressed() == 9
    assert logs.connection_errors_suppressed() == 0


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
