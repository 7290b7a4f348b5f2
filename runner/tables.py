"""Tables: key/value state partitioned like the streams that update it.

A table partition lives in the slot that owns the source partitions with the
same number.  Agents read and write it through the Table (a dict-like view of
the partition of the record being processed).  Writes stay in memory until the
consumer thread's commit cycle makes them durable, in this order:

1. cut: under the partition's guard, take the unflushed writes and read the
   processed offsets of that partition's source queues;
2. send the latest value of each changed key to the changelog topic;
3. flush the producer (acks=all), then commit the source offsets;
4. write the values and the changelog offset they reflect in one WriteBatch.

A crash anywhere leaves local state at or behind the changelog, never ahead.
Reads see writes not yet flushed (the ``dirty`` and ``flushing`` layers).

Writers of partition number ``p`` (any agent, any table) take ``p``'s guard
once per batch, not per record; the commit cycle only *tries* the guard, so a
slow agent delays its partition's commit but never blocks the consumer thread.
"""

import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from kafka.partitioner.default import murmur2

from .codecs import Codec, codec
from .errors import ConfigError
from .store import PartitionStore
from .stream import current
from .topics import Topic, check_topic_name

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger(__name__)

MISSING = object()
DELETED = object()
#: Decoded values kept in memory per table partition (beyond unflushed writes).
CACHE_LIMIT = 100_000


class Guard:
    """Mutual exclusion for one partition number, held by an agent for a whole batch."""

    __slots__ = ('holder', 'lock', 'number')

    def __init__(self, number: int) -> None:
        self.number = number
        self.lock = threading.Lock()
        self.holder: object | None = None

    def take(self, queue: object) -> None:
        """Called by an agent thread on its first table access in a batch."""
        self.lock.acquire()
        self.holder = queue
        held = getattr(current, 'guards', None)
        if held is None:
            held = current.guards = []
        held.append(self)

    def release(self) -> None:
        self.holder = None
        self.lock.release()


class TablePartition:
    """The live state of one table partition in the slot that owns it."""

    __slots__ = ('cache', 'dirty', 'flushing', 'guard', 'number', 'store', 'table', 'topic_id')

    def __init__(self, table: 'Table', number: int, store: PartitionStore, guard: Guard,
                 topic_id: str) -> None:
        self.table = table
        self.number = number
        self.store = store
        self.guard = guard
        self.topic_id = topic_id      # of the changelog the store follows
        self.dirty: dict[Any, Any] = {}
        self.flushing: dict[Any, Any] | None = None
        self.cache: dict[Any, Any] = {}

    def get(self, key: Any) -> Any:
        """The current value of ``key``, or MISSING."""
        value = self.dirty.get(key, MISSING)
        if value is MISSING and self.flushing is not None:
            value = self.flushing.get(key, MISSING)
        if value is MISSING:
            value = self.cache.get(key, MISSING)
        if value is MISSING:
            value = self._load(key)
        return MISSING if value is DELETED else value

    def _load(self, key: Any) -> Any:
        raw = self.store.get(self.table.key_codec.dumps(key))
        if raw is None:
            return MISSING
        value = self.table.value_codec.loads(raw)
        if len(self.cache) >= CACHE_LIMIT:
            self.cache.clear()
        self.cache[key] = value
        return value

    def expire(self) -> None:
        """Drop what has outlived its time (caller holds the guard); see runner.windows."""

    def cut(self) -> dict[Any, Any]:
        """Take the unflushed writes (caller holds the guard); reads still see them."""
        self.flushing, self.dirty = self.dirty, {}
        return self.flushing

    def encoded(self, changes: dict[Any, Any]) -> list[tuple[bytes, bytes | None]]:
        key_dumps, value_dumps = self.table.key_codec.dumps, self.table.value_codec.dumps
        return [(key_dumps(key), None if value is DELETED else value_dumps(value))
                for key, value in changes.items()]

    def flushed(self, changes: dict[Any, Any]) -> None:
        """The changes are in LevelDB: serve them from the cache from now on."""
        if len(self.cache) + len(changes) > CACHE_LIMIT:
            self.cache.clear()
        for key, value in changes.items():
            if value is DELETED:
                self.cache.pop(key, None)
            else:
                self.cache[key] = value
        self.flushing = None


class Table:
    """A dict-like table, updated from agents and durable through its changelog topic.

    Inside an agent, keys live in the partition of the record being processed
    (the table is co-partitioned with its source topics).  Elsewhere (the web
    server, plain code), a key is looked up in the partition its bytes hash to,
    as Kafka's default partitioner places keyed records.
    """

    def __init__(self, app: 'App', name: str, default: Callable[[], Any] | None = None,
                 partitions: int | None = None, key_serializer: str | Codec = 'str',
                 value_serializer: str | Codec = 'json') -> None:
        self.app = app
        self.name = check_topic_name(name)
        self.default = default
        self.partitions = partitions
        self.key_codec = codec(key_serializer)
        self.value_codec = codec(value_serializer)
        self.changelog = Topic(app, f'{app.name}-{name}-changelog', partitions,
                               key_serializer, value_serializer,
                               config={'cleanup.policy': 'compact'})
        #: Active partitions in this slot, by number (set by the slot's StateManager).
        self.active: dict[int, TablePartition] = {}
        #: The key codec of lookups and hashing (storage differs for windowed tables).
        self.user_key_codec = self.key_codec
        self.windowing: Any = None
        self.partition_class = TablePartition

    def tumbling(self, size: float, expires: float | None = None) -> Any:
        """A view keeping one value per key and ``size``-second window."""
        return self.hopping(size, size, expires)

    def hopping(self, size: float, step: float, expires: float | None = None) -> Any:
        """A view keeping one value per key and overlapping window (a new one every ``step``)."""
        from .windows import WindowedPartition, WindowedTable, Windowing, WindowKeyCodec
        if self.windowing is not None:
            raise ConfigError(f'table {self.name!r} is already windowed')
        self.windowing = Windowing(size, step, expires)
        self.key_codec = WindowKeyCodec()
        self.partition_class = WindowedPartition
        self.changelog.config.update({'cleanup.policy': 'compact,delete',
                                      'retention.ms': str(self.windowing.retention_ms())})
        return WindowedTable(self, self.windowing)

    # -- dict interface -----------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        value = self._partition_for(key).get(key)
        if value is MISSING:
            if self.default is None:
                raise KeyError(key)
            return self.default()
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.here().dirty[key] = value

    def __delitem__(self, key: Any) -> None:
        self.here().dirty[key] = DELETED

    def __contains__(self, key: Any) -> bool:
        return self._partition_for(key).get(key) is not MISSING

    def get(self, key: Any, default: Any = None) -> Any:
        value = self._partition_for(key).get(key)
        return default if value is MISSING else value

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Every (key, value) of the partitions this slot owns."""
        for partition in list(self.active.values()):
            yield from partition_items(partition)

    def keys(self) -> Iterator[Any]:
        return (key for key, _ in self.items())

    def values(self) -> Iterator[Any]:
        return (value for _, value in self.items())

    # -- partitions ---------------------------------------------------------

    def partition_of(self, key: Any) -> int:
        """The partition a key hashes to (Kafka's default partitioner)."""
        return (murmur2(self.user_key_codec.dumps(key)) & 0x7fffffff) % self.partitions

    def _partition_for(self, key: Any) -> 'TablePartition | _Empty':
        queue = getattr(current, 'partition', None)
        if queue is None:
            return self.active.get(self.partition_of(key), EMPTY)
        return self._agent_partition(queue)

    def here(self) -> 'TablePartition | _Empty':
        """The partition of the record being processed (its guard taken for this batch)."""
        queue = getattr(current, 'partition', None)
        if queue is None:
            raise RuntimeError(f'table {self.name!r} can only be changed from an agent')
        return self._agent_partition(queue)

    def _agent_partition(self, queue: Any) -> 'TablePartition | _Empty':
        number = queue.tp.partition
        partition = self.active.get(number)
        if partition is None:
            if queue.revoked:
                return EMPTY   # the record is redone by the partition's next owner
            raise ConfigError(f'table {self.name!r} has no partition {number} here: it has '
                              f'{self.partitions} partitions but topic {queue.tp.topic!r} '
                              f'has more; tables need co-partitioned source topics')
        if partition.guard.holder is not queue:
            partition.guard.take(queue)
        return partition

    def __repr__(self) -> str:
        return f'<Table {self.name} partitions={self.partitions}>'


class _Empty:
    """Stands in for a partition that is not here: nothing to read, writes vanish."""

    def get(self, key: Any) -> Any:
        return MISSING

    @property
    def dirty(self) -> dict[Any, Any]:
        return {}


EMPTY = _Empty()


def partition_items(partition: TablePartition) -> Iterator[tuple[Any, Any]]:
    """(key, value) pairs of one partition: stored values overlaid with unflushed ones."""
    overlay: dict[Any, Any] = {}
    if partition.flushing is not None:
        overlay.update(partition.flushing)
    overlay.update(partition.dirty)
    key_loads, value_loads = partition.table.key_codec.loads, partition.table.value_codec.loads
    for raw_key, raw_value in partition.store.items():
        key = key_loads(raw_key)
        value = overlay.pop(key, MISSING)
        if value is MISSING:
            yield key, value_loads(raw_value)
        elif value is not DELETED:
            yield key, value
    for key, value in overlay.items():
        if value is not DELETED:
            yield key, value


def tables_used_by(function: Callable) -> set[Table]:
    """Tables a function names (module globals it refers to, nested code included).

    Lets a slot check co-partitioning at start for the usual case of a table
    declared at module level; other uses are checked on first write.
    """
    names: set[str] = set()
    codes = [getattr(function, '__code__', None)]
    while codes:
        code = codes.pop()
        if code is not None:
            names.update(code.co_names)
            codes.extend(const for const in code.co_consts if hasattr(const, 'co_names'))
    scope = getattr(function, '__globals__', {})
    return {scope[name] for name in names if isinstance(scope.get(name), Table)}
