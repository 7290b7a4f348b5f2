"""The live state of a table partition in the slot that owns it.

Reads see, in this order: writes not yet taken by a checkpoint (``dirty``),
writes a checkpoint has taken but not yet stored (``flushing``), values read
from the store before (a cache), and the LevelDB store.  Writes go to
``dirty`` only; the checkpoint moves them on (see :mod:`runner.state.checkpoint`).

Only agent threads holding the task's guard fill the cache: a web request
reading a key while a checkpoint stores a newer value could otherwise plant
the older one.  The cache is one per slot, bounded, and keyed by partition
*incarnation*, so a partition that moves away and back never sees values
from its previous stay.
"""

import heapq
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from ..app.context import DELETED, MISSING
from ..app.tables import Table
from ..app.windows import WINDOW_KEYS
from .stores import PartitionStore

#: Decoded values a slot keeps cached, over all its table partitions.
CACHE_SIZE = 100_000


class ValueCache:
    """A bounded cache of two generations: when the young one is full it becomes the old
    one, and a hit in the old one can be promoted.  Hot values stay; nothing is sorted.

    Changes take a lock (two threads turning generations over at once could
    otherwise bring back a value already replaced); looks do not.
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._half = max(1, size // 2)
        self._lock = threading.Lock()
        self._young: dict[Any, Any] = {}
        self._old: dict[Any, Any] = {}

    def get(self, key: Any, promote: bool = False) -> Any:
        """The cached value or MISSING; ``promote`` keeps an old hit young (only a caller
        that may fill the cache promotes: see the module docstring)."""
        value = self._young.get(key, MISSING)
        if value is MISSING:
            value = self._old.get(key, MISSING)
            if value is not MISSING and promote:
                with self._lock:
                    if key not in self._young:
                        self._put(key, value)
        return value

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._put(key, value)

    def put_many(self, items: Iterable[tuple[Any, Any]]) -> None:
        """Cache every (key, value), taking the lock once."""
        with self._lock:
            for key, value in items:
                self._put(key, value)

    def _put(self, key: Any, value: Any) -> None:
        self._young[key] = value
        if len(self._young) >= self._half:
            self._old, self._young = self._young, {}

    def __len__(self) -> int:
        return len(self._young) + len(self._old)


class TablePartition:
    """One partition of one table: its unflushed writes over its store."""

    def __init__(self, table: Table, number: int, store: PartitionStore, topic_id: str,
                 cache: ValueCache) -> None:
        self.table = table
        self.number = number
        self.store = store
        self.topic_id = topic_id      # of the changelog the store follows
        self.cache = cache
        self.dirty: dict[Any, Any] = {}
        self.flushing: dict[Any, Any] | None = None
        self._key_dumps = table.stored_key_codec.dumps
        self._value_loads = table.value_codec.loads

    def get(self, key: Any, fill_cache: bool = False) -> Any:
        """The current value of ``key``, or MISSING.  Only the guard's holder fills the cache."""
        value = self.dirty.get(key, MISSING)
        if value is MISSING:
            flushing = self.flushing
            if flushing is not None:
                value = flushing.get(key, MISSING)
            if value is MISSING:
                value = self.cache.get((self, key), promote=fill_cache)
                if value is MISSING:
                    value = self._load(key, fill_cache)
        return MISSING if value is DELETED else value

    def _load(self, key: Any, fill_cache: bool) -> Any:
        raw = self.store.get(self._key_dumps(key))
        value = DELETED if raw is None else self._value_loads(raw)
        if fill_cache:
            self.cache.put((self, key), value)
        return value

    def set(self, key: Any, value: Any) -> Any:
        """Write ``key`` (DELETED deletes); the caller holds the guard.  Returns the unflushed
        write it replaces (MISSING if none), which :meth:`unset` puts back."""
        before = self.dirty.get(key, MISSING)
        self.dirty[key] = value
        return before

    def unset(self, key: Any, before: Any) -> None:
        """Take a write back: ``key`` becomes the unflushed write (or none) it replaced."""
        if before is MISSING:
            self.dirty.pop(key, None)
        else:
            self.dirty[key] = before

    def cut(self) -> dict[Any, Any]:
        """Take the unflushed writes for a checkpoint (the caller holds the guard).

        Writes a previous checkpoint took but never stored (it was skipped)
        are taken again, under newer ones; reads see them all meanwhile.
        """
        self.expire()
        taken = {**self.flushing, **self.dirty} if self.flushing else self.dirty
        self.flushing, self.dirty = taken, {}
        return taken

    def expire(self) -> None:
        """Drop what has outlived its time (windowed tables); the caller holds the guard."""

    def encoded(self, changes: dict[Any, Any]) -> list[tuple[bytes, bytes | None]]:
        value_dumps = self.table.value_codec.dumps
        return [(self._key_dumps(key), None if value is DELETED else value_dumps(value))
                for key, value in changes.items()]

    def flushed(self, changes: dict[Any, Any]) -> None:
        """The changes are in the store: serve them from the cache from now on."""
        self.cache.put_many(((self, key), value) for key, value in changes.items())
        if self.flushing is changes:
            self.flushing = None

    def discard(self, changes: dict[Any, Any]) -> None:
        """The changes belonged to an aborted transaction: forget them (the task is
        abandoned and its partition recovered afresh, so nothing else refers to them)."""
        if self.flushing is changes:
            self.flushing = None

    def items(self) -> Iterator[tuple[Any, Any]]:
        """(key, value) pairs, unflushed writes included, in stored-key order."""
        return ((key, value) for _, key, value in self.ordered())

    def ordered(self, prefix: bytes = b'', after: bytes | None = None,
                routed: Any = MISSING) -> Iterator[tuple[bytes, Any, Any]]:
        """(stored key, key, value) of the keys starting with ``prefix`` (and coming after
        ``after``, if given) in stored-key order: the store's pairs with the writes not
        yet stored merged in.  ``routed``: only unstored keys routed by this key are
        looked at (the windows of one key), so a lookup does not cost every write."""
        unstored = ((k, v) for k, v in self._pending().items()
                    if routed is MISSING or self.table.routing_key(k) == routed)
        pending = {raw: item for raw, item in ((self._key_dumps(k), (k, v)) for k, v in unstored)
                   if raw.startswith(prefix) and (after is None or raw > after)}
        stored = ((raw, True, value) for raw, value in self.store.items(prefix, after)
                  if raw not in pending)
        unstored = ((raw, False, pending[raw]) for raw in sorted(pending)
                    if pending[raw][1] is not DELETED)
        key_loads, value_loads = self.table.stored_key_codec.loads, self.table.value_codec.loads
        for raw, from_store, payload in heapq.merge(stored, unstored, key=lambda item: item[0]):
            if from_store:
                yield raw, key_loads(raw), value_loads(payload)
            else:
                yield raw, *payload

    def _pending(self) -> dict[Any, Any]:
        """Writes not yet stored, newest winning."""
        pending: dict[Any, Any] = {}
        for layer in (self.flushing, self.dirty):
            if layer:
                pending.update(list(layer.items()))
        return pending

    def windows(self, key: Any) -> list[tuple[float, Any]]:
        """(window start, value) of every window of ``key`` (windowed tables), oldest first."""
        return sorted((stored_key[1], value) for _, stored_key, value
                      in self.ordered(WINDOW_KEYS.prefix(key), routed=key)
                      if stored_key[0] == key)


class WindowedPartition(TablePartition):
    """A partition of a windowed table: it expires windows as its event time moves on."""

    def __init__(self, table: Table, number: int, store: PartitionStore, topic_id: str,
                 cache: ValueCache) -> None:
        super().__init__(table, number, store, topic_id, cache)
        self.latest = store.newest_window() or 0.0     # newest event time seen, in seconds

    def observe(self, timestamp: float) -> None:
        """An event of this time was processed here (the caller holds the guard)."""
        self.latest = max(self.latest, timestamp)

    def expire(self) -> None:
        """Delete the windows that ended more than ``expires`` before the newest event."""
        windowing = self.table.windowing
        if windowing.expires is None:
            return
        cutoff = self.latest - windowing.expires - windowing.size
        for raw_key in self.store.windows_before(cutoff):
            self.dirty[WINDOW_KEYS.loads(raw_key)] = DELETED


def partition_class(table: Table) -> type[TablePartition]:
    return WindowedPartition if table.windowing is not None else TablePartition
