"""The address a slot advertises to the other members, and how it is configured."""

import pytest

from runner.config import Options, check_settings
from runner.errors import UsageError
from runner.runtime.web import advertised


def test_a_slot_advertises_its_bind_address_or_what_it_is_told():
    assert advertised(('127.0.0.2', 80), None, ['127.0.0.1:9092']) == '127.0.0.2:80'
    assert advertised(('0.0.0.0', 80), 'web1.example', []) == 'web1.example:80'
    assert advertised(('0.0.0.0', 80), 'web1.example:9000', []) == 'web1.example:9000'


def test_a_wildcard_bind_advertises_the_address_it_reaches_the_broker_from():
    assert advertised(('0.0.0.0', 80), None, ['127.0.0.1:9092']) == '127.0.0.1:80'
    assert advertised(('0.0.0.0', 80), None, ['no-such-host.invalid:9092',
                                               '127.0.0.1:9092']) == '127.0.0.1:80'


def test_each_slot_advertises_its_own_port():
    options = Options(app='a', workers=3, cli=check_settings(
        {'web_advertise': 'web1.example:7000', 'web_port': '6000'}, 'the command line'))
    assert [options.settings_for({}, i).web_advertise for i in range(3)] == [
        'web1.example:7000', 'web1.example:7001', 'web1.example:7002']


@pytest.mark.parametrize('value', ['', ':80', 'host:port', 'host:0', 'a b', 'http://h'])
def test_a_bad_advertised_address_is_bad_usage(value):
    with pytest.raises(UsageError, match='expected HOST or HOST:PORT'):
        check_settings({'web_advertise': value}, 'the command line', UsageError)


def test_ipv6_addresses_are_advertised_in_brackets():
    assert advertised(('::1', 80, 0, 0), None, []) == '[::1]:80'
    assert advertised(('0.0.0.0', 80), '[fd00::1]:9000', []) == '[fd00::1]:9000'
    options = Options(app='a', workers=2, cli=check_settings(
        {'web_advertise': '[fd00::1]:7000'}, 'the command line'))
    assert options.settings_for({}, 1).web_advertise == '[fd00::1]:7001'
    assert check_settings({'web_advertise': 'fd00::1'}, 'x') == {'web_advertise': 'fd00::1'}
