"""Log lines: kafka-python's expected complaints at a stop are debug lines; plurals."""

import datetime
import json
import logging
import signal
import subprocess
import sys
import textwrap

import pytest
from harness import runner_env

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


def test_percent_i_in_the_logfile_is_the_slot_number_and_main_for_the_main_process(tmp_path):
    template = str(tmp_path / 'w-%i.log')
    for role, slot in (('main', None), ('slot', 0), ('slot', 1)):
        logs.setup('info', template, role, slot=slot)
        logging.getLogger('runner').info('hello from %s', role)
    logs.setup('info', None, 'test')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['w-0.log', 'w-1.log', 'w-main.log']
    assert '[slot 1] INFO runner: hello from slot' in (tmp_path / 'w-1.log').read_text()
    assert '[main] INFO runner: hello from main' in (tmp_path / 'w-main.log').read_text()


def test_json_lines_name_time_level_role_slot_logger_message_and_exception(tmp_path):
    path = tmp_path / 'log'
    logs.setup('info', str(path), 'slot', ['s3cr3t'], 'json', slot=2)
    try:
        logging.getLogger('runner.state').info('recovered %d records', 5)
        try:
            raise ValueError('bad s3cr3t "quoted" ünïcode')
        except ValueError:
            logging.getLogger('runner').exception('failed with s3cr3t')
    finally:
        logs.setup('info', None, 'test')
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert set(first) == {'time', 'level', 'role', 'slot', 'pid', 'logger', 'message',
                          'exception'}
    assert (first['level'], first['role'], first['slot'], first['logger'], first['message'],
            first['exception']) == ('INFO', 'slot', 2, 'runner.state', 'recovered 5 records', None)
    assert datetime.datetime.fromisoformat(first['time']).tzinfo is not None
    assert second['message'] == 'failed with ***' and second['level'] == 'ERROR'
    assert second['exception'].startswith('Traceback') and 'ValueError: bad *** "quoted"' in \
        second['exception']
    assert 's3cr3t' not in path.read_text()


def test_the_main_process_json_lines_have_no_slot(tmp_path):
    path = tmp_path / 'log'
    logs.setup('info', str(path), 'main', log_format='json')
    logging.getLogger('runner').warning('w')
    logs.setup('info', None, 'test')
    line = json.loads(path.read_text())
    assert (line['role'], line['slot']) == ('main', None)


def test_a_log_file_moved_away_by_logrotate_is_opened_anew(tmp_path):
    path = tmp_path / 'w.log'
    logs.setup('info', str(path), 'main')
    try:
        logging.getLogger('runner').info('before')
        path.rename(tmp_path / 'w.log.1')                   # logrotate's rotation, no copy
        logging.getLogger('runner').info('after')
    finally:
        logs.setup('info', None, 'test')
    assert 'before' in (tmp_path / 'w.log.1').read_text()
    assert 'before' not in path.read_text() and 'after' in path.read_text()


def test_a_link_put_in_the_place_of_a_rotated_log_file_is_not_followed(tmp_path, capfd):
    path, theirs = tmp_path / 'w.log', tmp_path / 'theirs'
    theirs.write_text('')
    logs.setup('info', str(path), 'main')
    try:
        path.rename(tmp_path / 'w.log.1')
        path.symlink_to(theirs)
        for _ in range(3):
            logging.getLogger('runner').info('lost')
        path.unlink()
        logging.getLogger('runner').info('back')
    finally:
        logs.setup('info', None, 'test')
    assert theirs.read_text() == ''
    assert 'back' in path.read_text() and 'lost' not in path.read_text()
    lost = f'runner: cannot use log file {path}: it is a symbolic link; log lines are lost'
    assert capfd.readouterr().err.splitlines() == [
        f'{lost} until it can', f'runner: writing log file {path} again']


def test_a_fatal_signal_after_a_rotation_dumps_the_stacks_into_the_new_file(tmp_path):
    path = tmp_path / 'w.log'
    script = textwrap.dedent(f'''
        import logging, os, signal
        from runner import logs
        logs.setup('info', {str(path)!r}, 'main')
        logging.getLogger('runner').info('before')
        real_open = logs.platform.open_own
        def open_own(*args):      # another thread takes the number the old file had
            global taken
            taken = os.open(os.devnull, os.O_WRONLY)
            return real_open(*args)
        logs.platform.open_own = open_own
        os.rename({str(path)!r}, {str(path)!r} + '.1')
        logging.getLogger('runner').info('after')
        os.kill(os.getpid(), signal.SIGSEGV)
        ''')
    result = subprocess.run([sys.executable, '-c', script], env=runner_env(), cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == -signal.SIGSEGV
    assert 'Fatal Python error: Segmentation fault' in path.read_text()
    assert 'Fatal Python error' not in (tmp_path / 'w.log.1').read_text()


def test_sockets_the_broker_resets_as_it_goes_away_are_counted_debug_lines(logfile):
    """kafka-python logs each connection the broker resets (one per client connection of
    the slot, with a traceback) as an error: what a broker outage looks like, counted."""
    logs.connection_errors_suppressed()
    transport = logging.getLogger('kafka.net.transport')
    for _ in range(3):
        try:
            raise ConnectionResetError(104, 'Connection reset by peer')
        except ConnectionResetError as exc:
            transport.exception('%s: Error receiving network data closing socket',
                                '<KafkaTCPTransport [none]>')
            transport.exception('%s: Error sending request data: %s',
                                '<KafkaTCPTransport [none]>', exc)
    logging.getLogger('kafka.net.transport').error('%s: unexpected', 'something else')
    lines = logfile.read_text().splitlines()
    assert len(lines) == 1 and 'something else' in lines[0]
    assert logs.connection_errors_suppressed() == 6
