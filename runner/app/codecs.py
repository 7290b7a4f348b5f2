"""Serializers for keys and values: ``json``, ``str`` and ``raw`` (bytes).

The JSON codec encodes and decodes with ``orjson`` and gives exactly the bytes
and values of the standard library's ``json`` (compact separators, ASCII
output): where ``orjson`` would differ (integers beyond 64 bits, NaN and
infinities, floats between 1e-9 and 1e-4, text outside printable ASCII, dict keys that
are not strings, subclasses of the built-in types) the standard library does
the work.  Keys are placed in partitions by their bytes, so their encoding
must never change between versions.
"""

import json
from typing import Any

import orjson

from ..errors import ConfigError, SerializationError


class Codec:
    """Turns Python objects into bytes and back; ``None`` stays ``None``.

    The contract the runtime relies on, for these codecs and an app's own: ``loads``
    raises ValueError for bytes it cannot decode (the codecs here raise
    :class:`~runner.errors.SerializationError`, a ValueError, with a short message
    that does not quote the bytes), and ``dumps`` raises TypeError or ValueError for a
    value it cannot encode.  Nothing else escapes them, whatever the input.
    """

    name = 'raw'

    def dumps(self, obj: Any) -> bytes | None:
        """``obj`` as bytes (this one, ``raw``, takes bytes only)."""
        if obj is None or isinstance(obj, bytes):
            return obj
        raise TypeError(f'raw serializer needs bytes, got {type(obj).__name__}')

    def loads(self, data: bytes | None) -> Any:
        """The object ``data`` encodes (this one, ``raw``, returns the bytes)."""
        return data

    def check(self, obj: Any) -> None:
        """Raise TypeError or ValueError now if ``obj`` cannot be encoded."""
        self.dumps(obj)


class StrCodec(Codec):
    name = 'str'

    def check(self, obj: Any) -> None:
        if type(obj) is not str or not obj.isascii():    # ASCII text always encodes
            self.dumps(obj)

    def dumps(self, obj: Any) -> bytes | None:
        if obj is None or isinstance(obj, bytes):
            return obj
        try:
            return str(obj).encode()
        except RecursionError:
            raise SerializationError('str serializer: value nested too deeply') from None

    def loads(self, data: bytes | None) -> Any:
        if data is None:
            return None
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise SerializationError(f'str serializer: not UTF-8 (byte {exc.start})') from None


class JsonCodec(Codec):
    name = 'json'

    def dumps(self, obj: Any) -> bytes | None:
        return None if obj is None else dump_json(obj)

    def loads(self, data: bytes | None) -> Any:
        return None if data is None else load_json(data)

    def check(self, obj: Any) -> None:
        kind = type(obj)
        if kind is int:           # the common case: a count
            if obj.bit_length() > 64:       # json refuses integers past 4,300 digits
                self.dumps(obj)
        elif kind not in _JSON_SCALARS:     # other scalars always encode: nothing to do
            self.dumps(obj)


_JSON_SCALARS = frozenset((float, str, bool))
#: orjson's own types are passed to the standard library, which refuses them as before.
_ORJSON_OPTIONS = (orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATETIME
                   | orjson.OPT_PASSTHROUGH_DATACLASS)
#: Bytes → b'0' for an ASCII digit, b'.' for a point, b'x' for anything else: 19 digits
#: in a row not after a point (a fraction's) are an integer orjson may read as a float.
_DIGITS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x2e if byte == 0x2e else 0x78
                for byte in range(256))
_LONG_RUN = b'0' * 19
_LONG_INTEGER = b'x' + _LONG_RUN


def dump_json(obj: Any) -> bytes:
    """Compact JSON; TypeError for what JSON cannot hold, SerializationError for a value
    nested too deeply, circular or an integer too long."""
    if type(obj) is int and obj.bit_length() <= 64:     # a count: its digits, as json writes
        return b'%d' % obj
    try:
        data = orjson.dumps(obj, option=_ORJSON_OPTIONS)
    except TypeError:             # a type or an integer orjson does not take: json decides
        pass
    else:
        if data.isascii() and b'null' not in data and b'e-' not in data \
                and b'0.0000' not in data and b'\x7f' not in data:
            return data
    try:
        return json.dumps(obj, separators=(',', ':')).encode()
    except (ValueError, RecursionError) as exc:
        raise SerializationError(f'json serializer: {_reason(exc)}') from None


def load_json(data: bytes) -> Any:
    """The value that JSON ``data`` holds; SerializationError if it is not JSON (or nested
    too deeply)."""
    digits = data.translate(_DIGITS)
    if _LONG_RUN not in digits or _LONG_INTEGER not in b'x' + digits:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:    # json tells why, or reads what orjson does not
            pass
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise SerializationError(f'not JSON: {_reason(exc)}') from None


def _reason(exc: Exception) -> str:
    """Why JSON failed, in a few words that quote none of the data."""
    if isinstance(exc, RecursionError):
        return 'nested too deeply'
    if isinstance(exc, json.JSONDecodeError):
        return f'{exc.msg} (char {exc.pos})'
    return str(exc).split(':')[0]


CODECS = {codec.name: codec for codec in (Codec(), StrCodec(), JsonCodec())}


def codec(name: str | Codec) -> Codec:
    """Return the codec called ``name`` (or ``name`` itself if it is a codec)."""
    if isinstance(name, Codec):
        return name
    try:
        return CODECS[name]
    except KeyError:
        choices = ', '.join(sorted(CODECS))
        raise ConfigError(f'unknown serializer {name!r} (choose from {choices})') from None
