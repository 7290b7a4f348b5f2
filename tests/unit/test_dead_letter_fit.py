"""A record too large to dead-letter whole is dead-lettered cut to fit, saying so."""

from runner.runtime.policy import FRAMING, fitted

HEADERS = [('runner-reason', b'raised')]


def test_a_large_value_is_cut_to_fit_and_its_size_kept_in_a_header():
    key, value, headers = fitted(b'k', b'v' * 10_000, HEADERS, 4096)
    assert key == b'k' and value == b'v' * (4096 - FRAMING - 19 - 1)
    assert headers == [*HEADERS, ('runner-cut', b'value'), ('runner-value-size', b'10000')]


def test_a_key_that_takes_more_than_half_the_room_is_cut_too():
    key, value, headers = fitted(b'k' * 5000, b'v' * 5000, HEADERS, 4096)
    room = 4096 - FRAMING - 19
    assert key == b'k' * (room // 2) and len(key) + len(value) == room
    assert dict(headers)['runner-cut'] == b'key, value'
    assert dict(headers)['runner-key-size'] == b'5000'


def test_no_value_stays_none():
    assert fitted(None, None, [], 2048)[:2] == (None, None)
