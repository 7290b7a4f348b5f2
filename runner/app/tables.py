"""Table declarations: key/value state that agents update, partitioned like their streams.

A Table is a declaration: it holds no data.  Reads and writes go through the
processing context (:mod:`runner.app.context`) to the slot that owns the
partition: inside an agent, the partition of the record being processed;
elsewhere in a slot, the partition the key hashes to.  How the slot keeps that
state (LevelDB, changelog, checkpoints) is :mod:`runner.state`'s business.
"""

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .codecs import Codec, codec
from .context import DELETED, MISSING, current
from .partitioners import Partitioner, resolve
from .topics import Topic, check_topic_name

if TYPE_CHECKING:
    from .app import App
    from .windows import WindowedTable


class DictReads:
    """The dict reads every kind of table has, in terms of its ``lookup(key)`` (the
    stored value, or ``MISSING``) and ``items()``."""

    def lookup(self, key: Any) -> Any:
        raise NotImplementedError

    def items(self) -> Iterator[tuple[Any, Any]]:
        raise NotImplementedError

    def __contains__(self, key: Any) -> bool:
        return self.lookup(key) is not MISSING

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` (not the table's) when it has none."""
        value = self.lookup(key)
        return default if value is MISSING else value

    def keys(self) -> Iterator[Any]:
        """Every key :meth:`items` gives."""
        return (key for key, _ in self.items())

    def values(self) -> Iterator[Any]:
        """Every value :meth:`items` gives."""
        return (value for _, value in self.items())


class Table(DictReads):
    """A dict-like table, updated from agents and durable through its changelog topic.

    ``partitions`` and ``partitioner`` may be left out: the table then has
    those of the topics whose agents use it (the ``topic_partitions`` setting
    and ``murmur2`` if none do).
    """

    #: How table keys are stored; windowed tables store ``(key, window start)``.
    windowing: Any = None

    def __init__(self, app: 'App', name: str, default: Callable[[], Any] | None = None,
                 partitions: int | None = None, key_serializer: str | Codec = 'str',
                 value_serializer: str | Codec = 'json',
                 partitioner: str | Partitioner | None = None) -> None:
        if partitions is not None and (not isinstance(partitions, int) or partitions < 1):
            raise ConfigError(f'table {name!r}: partitions must be a positive integer')
        if default is not None and not callable(default):
            raise ConfigError(f'table {name!r}: default must be callable, such as int')
        self.app = app
        self.name = check_topic_name(name)
        self.default = default
        self.partitions = partitions
        self.key_codec = codec(key_serializer)
        self.value_codec = codec(value_serializer)
        self.partitioner = None if partitioner is None else resolve(partitioner,
                                                                    f'table {name!r}')
        self.changelog = Topic(app, f'{app.name}-{name}-changelog', partitions,
                               key_serializer, value_serializer,
                               config=self._changelog_config())
        self._check_key = self.stored_key_codec.check      # looked up once: every write
        self._check_value = self.value_codec.check

    @property
    def stored_key_codec(self) -> Codec:
        """How keys are written to the store and the changelog."""
        return self.key_codec

    def routing_key(self, stored_key: Any) -> Any:
        """The part of a stored key that decides its partition."""
        return stored_key

    def check(self, key: Any, value: Any) -> None:
        """Refuse a write its changelog could not hold, while its record is processed:
        None as a key or a value, or a key or value that cannot be encoded (a JSON scalar
        is not encoded here: this runs on every write)."""
        if key is None:
            raise TypeError(f'table {self.name!r}: a key cannot be None')
        if value is None:
            raise TypeError(f'table {self.name!r}: None cannot be stored (del table[key] '
                            'deletes a key)')
        self._check_key(key)
        if value is not DELETED:
            self._check_value(value)

    def _changelog_config(self) -> dict[str, str]:
        return {'cleanup.policy': 'compact'}

    def tumbling(self, size: float, expires: float | None = None) -> 'WindowedTable':
        """This table kept per ``size``-second window; replaces the plain table in the app."""
        return self.hopping(size, size, expires)

    def hopping(self, size: float, step: float, expires: float | None = None) -> 'WindowedTable':
        """This table kept per overlapping ``size``-second window, one starting every ``step``."""
        from .windows import WindowedTable, Windowing
        windowed = WindowedTable(self.app, self.name, Windowing(size, step, expires),
                                 self.default, self.partitions, self.key_codec, self.value_codec,
                                 self.partitioner)
        self.app.tables[self.name] = windowed
        return windowed

    # -- dict interface -----------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        value = current().read(self, key)
        if value is MISSING:
            if self.default is None:
                raise KeyError(key)
            return self.default()
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        current().write(self, key, value)

    def __delitem__(self, key: Any) -> None:
        current().write(self, key, DELETED)

    def lookup(self, key: Any) -> Any:
        """The stored value of ``key`` (a key of a partition this slot owns), or MISSING."""
        return current().read(self, key)

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Every (key, value) of the partitions this slot owns."""
        return current().items(self)

    def __repr__(self) -> str:
        return f'<{type(self).__name__} {self.name}>'


def tables_used_by(function: Callable) -> set[Table]:
    """Tables a function names: module globals and closure variables it refers to, nested
    code included.

    Lets a slot check co-partitioning at start and derive partition counts for
    the usual case of a table declared at module level (or in an enclosing function).
    """
    names = code_names(function)
    scope = dict(getattr(function, '__globals__', {}))
    code = getattr(function, '__code__', None)
    for name, cell in zip(code.co_freevars if code else (), function.__closure__ or (),
                          strict=True):
        names.add(name)
        with contextlib.suppress(ValueError):        # not yet bound
            scope[name] = cell.cell_contents
    return {scope[name] for name in names if isinstance(scope.get(name), Table)}


def code_names(function: Callable) -> set[str]:
    """The global and attribute names a function's code uses, nested code included."""
    names: set[str] = set()
    codes = [getattr(function, '__code__', None)]
    while codes:
        code = codes.pop()
        if code is not None:
            names.update(code.co_names)
            codes.extend(const for const in code.co_consts if hasattr(const, 'co_names'))
    return names
