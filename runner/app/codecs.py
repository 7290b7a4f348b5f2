"""Serializers for keys and values: ``json``, ``str`` and ``raw`` (bytes)."""

import json
from typing import Any

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
        if obj is None or isinstance(obj, bytes):
            return obj
        raise TypeError(f'raw serializer needs bytes, got {type(obj).__name__}')

    def loads(self, data: bytes | None) -> Any:
        return data

    def check(self, obj: Any) -> None:
        """Raise TypeError or ValueError now if ``obj`` cannot be encoded."""
        self.dumps(obj)


class StrCodec(Codec):
    name = 'str'

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


def dump_json(obj: Any) -> bytes:
    """Compact JSON; TypeError for what JSON cannot hold, SerializationError for a value
    nested too deeply, circular or an integer too long."""
    try:
        return json.dumps(obj, separators=(',', ':')).encode()
    except (ValueError, RecursionError) as exc:
        raise SerializationError(f'json serializer: {_reason(exc)}') from None


def load_json(data: bytes) -> Any:
    """The value that JSON ``data`` holds; SerializationError if it is not JSON (or nested
    too deeply)."""
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

    def check(self, obj: Any) -> None:
        if type(obj) not in _JSON_SCALARS:
            self.dumps(obj)


_JSON_SCALARS = frozenset((int, float, str, bool))


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
