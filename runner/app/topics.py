"""Topic declarations: a name, a partition count and how keys and values are encoded."""

import re
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, shown
from .codecs import Codec, codec
from .partitioners import Partitioner, resolve

if TYPE_CHECKING:
    from .app import App

_LEGAL_NAME = re.compile(r'^[A-Za-z0-9._-]{1,249}$')


def check_topic_name(name: str) -> str:
    """Return ``name`` if Kafka accepts it as a topic name, else raise ConfigError."""
    if not isinstance(name, str) or not _LEGAL_NAME.match(name) or name in ('.', '..'):
        raise ConfigError(f'invalid topic name {shown(name)}: use 1-249 of A-Z a-z 0-9 . _ -')
    return name


class Topic:
    """A Kafka topic the app reads or writes.

    ``partitions=None`` accepts whatever count an existing topic has and
    creates a missing one with the app's ``topic_partitions`` setting.
    ``partitioner`` says where its producers put keyed records (see
    :mod:`runner.app.partitioners`): ``app.send`` does the same, and the
    tables fed from the topic look keys up that way.
    """

    def __init__(self, app: 'App', name: str, partitions: int | None = None,
                 key_serializer: str | Codec = 'str', value_serializer: str | Codec = 'json',
                 config: dict[str, str] | None = None,
                 partitioner: str | Partitioner = 'murmur2') -> None:
        if partitions is not None and (not isinstance(partitions, int) or partitions < 1):
            raise ConfigError(f'topic {name!r}: partitions must be a positive integer')
        self.app = app
        self.name = check_topic_name(name)
        self.partitions = partitions
        self.key_codec = codec(key_serializer)
        self.value_codec = codec(value_serializer)
        self.config = dict(config or {})
        self.partitioner = resolve(partitioner, f'topic {name!r}')

    def send(self, key: Any = None, value: Any = None, headers: list | None = None):
        """Send one record to this topic; see :meth:`App.send`."""
        return self.app.send(self, key=key, value=value, headers=headers)

    def __repr__(self) -> str:
        return f'<Topic {self.name} partitions={self.partitions}>'
