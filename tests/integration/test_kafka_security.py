"""Kafka security against the test broker's SASL_PLAINTEXT listener (PLAIN), the web
token between slots, and secrets that never show."""

import collections
import json
import os
import re
import types
from pathlib import Path

import kafka_broker
import pytest
from apps import count_app, some_words, wait_for_counts
from harness import free_port, produce, run_cli, wait_for

TOKEN = 'web-token-5b0e7c'
WRONG = 'not-the-password-42'
SSL_PASSWORD = 'ssl-key-pass-3e91d0'


@pytest.fixture(scope='module')
def sasl_broker(request):
    """A broker with a SASL listener: the session's, the external broker's when
    ``$KAFKA_SASL_BOOTSTRAP_SERVERS`` names its SASL listener, or else one of this module's
    own."""
    if not os.environ.get('KAFKA_BOOTSTRAP_SERVERS'):
        yield request.getfixturevalue('session_broker')
        return
    if os.environ.get('KAFKA_SASL_BOOTSTRAP_SERVERS'):
        yield types.SimpleNamespace(
            bootstrap_servers=os.environ['KAFKA_BOOTSTRAP_SERVERS'],
            sasl_bootstrap_servers=os.environ['KAFKA_SASL_BOOTSTRAP_SERVERS'])
        return
    with kafka_broker.Broker() as broker:
        yield broker


def config_file(tmp_path, broker, **extra):
    """A config file (private to its user) for the SASL listener, with the password."""
    settings = {'broker': broker.sasl_bootstrap_servers, 'security_protocol': 'SASL_PLAINTEXT',
                'sasl_mechanism': 'PLAIN', 'sasl_username': kafka_broker.SASL_USERNAME,
                'sasl_password': kafka_broker.SASL_PASSWORD, **extra}
    path = tmp_path / 'runner.yaml'
    path.write_text(''.join(f'{key}: {value}\n' for key, value in settings.items()))
    path.chmod(0o600)
    return str(path)


def test_a_stateful_app_round_trips_over_sasl_and_its_slots_ask_each_other_with_the_token(
        tmp_path, names, workers, sasl_broker):
    app = count_app(tmp_path, names)
    config = config_file(tmp_path, sasl_broker, web_token=TOKEN)
    port, pidfile = free_port(count=2), tmp_path / 'w.pid'
    worker = workers.raw(['-A', app, '-c', config, '-p', str(port), '-D', str(tmp_path / 'data'),
                          '-w', '2', '-l', 'debug', '--pidfile', str(pidfile)], port)
    worker.token = TOKEN
    worker.split_between(2)
    words = some_words(500)
    produce(sasl_broker.bootstrap_servers, names['source'], [(w, w) for w in words])
    sent = run_cli(['-c', config, '-A', app, 'send', names['source'], 'extra', '-k', 'extra'],
                   tmp_path)
    assert sent.returncode == 0, sent.stderr
    truth = collections.Counter([*words, 'extra'])
    for slot in (0, 1):                     # each slot forwards the keys it does not own
        wait_for_counts(worker, truth, slot=slot)
    worker.token = None
    assert worker.get('/tables/counts/extra')[0] == 401 and worker.get('/health')[0] == 200
    shown = [worker.log(), sent.stdout + sent.stderr, repr(worker.state(0, '/health'))]
    worker.token = TOKEN
    shown.append(repr(worker.state(0, '/')))
    for args in (['--json'], []):
        status = run_cli(['status', '--pidfile', str(pidfile), *args], tmp_path)
        assert status.returncode == 0, status.stderr
        shown.append(status.stdout)
    assert worker.stop()[0] == 0
    shown.append(worker.log())
    assert 'SASL_PLAINTEXT' in shown[0]     # kafka-python's debug lines are there, starred
    for text in shown:
        assert kafka_broker.SASL_PASSWORD not in text and TOKEN not in text


def test_no_secret_shows_in_any_output_or_file_of_a_worker_logging_json_per_slot_at_debug(
        tmp_path, names, workers, sasl_broker):
    app = count_app(tmp_path, names)
    secrets = {TOKEN, kafka_broker.SASL_PASSWORD, SSL_PASSWORD}
    config = config_file(tmp_path, sasl_broker, web_token=TOKEN, ssl_password=SSL_PASSWORD,
                         log_format='json')
    port, pidfile = free_port(count=2), tmp_path / 'w.pid'
    worker = workers.raw(['-A', app, '-c', config, '-p', str(port), '-D', str(tmp_path / 'data'),
                          '-w', '2', '-l', 'debug', '--pidfile', str(pidfile),
                          '--logfile', str(tmp_path / 'w-%i.log')], port)
    worker.token = TOKEN
    worker.split_between(2)
    words = some_words(200)
    produce(sasl_broker.bootstrap_servers, names['source'], [(w, w) for w in words])
    for slot in (0, 1):
        wait_for_counts(worker, collections.Counter(words), slot=slot)
    (tmp_path / 'w-0.log').rename(tmp_path / 'w-0.log.1')       # as logrotate does
    wait_for(lambda: (tmp_path / 'w-0.log').exists(), 30, 'slot 0 to open its log anew')
    status = run_cli(['status', '--pidfile', str(pidfile), '--json'], tmp_path)
    assert worker.stop()[0] == 0
    files = {path.relative_to(tmp_path): path.read_bytes()      # but the config file
             for path in tmp_path.rglob('*') if path.is_file() and str(path) != config}
    outputs = {'output': worker.log().encode(), 'status': status.stdout.encode(), **files}
    assert not [(where, secret) for where, text in outputs.items() for secret in secrets
                if secret.encode() in text]
    assert b'SASL_PLAINTEXT' in files[Path('w-0.log.1')]    # its debug lines are there,
    assert b'***' in files[Path('w-0.log.1')]               # with the secrets starred
    expected = {'w-main.log': ('main', None), 'w-0.log.1': ('slot', 0), 'w-0.log': ('slot', 0),
                'w-1.log': ('slot', 1)}
    for name, (role, slot) in expected.items():
        lines = [json.loads(line) for line in files[Path(name)].splitlines()]
        assert lines and {(line['role'], line['slot']) for line in lines} == {(role, slot)}


def test_a_wrong_password_is_one_line_and_exit_77_within_the_broker_timeout(
        tmp_path, names, sasl_broker, monkeypatch):
    app = count_app(tmp_path, names)
    monkeypatch.setenv('RUNNER_SASL_PASSWORD', WRONG)
    common = ['-A', app, '-b', sasl_broker.sasl_bootstrap_servers, '--broker-timeout', '3',
              '--security-protocol', 'sasl_plaintext', '--sasl-username', 'runner']
    worker = run_cli([*common, '-p', str(free_port()), '-D', str(tmp_path / 'data'),
                      '-l', 'debug'], tmp_path)
    sent = run_cli([*common, 'send', names['source'], 'x'], tmp_path)
    expected = (f'Kafka at {sasl_broker.sasl_bootstrap_servers} refused the SASL PLAIN login '
                "as 'runner' (SASL_PLAINTEXT) within 3s: check the security settings")
    assert (worker.returncode, sent.returncode) == (77, 77)
    assert worker.stderr.splitlines()[-1] == f'runner: slot 0 could not start: {expected}'
    assert sent.stderr == f'runner: {expected}\n'
    for result in (worker, sent):
        assert 'Traceback' not in result.stderr and WRONG not in result.stderr


def test_a_web_server_beyond_loopback_without_a_token_is_warned_about(tmp_path, names):
    app = count_app(tmp_path, names)
    result = run_cli(['-A', app, '-b', '127.0.0.1:1', '--broker-timeout', '1', '--web-host',
                      '0.0.0.0', '-p', str(free_port()), '-D', str(tmp_path / 'data')], tmp_path)
    assert result.returncode == 69
    assert len(re.findall(r'WARNING .*listens beyond loopback \(0\.0\.0\.0\) without a '
                          r'web_token', result.stderr)) == 1


def test_dead_letters_with_a_wrong_password_are_one_line_and_77_within_the_broker_timeout(
        tmp_path, names, sasl_broker, monkeypatch):
    app = count_app(tmp_path, names)
    monkeypatch.setenv('RUNNER_SASL_PASSWORD', WRONG)
    # the run's own deadline (25 s) is below kafka-python's default bootstrap wait (30 s)
    result = run_cli(['-A', app, '-b', sasl_broker.sasl_bootstrap_servers,
                      '--broker-timeout', '3', '--security-protocol', 'sasl_plaintext',
                      '--sasl-username', 'runner', 'dlq', 'count'], tmp_path, timeout=25)
    expected = (f'Kafka at {sasl_broker.sasl_bootstrap_servers} refused the SASL PLAIN login '
                "as 'runner' (SASL_PLAINTEXT) within 3s: check the security settings")
    assert (result.returncode, result.stderr, result.stdout) == (77, f'runner: {expected}\n', '')
