"""Windowed tables: a value per key and time window, and expiry of old windows.

``app.Table('clicks', default=int).tumbling(60, expires=3600)`` keeps one
value per key and minute; ``.hopping(60, 10, expires=3600)`` one per
overlapping minute starting every ten seconds.  Times are seconds; an event
belongs to the windows that contain its Kafka timestamp.  Windows are stored
as ``(key, window start)`` in the underlying table, and a window is deleted
(with a tombstone in the changelog) once the newest event seen in its
partition is more than ``expires`` seconds past the window's end.
"""

import json
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self

from .codecs import Codec
from .stream import current
from .tables import DELETED, Guard, Table, TablePartition, partition_items

if TYPE_CHECKING:
    from .store import PartitionStore


class Windowing:
    """Which windows contain a timestamp: tumbling when ``step == size``, else hopping."""

    def __init__(self, size: float, step: float, expires: float | None) -> None:
        if not size > 0 or not 0 < step <= size:
            raise ValueError('windows need size > 0 and 0 < step <= size')
        self.size = float(size)
        self.step = float(step)
        self.expires = float(expires) if expires is not None else None

    def starts(self, timestamp: float) -> list[float]:
        """Starts of every window containing ``timestamp``, oldest first."""
        last = math.floor(timestamp / self.step) * self.step
        first = last - math.ceil(self.size / self.step - 1) * self.step
        starts = [first + i * self.step for i in range(round((last - first) / self.step) + 1)]
        return [start for start in starts if start <= timestamp < start + self.size]

    def current(self, timestamp: float) -> float:
        """The newest window containing ``timestamp``."""
        return self.starts(timestamp)[-1]

    def retention_ms(self) -> int:
        """How long the changelog keeps records: long enough to rebuild unexpired windows."""
        keep = self.size + (self.expires if self.expires is not None else 7 * 86400)
        return int(keep * 2 * 1000)


class WindowKeyCodec(Codec):
    """Stores ``(key, start)`` as a JSON pair."""

    name = 'window-key'

    def dumps(self, obj: Any) -> bytes:
        return json.dumps(list(obj), separators=(',', ':')).encode()

    def loads(self, data: bytes | None) -> Any:
        return None if data is None else tuple(json.loads(data))


class WindowedPartition(TablePartition):
    """A partition of a windowed table, with an index of its windows for expiry."""

    __slots__ = ('latest', 'windows')

    def __init__(self, table: Table, number: int, store: 'PartitionStore', guard: Guard,
                 topic_id: str) -> None:
        super().__init__(table, number, store, guard, topic_id)
        self.windows: dict[float, set[Any]] = {}
        self.latest = 0.0
        for raw_key in store.iter_keys():
            key, start = table.key_codec.loads(raw_key)
            self.note(key, start, start)

    def note(self, key: Any, start: float, timestamp: float) -> None:
        self.windows.setdefault(start, set()).add(key)
        self.latest = max(self.latest, timestamp)

    def expire(self) -> None:
        """Delete windows that ended more than ``expires`` before the newest event (under guard)."""
        windowing = self.table.windowing
        if windowing.expires is None:
            return
        cutoff = self.latest - windowing.expires - windowing.size
        for start in [start for start in self.windows if start < cutoff]:
            for key in self.windows.pop(start):
                self.dirty[(key, start)] = DELETED


class WindowSet:
    """The windows of one key; arithmetic applies to every window of the current event."""

    def __init__(self, table: 'WindowedTable', key: Any) -> None:
        self._table = table
        self._key = key

    def current(self) -> Any:
        """The value in the newest window containing the event being processed."""
        return self._value_at(self._table.event_time())

    def now(self) -> Any:
        """The value in the newest window containing the wall-clock time."""
        return self._value_at(time.time())

    def delta(self, seconds: float) -> Any:
        """The value in the window ``seconds`` before the current event's."""
        return self._value_at(self._table.event_time() - seconds)

    def value(self) -> Any:
        return self.current()

    def _value_at(self, timestamp: float) -> Any:
        start = self._table.windowing.current(timestamp)
        return self._table.table[(self._key, start)]

    def apply(self, operation: Callable[[Any], Any]) -> Self:
        """Replace the value of every window of the current event with ``operation(value)``."""
        timestamp = self._table.event_time()
        table = self._table.table
        partition = table.here()
        for start in self._table.windowing.starts(timestamp):
            table[(self._key, start)] = operation(table[(self._key, start)])
            if isinstance(partition, WindowedPartition):
                partition.note(self._key, start, timestamp)
        return self

    def __iadd__(self, other: Any) -> Self:
        return self.apply(lambda value: value + other)

    def __isub__(self, other: Any) -> Self:
        return self.apply(lambda value: value - other)

    def __imul__(self, other: Any) -> Self:
        return self.apply(lambda value: value * other)

    def __repr__(self) -> str:
        return f'<WindowSet {self._table.table.name}[{self._key!r}]>'


class WindowedTable:
    """A table read and written per time window; see the module docstring."""

    def __init__(self, table: Table, windowing: Windowing) -> None:
        self.table = table
        self.windowing = windowing

    def __getitem__(self, key: Any) -> WindowSet:
        return WindowSet(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, WindowSet):
            return            # ``table[k] += 1`` already wrote through the WindowSet
        WindowSet(self, key).apply(lambda _old: value)

    def windows(self, key: Any) -> list[tuple[float, Any]]:
        """(window start, value) of every live window of ``key`` in this slot, oldest first."""
        partition = self.table.active.get(self.table.partition_of(key))
        return [] if partition is None else key_windows(partition, key)

    def event_time(self) -> float:
        record = getattr(current, 'record', None)
        if record is None:
            raise RuntimeError('windowed tables are updated from agents (no event here)')
        return record.timestamp / 1000.0

    def __repr__(self) -> str:
        return f'<WindowedTable {self.table.name} size={self.windowing.size}>'


def key_windows(partition: TablePartition, key: Any) -> list[tuple[float, Any]]:
    """(window start, value) of ``key``'s windows in one partition, oldest first."""
    return sorted((start, value) for (k, start), value in partition_items(partition) if k == key)
