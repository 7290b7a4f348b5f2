"""Settings: parsing, validation and the order in which sources win."""

import shutil
import subprocess

import pytest

from runner.cli import SETTING_OPTIONS, load_options, parse
from runner.config import (
    MAX_CONFIG_BYTES,
    MAX_SECONDS,
    Options,
    Settings,
    build,
    check_settings,
    load_file,
    parse_broker_url,
    positive_seconds,
    secrets_from_environment,
)
from runner.errors import ConfigError, UsageError


@pytest.mark.parametrize(('url', 'servers'), [
    ('kafka://localhost:9092', ['localhost:9092']),
    ('kafka://a:1;kafka://b:2', ['a:1', 'b:2']),
    ('a:1,b', ['a:1', 'b:9092']),
    ('kafka://h', ['h:9092']),
])
def test_broker_urls(url, servers):
    assert parse_broker_url(url) == servers


@pytest.mark.parametrize('url', ['', 'kafka://', 'host:port'])
def test_bad_broker_urls(url):
    with pytest.raises(ConfigError):
        parse_broker_url(url)


def test_command_line_wins_over_file_over_app():
    settings = build({'web_port': 7000, 'broker': 'a:1'}, {'web_port': 7001, 'loglevel': 'debug'},
                     {'web_port': 7002})
    assert (settings.web_port, settings.broker, settings.loglevel) == (7002, 'a:1', 'debug')
    assert settings.commit_interval == Settings.commit_interval


def test_settings_are_checked_and_converted():
    checked = check_settings({'web-port': '6070', 'commit_interval': '0.5', 'loglevel': 'INFO'},
                             'test')
    assert checked == {'web_port': 6070, 'commit_interval': 0.5, 'loglevel': 'info'}


@pytest.mark.parametrize('values', [
    {'web_port': 'x'}, {'web_port': 70000}, {'commit_interval': 0}, {'loglevel': 'loud'},
    {'max_inflight': 0}, {'bogus': 1}, {'web_port': True},
])
def test_bad_settings_raise_the_given_error(values):
    with pytest.raises(UsageError):
        check_settings(values, 'the command line', UsageError)


def test_config_file_errors(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('web_port: [1,\n')
    with pytest.raises(ConfigError, match='bad YAML .* line'):
        load_file(str(bad))
    with pytest.raises(ConfigError, match='cannot read'):
        load_file(str(tmp_path / 'missing.yaml'))
    listing = tmp_path / 'list.yaml'
    listing.write_text('- a\n- b\n')
    with pytest.raises(ConfigError, match='mapping'):
        load_file(str(listing))


def test_rebalancing_settings_are_checked():
    checked = check_settings({'assignor': 'EAGER', 'static_membership': 'no',
                              'acceptable_lag': '500'}, 'test')
    assert checked == {'assignor': 'eager', 'static_membership': False, 'acceptable_lag': 500}
    assert check_settings({'static_membership': True}, 'app') == {'static_membership': True}
    for bad in ({'assignor': 'sticky'}, {'static_membership': 'maybe'}, {'acceptable_lag': -1}):
        with pytest.raises(ConfigError):
            check_settings(bad, 'test')


def test_a_config_file_with_aliases_is_refused_before_it_expands(tmp_path):
    path = tmp_path / 'c.yaml'
    lines = ['a: &a [x, x]']
    for n in range(9):              # each level nine times the one before: 2 * 9**9 items
        below = 'a' if n == 0 else f'l{n - 1}'
        lines.append(f'l{n}: &l{n} [' + ', '.join([f'*{below}'] * 9) + ']')
    path.write_text('\n'.join(lines) + '\n')
    with pytest.raises(ConfigError, match=r'at line 2: aliases \(\*name\) are not allowed'):
        load_file(str(path))


def test_a_config_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / 'c.yaml'
    path.write_bytes(b'web_port: 1\n\xff\n')
    with pytest.raises(ConfigError, match='is not UTF-8 text'):
        load_file(str(path))


def test_a_broker_url_with_a_password_is_refused_without_showing_it():
    with pytest.raises(ConfigError) as caught:
        check_settings({'broker': 'kafka://user:secret@h:9092,h2:9092'}, 'here')
    assert 'secret' not in str(caught.value) and 'no user name or password' in str(caught.value)


def test_a_long_bad_value_is_quoted_short():
    with pytest.raises(ConfigError) as caught:
        check_settings({'web_port': ['x'] * 1000}, 'here')
    assert len(str(caught.value)) < 200


def test_security_choices_are_named_in_any_case_and_reach_every_client_the_same():
    checked = check_settings({'security_protocol': 'sasl-ssl', 'sasl_mechanism': 'scram_sha_512',
                              'sasl_username': 'u', 'sasl_password': 'p'}, 'here')
    assert checked['security_protocol'] == 'SASL_SSL'
    assert checked['sasl_mechanism'] == 'SCRAM-SHA-512'
    client = build(checked, {}, {}).kafka_client()
    assert client == {'bootstrap_servers': ['localhost:9092'], 'security_protocol': 'SASL_SSL',
                      'sasl_mechanism': 'SCRAM-SHA-512', 'sasl_plain_username': 'u',
                      'sasl_plain_password': 'p', 'ssl_cafile': None, 'ssl_certfile': None,
                      'ssl_keyfile': None, 'ssl_password': None, 'ssl_check_hostname': True,
                      'reconnect_backoff_max_ms': 1000}
    assert Settings().kafka_client()['sasl_mechanism'] is None


@pytest.mark.parametrize(('values', 'problem'), [
    ({'security_protocol': 'TLS'}, 'choose from PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL'),
    ({'sasl_mechanism': 'GSSAPI'}, 'choose from PLAIN, SCRAM-SHA-256, SCRAM-SHA-512'),
    ({'ssl_check_hostname': 'perhaps'}, 'must be true or false'),
    ({'sasl_username': ['a', 'b']}, 'expected text'),
])
def test_bad_security_settings_are_one_line_errors(values, problem):
    for error in (ConfigError, UsageError):
        with pytest.raises(error) as caught:
            check_settings(values, 'here', error)
        assert problem in str(caught.value) and '\n' not in str(caught.value)


def test_files_named_by_ssl_settings_must_be_readable(tmp_path):
    ca = tmp_path / 'ca.pem'
    ca.write_text('-----BEGIN CERTIFICATE-----\n')
    assert check_settings({'ssl_cafile': str(ca)}, 'here') == {'ssl_cafile': str(ca)}
    with pytest.raises(ConfigError, match=r"invalid ssl_keyfile '.*missing.pem' in here: "
                                          'cannot read it: No such file or directory'):
        check_settings({'ssl_keyfile': str(tmp_path / 'missing.pem')}, 'here')
    with pytest.raises(UsageError, match='cannot read it: Is a directory'):
        check_settings({'ssl_certfile': str(tmp_path)}, 'the command line', UsageError)


def test_sasl_needs_a_user_name_and_a_password():
    with pytest.raises(ConfigError, match='SASL_PLAINTEXT needs sasl_username and sasl_password'):
        build({'security_protocol': 'SASL_PLAINTEXT', 'sasl_username': 'u'}, {}, {})


SECRET = 'hunter2-do-not-show'


@pytest.mark.parametrize('name', ['sasl_password', 'ssl_password', 'web_token'])
def test_a_secret_is_never_quoted_in_an_error_or_a_repr(name):
    with pytest.raises(ConfigError) as caught:
        check_settings({name: [SECRET]}, 'here')
    assert SECRET not in str(caught.value) and f'invalid {name} (secret) in here' in str(
        caught.value)
    settings = build({name: SECRET}, {}, {})
    assert SECRET not in repr(settings) and settings.secrets() == [SECRET]


def test_secrets_come_from_the_environment_not_the_command_line():
    assert secrets_from_environment({'RUNNER_SASL_PASSWORD': 'p', 'RUNNER_WEB_TOKEN': '',
                                     'RUNNER_SSL_PASSWORD': 'k'}) == {
        'sasl_password': 'p', 'ssl_password': 'k'}
    assert not {'sasl_password', 'ssl_password', 'web_token'} & set(SETTING_OPTIONS)


@pytest.fixture(scope='module')
def client_certificate(tmp_path_factory):
    """A self-signed certificate and its key, encrypted with the password ``kpw``."""
    where = tmp_path_factory.mktemp('tls')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-days', '1',
                    '-subj', '/CN=runner', '-passout', 'pass:kpw', '-keyout',
                    str(where / 'key.pem'), '-out', str(where / 'cert.pem')],
                   check=True, capture_output=True)
    return {'ssl_certfile': str(where / 'cert.pem'), 'ssl_keyfile': str(where / 'key.pem'),
            'ssl_cafile': str(where / 'cert.pem'), 'security_protocol': 'SSL'}


@pytest.mark.skipif(not shutil.which('openssl'), reason='needs the openssl command')
def test_tls_files_are_loaded_with_their_password_when_the_settings_are_read(
        client_certificate):
    assert build(client_certificate, {'ssl_password': 'kpw'}, {}).ssl_password == 'kpw'
    for password in ('wrong', None):        # never OpenSSL's prompt on the terminal
        with pytest.raises(ConfigError, match='cannot load the client certificate .*wrong '
                                              'ssl_password'):
            build(client_certificate, {'ssl_password': password}, {})
    with pytest.raises(ConfigError, match='ssl_cafile .* holds no PEM certificate'):
        build(client_certificate, {'ssl_cafile': client_certificate['ssl_keyfile']}, {})


def test_the_main_process_leaves_security_to_the_slots_which_know_the_app_settings():
    options = Options(app='a', file={'security_protocol': 'SASL_PLAINTEXT',
                                     'sasl_username': 'u'})
    assert options.base_settings().security_protocol == 'SASL_PLAINTEXT'
    assert options.settings_for({'sasl_password': 'p'}, 0).sasl_password == 'p'
    with pytest.raises(ConfigError, match='needs sasl_username and sasl_password'):
        options.settings_for({}, 0)


FLOAT_SETTINGS = [name for name, value in vars(Settings).items()
                  if isinstance(value, float)]


@pytest.mark.parametrize('name', FLOAT_SETTINGS)
def test_seconds_beyond_what_the_code_can_wait_are_refused(name):
    with pytest.raises(ConfigError, match=f'invalid {name} 1e\\+308 in test: at most '):
        check_settings({name: 1.0e+308}, 'test')
    with pytest.raises(ConfigError, match='at most'):
        check_settings({name: MAX_SECONDS + 1}, 'test')


def test_a_year_of_seconds_is_accepted_except_where_kafka_counts_milliseconds_in_32_bits():
    long = {name: MAX_SECONDS for name in FLOAT_SETTINGS if name != 'session_timeout'}
    assert check_settings(long, 'test') == long
    with pytest.raises(ConfigError, match='at most 2147483'):
        check_settings({'session_timeout': 2147484}, 'test')


@pytest.mark.parametrize('name', FLOAT_SETTINGS)
@pytest.mark.parametrize('value', [1e-9, 0.0009, '1e-300'])
def test_seconds_shorter_than_the_code_can_wait_are_refused(name, value):
    with pytest.raises(ConfigError, match=f'^invalid {name} .* in test: at least '
                                          '(0.001|1) seconds?'):
        check_settings({name: value}, 'test')


@pytest.mark.parametrize(('name', 'least', 'why'), [
    ('session_timeout', 1.0, 'heartbeats'), ('heartbeat_timeout', 1.0, 'four times a second'),
    ('stall_timeout', 1.0, 'polls'), ('stuck_timeout', 1.0, 'four times a second'),
])
def test_timeouts_checked_in_rounds_are_at_least_a_second(name, least, why):
    with pytest.raises(ConfigError, match=f'^invalid {name} 0.5 in test: at least 1 second '
                                          f'.*{why}'):
        check_settings({name: 0.5}, 'test')
    assert check_settings({name: least}, 'test') == {name: least}


def test_a_millisecond_is_the_shortest_time_elsewhere():
    short = {name: 0.001 for name in FLOAT_SETTINGS
             if name not in ('session_timeout', 'heartbeat_timeout', 'stall_timeout',
                             'stuck_timeout')}
    assert check_settings(short, 'test') == short


def test_a_command_timeout_shorter_than_a_millisecond_is_refused():
    with pytest.raises(UsageError, match="^invalid --timeout '1e-9': at least 0.001 seconds$"):
        positive_seconds('1e-9', '--timeout', UsageError)


@pytest.mark.parametrize(('name', 'too_many'), [
    ('topic_partitions', 2 ** 31), ('replication_factor', 2 ** 15),
    ('max_request_size', 2 ** 31), ('max_inflight', 2 ** 31), ('standby_replicas', 2 ** 31),
    ('acceptable_lag', 2 ** 63),
])
def test_whole_numbers_beyond_what_kafka_takes_are_refused(name, too_many):
    with pytest.raises(ConfigError, match=f'invalid {name} .* at most {too_many - 1}'):
        check_settings({name: too_many}, 'test')
    assert check_settings({name: too_many - 1}, 'test') == {name: too_many - 1}


@pytest.mark.parametrize('name', ['datadir', 'logfile', 'broker', 'web_host', 'sasl_username'])
def test_text_with_a_nul_byte_is_refused(name):
    with pytest.raises(ConfigError, match=f'invalid {name} .*: contains a NUL byte'):
        check_settings({name: 'data\0dir'}, 'test')


def test_a_pidfile_or_config_path_with_a_nul_byte_is_one_line(tmp_path):
    path = tmp_path / 'c.yaml'
    path.write_text('app: proj\npidfile: "run\\0pid"\n')
    with pytest.raises(ConfigError, match='invalid pidfile .*: contains a NUL byte'):
        load_options(parse(['-c', str(path)]))
    with pytest.raises(ConfigError, match='cannot read config file .*: contains a NUL byte'):
        load_file(f'{tmp_path}/c\0.yaml')


@pytest.mark.parametrize(('text', 'where'), [
    ('web_port: 1\nloglevel: info\nweb-port: 2\n', "at line 3: duplicate key 'web-port'"),
    ('loglevel: info\nloglevel: debug\n', "at line 2: duplicate key 'loglevel'"),
    ('slots:\n  1:\n    web_port: 7\n    web_port: 8\n', "at line 4: duplicate key 'web_port'"),
    ('slots:\n  1: {}\n  1: {}\n', "at line 3: duplicate key 1"),
])
def test_a_config_file_with_a_key_given_twice_is_refused(tmp_path, text, where):
    path = tmp_path / 'c.yaml'
    path.write_text(text)
    with pytest.raises(ConfigError, match=f'bad YAML in config file .* {where}$'):
        load_file(str(path))


def test_a_config_file_larger_than_the_limit_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / 'c.yaml'
    path.write_text('loglevel: info\n' + '#' * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError, match='config file .* is larger than 1 MiB'):
        load_file(str(path))
    path.write_text('loglevel: info\n' + '#' * (MAX_CONFIG_BYTES - 20) + '\n')
    assert load_file(str(path)) == {'loglevel': 'info'}


def test_a_command_timeout_beyond_the_maximum_is_refused():
    with pytest.raises(UsageError, match='at most'):
        positive_seconds('1e308', '--timeout', UsageError)


@pytest.mark.parametrize('address', ['0.0.0.0', '0.0.0.0:6066', '::', '[::]:6066', '[::]'])
def test_a_wildcard_web_advertise_is_refused_in_one_line(address):
    with pytest.raises(UsageError, match='a wildcard address') as raised:
        check_settings({'web_advertise': address}, 'the command line', UsageError)
    assert '\n' not in str(raised.value)
    assert check_settings({'web_advertise': '10.0.0.5:6066'}, 'the command line',
                          UsageError) == {'web_advertise': '10.0.0.5:6066'}
