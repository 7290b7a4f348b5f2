"""Settings: parsing, validation and the order in which sources win."""

import pytest

from runner.config import (
    Settings,
    build,
    check_settings,
    load_file,
    parse_broker_url,
    positive_int,
    slot_overrides,
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


@pytest.mark.parametrize(('text', 'reason'), [
    ('since: 2024-13-01\n', 'a value it cannot read (month must be in 1..12)'),
    ('web_port: !!int x\n', 'a value it cannot read (invalid literal for int()'),
    ("web_port: !!float ''\n", 'a value it cannot read (IndexError)'),
    ("since: !!timestamp ''\n", 'a value it cannot read (AttributeError)'),
    (f'web_port: {"9" * 5000}\n', 'a value it cannot read (Exceeds the limit'),
    ('web_port: ' + '[' * 2000 + '\n', 'nested too deeply'),
])
def test_yaml_values_that_cannot_be_made_are_config_errors(tmp_path, text, reason):
    path = tmp_path / 'c.yaml'
    path.write_text(text)
    with pytest.raises(ConfigError, match=r'^bad YAML in config file .*c\.yaml: ') as caught:
        load_file(str(path))
    assert reason in str(caught.value) and len(str(caught.value)) < 200


@pytest.mark.parametrize('value', [float('inf'), float('nan'), 1e400, 6066.5])
def test_a_port_that_is_no_whole_number_is_a_config_error(value):
    with pytest.raises(ConfigError, match='expected a whole number'):
        check_settings({'web_port': value}, 'here')


def test_workers_that_are_infinite_are_a_config_error():
    with pytest.raises(ConfigError, match='expected a whole number'):
        positive_int(float('inf'), 'workers', ConfigError)


def test_long_keys_and_addresses_are_quoted_short():
    for call in (lambda: check_settings({'x' * 5000: 1}, 'here'),
                 lambda: check_settings({'broker': 'a:b' + 'x' * 5000}, 'here'),
                 lambda: slot_overrides({'x' * 5000: {}}, 'here'),
                 lambda: slot_overrides({10 ** 400: {'web_port': 'x'}}, 'here')):
        with pytest.raises(ConfigError) as caught:
            call()
        assert len(str(caught.value)) < 250


def test_a_number_that_does_not_parse_is_not_echoed_by_its_reason():
    with pytest.raises(ConfigError) as caught:
        check_settings({'web_port': 'user:secret@h', 'broker_timeout': 'user:secret@h'}, 'here')
    assert 'secret' not in str(caught.value)


def test_a_config_file_name_that_is_long_or_not_printable_is_quoted(tmp_path):
    for name in ('a\nb.yaml', 'x' * 2000):
        with pytest.raises(ConfigError) as caught:
            load_file(str(tmp_path / name))
        assert '\n' not in str(caught.value) and len(str(caught.value)) < 250
