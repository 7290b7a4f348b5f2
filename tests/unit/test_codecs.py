"""Serializers: bytes they cannot decode and values they cannot encode raise ValueError
(SerializationError) or TypeError, never anything else."""

import pytest

from runner.app.codecs import CODECS
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
