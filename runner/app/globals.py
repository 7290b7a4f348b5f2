"""Global table declarations: tables every slot holds whole, read by key from anywhere.

A :class:`GlobalTable` is read as a dict in any agent, whatever the
partition of the record being processed (a stream-table join by lookup, with
no co-partitioning), and in any other thread of a slot.  Every slot keeps all
of it, from every partition of its changelog topic, and follows that
changelog as it is written (see :mod:`runner.state.globals`).

It is written in two ways only: by the one agent that reads its ``source``
topic (``table[key] = value`` there sends the new value to the changelog, in
the record's transaction under exactly-once), or by any producer writing the
changelog topic directly.  A write becomes visible, in every slot including
the writer's, once it is read back from the changelog.

Like :class:`runner.app.tables.Table` it holds no data: reads and writes go
through the processing context (:mod:`runner.app.context`).
"""

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .codecs import Codec, codec
from .context import DELETED, MISSING, current
from .partitioners import Partitioner
from .tables import DictReads
from .topics import Topic, check_topic_name

if TYPE_CHECKING:
    from .app import App


class GlobalTable(DictReads):
    """A dict-like table that every slot holds whole, kept by its changelog topic
    ``{app}-{name}-changelog``.

    ``default`` makes missing keys read as ``default()``; without it a missing
    key raises ``KeyError``.  ``source`` is the topic whose agent may write the
    table (one agent must read it); without it only producers of the
    changelog topic write it.  ``partitions`` and ``partitioner`` are the
    changelog's (``topic_partitions`` and ``murmur2`` when left out): they
    say where the writing agent's writes go, never where a read looks, since
    every slot holds every partition.
    """

    def __init__(self, app: 'App', name: str, default: Callable[[], Any] | None = None,
                 source: Topic | None = None, partitions: int | None = None,
                 key_serializer: str | Codec = 'str', value_serializer: str | Codec = 'json',
                 partitioner: str | Partitioner = 'murmur2') -> None:
        if default is not None and not callable(default):
            raise ConfigError(f'global table {name!r}: default must be callable, such as int')
        self.app = app
        self.name = check_topic_name(name)
        self.default = default
        self.source = source
        self.key_codec = codec(key_serializer)
        self.value_codec = codec(value_serializer)
        self.changelog = Topic(app, f'{app.name}-{name}-changelog', partitions, key_serializer,
                               value_serializer, {'cleanup.policy': 'compact'}, partitioner)

    def check(self, key: Any, value: Any) -> None:
        """Refuse a write its changelog could not hold: None as a key or a value, or a key
        or value that cannot be encoded."""
        if key is None:
            raise TypeError(f'global table {self.name!r}: a key cannot be None')
        if value is None:
            raise TypeError(f'global table {self.name!r}: None cannot be stored (del '
                            'table[key] deletes a key)')
        self.key_codec.check(key)
        if value is not DELETED:
            self.value_codec.check(value)

    # -- dict interface -----------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        value = current().read_global(self, key)
        if value is MISSING:
            if self.default is None:
                raise KeyError(key)
            return self.default()
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        """Send ``value`` to the changelog; only the agent of ``source`` may (see the class)."""
        self.check(key, value)
        current().write_global(self, key, value)

    def __delitem__(self, key: Any) -> None:
        self.check(key, DELETED)
        current().write_global(self, key, DELETED)

    def lookup(self, key: Any) -> Any:
        """The stored value of ``key`` (of any partition), or MISSING."""
        return current().read_global(self, key)

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Every (key, value) of the whole table, in the order of the stored keys."""
        return current().items_global(self)

    def __repr__(self) -> str:
        return f'<GlobalTable {self.name}>'
