"""Serializers for keys and values: ``json``, ``str`` and ``raw`` (bytes)."""

import json
from typing import Any

from ..errors import ConfigError


class Codec:
    """Turns Python objects into bytes and back; ``None`` stays ``None``."""

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
        return str(obj).encode()

    def loads(self, data: bytes | None) -> Any:
        return None if data is None else data.decode()


class JsonCodec(Codec):
    name = 'json'

    def dumps(self, obj: Any) -> bytes | None:
        if obj is None:
            return None
        return json.dumps(obj, separators=(',', ':')).encode()

    def loads(self, data: bytes | None) -> Any:
        return None if data is None else json.loads(data)

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
