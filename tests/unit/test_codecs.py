"""Serializers: bytes they cannot decode and values they cannot encode raise ValueError
(SerializationError) or TypeError, never anything else."""

import collections
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.app.codecs import CODECS, dump_json, load_json
from runner.app.windows import WINDOW_KEYS
from runner.errors import SerializationError


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize('data', [b'[' * 100_000, b'{"a":' * 50_000, b'\xff', b'1' * 5000])
def test_json_that_cannot_be_decoded_is_a_serialization_error(data):
    with pytest.raises(SerializationError, match='^not JSON: ') as caught:
        CODECS['json'].loads(data)
    assert len(str(caught.value)) < 100


def test_values_nested_too_deeply_are_serialization_errors():
    for codec in (CODECS['json'], CODECS['str'], WINDOW_KEYS):
        with pytest.raises(SerializationError, match='nested too deeply'):
            codec.dumps(nested(100_000))


@pytest.mark.parametrize('data', [b'5', b'"ab"', b'{"a": 1}', b'[1, 2, 3]'])
def test_a_window_key_that_is_no_pair_is_a_serialization_error(data):
    with pytest.raises(SerializationError, match='not a \\[key, start\\] pair'):
        WINDOW_KEYS.loads(data)


def test_text_that_is_not_utf8_is_a_serialization_error():
    with pytest.raises(SerializationError, match='not UTF-8 \\(byte 1\\)'):
        CODECS['str'].loads(b'a\xff')


# -- the JSON codec is orjson's speed with json's bytes ------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_json_encodes_to_exactly_the_bytes_of_the_standard_library(value):
    assert dump_json(value) == json.dumps(value, separators=(',', ':')).encode()


@pytest.mark.parametrize('value', [
    1e-5, -1.3e-07, 2.5e-9, 0.00001234, float('nan'), float('inf'), 2**64, -2**63 - 1, 'é', '\x7f',
    '\ud800', {1: 2}, {'a': None}, collections.OrderedDict(a=1), True, [1e16, 1e-4]])
def test_json_encodes_what_orjson_would_write_differently_as_json_does(value):
    assert dump_json(value) == json.dumps(value, separators=(',', ':')).encode()


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_json_decodes_to_exactly_the_values_of_the_standard_library(value):
    data = json.dumps(value).encode()
    assert repr(load_json(data)) == repr(json.loads(data))


@pytest.mark.parametrize('data', [
    b'123456789012345678901234567890', b'-9223372036854775809', b'NaN', b'[Infinity]',
    b'"\\ud800"', b'1e400', '{"a": "\u00e9"}'.encode('utf-16')])
def test_json_decodes_what_orjson_reads_differently_as_json_does(data):
    assert repr(load_json(data)) == repr(json.loads(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_json_refuses_the_bytes_the_standard_library_refuses(data):
    try:
        expected = repr(json.loads(data))
    except (ValueError, RecursionError):
        with pytest.raises(SerializationError):
            load_json(data)
    else:
        assert repr(load_json(data)) == expected


def test_table_checks_of_scalars_encode_nothing(monkeypatch):
    """The fast paths of ``check``: a JSON scalar or ASCII text is never encoded just to be
    checked (this runs on every table write)."""
    for name in ('json', 'str'):
        monkeypatch.setattr(CODECS[name], 'dumps', _must_not_encode)
    for value in (1, -(2**63), 1.5, 'word', True):
        CODECS['json'].check(value)
    CODECS['str'].check('word')
    with pytest.raises(AssertionError):
        CODECS['json'].check({'a': 1})
    with pytest.raises(AssertionError):
        CODECS['str'].check('é')


def test_json_check_refuses_an_integer_json_cannot_write():
    with pytest.raises(SerializationError):
        CODECS['json'].check(10 ** 5000)


def _must_not_encode(obj):
    raise AssertionError(f'{obj!r} was encoded to be checked')


@pytest.mark.parametrize('data', [b'0.00123456789012345678901', b'[1.0000000000000000000001]',
                                  b'{"a":-12345678901234567890}', b'12345678901234567890'])
def test_json_reads_long_fractions_and_long_integers_as_json_does(data):
    assert repr(load_json(data)) == repr(json.loads(data))
