"""Windowed tables: one value per key and time window.

``app.Table('clicks', default=int).tumbling(60, expires=3600)`` keeps one
value per key and minute; ``.hopping(60, 10, expires=3600)`` one per
overlapping minute starting every ten seconds.  Times are seconds; an event
belongs to the windows that contain its Kafka timestamp.  A window is stored
under ``(key, window start)``; the slot deletes it (with a tombstone in the
changelog) once the newest event of its partition is more than ``expires``
seconds past the window's end.
"""

import json
import math
import time
from collections.abc import Callable
from typing import Any, Self

from ..errors import ConfigError, SerializationError
from .codecs import Codec, dump_json, load_json
from .context import MISSING, current
from .partitioners import Partitioner
from .tables import Table


class Windowing:
    """Which windows contain a timestamp: tumbling when ``step == size``, else hopping."""

    def __init__(self, size: float, step: float, expires: float | None) -> None:
        try:
            size, step = float(size), float(step)
            expires = float(expires) if expires is not None else None
        except (TypeError, ValueError):
            raise ConfigError('window size, step and expires are seconds') from None
        if not size > 0 or not 0 < step <= size or (expires is not None and expires < 0):
            raise ConfigError('windows need size > 0, 0 < step <= size and expires >= 0')
        self.size = size
        self.step = step
        self.expires = expires

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
    """Stores ``(key, start)`` as a JSON pair, so a key's windows share a prefix."""

    name = 'window-key'

    def dumps(self, obj: Any) -> bytes:
        return dump_json(list(obj))

    def loads(self, data: bytes | None) -> Any:
        if data is None:
            return None
        pair = load_json(data)
        if not isinstance(pair, list) or len(pair) != 2:
            raise SerializationError('window key: not a [key, start] pair')
        return tuple(pair)

    def prefix(self, key: Any) -> bytes:
        """The bytes every stored window of ``key`` starts with."""
        return json.dumps([key], separators=(',', ':')).encode()[:-1] + b','


WINDOW_KEYS = WindowKeyCodec()


class WindowedTable(Table):
    """A table read and written per time window, made by :meth:`Table.tumbling` or
    :meth:`Table.hopping`.

    ``table[key]`` is the key's :class:`WindowSet`: ``table[key] += 1`` adds to every
    window of the event being processed.  Times are seconds; an event belongs to the
    windows that contain its Kafka timestamp.  A window is stored under ``(key, window
    start)``; the slot deletes it (with a tombstone in the changelog) once the newest
    event of its partition is more than ``expires`` seconds past the window's end.
    """

    def __init__(self, app: Any, name: str, windowing: Windowing,
                 default: Callable[[], Any] | None, partitions: int | None,
                 key_codec: Codec, value_codec: Codec,
                 partitioner: Partitioner | None) -> None:
        self.windowing = windowing
        super().__init__(app, name, default, partitions, key_codec, value_codec, partitioner)

    @property
    def stored_key_codec(self) -> Codec:
        return WINDOW_KEYS

    def routing_key(self, stored_key: Any) -> Any:
        return stored_key[0]

    def _changelog_config(self) -> dict[str, str]:
        return {'cleanup.policy': 'compact,delete',
                'retention.ms': str(self.windowing.retention_ms())}

    def tumbling(self, size: float, expires: float | None = None) -> 'WindowedTable':
        raise ConfigError(f'table {self.name!r} is already windowed')

    hopping = tumbling

    def __getitem__(self, key: Any) -> 'WindowSet':
        return WindowSet(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, WindowSet):
            return            # ``table[k] += 1`` already wrote through the WindowSet
        WindowSet(self, key).apply(lambda _old: value)

    def __delitem__(self, key: Any) -> None:
        raise TypeError('windows are deleted when they expire')

    def __contains__(self, key: Any) -> bool:
        return bool(self.windows(key))

    def get(self, key: Any, default: Any = None) -> Any:
        raise TypeError('use table[key].current(), .now() or .delta(seconds)')

    def windows(self, key: Any) -> list[tuple[float, Any]]:
        """(window start, value) of every live window of ``key`` in this slot, oldest first."""
        return current().windows(self, key)

    def value_at(self, key: Any, timestamp: float) -> Any:
        """The value of ``key`` in the newest window containing ``timestamp``."""
        value = current().read(self, (key, self.windowing.current(timestamp)))
        if value is MISSING:
            if self.default is None:
                raise KeyError(key)
            return self.default()
        return value

    def event_time(self, key: Any, reading: bool = True) -> float:
        """The time of the event being processed, which picks ``key``'s windows; outside an
        agent (no event) a RuntimeError that says what to call instead."""
        timestamp = current().event_time()
        if timestamp is None:
            raise RuntimeError(self._no_event(key) if reading else
                               f'{self.name}[{key!r}] is updated from agents only: its '
                               'windows are those of the event being processed')
        return timestamp

    def _no_event(self, key: Any) -> str:
        name = self.name
        return (f'{name}[{key!r}] has no current event outside an agent: read '
                f'{name}.value_at({key!r}, timestamp), {name}[{key!r}].now() (wall-clock '
                f'time) or {name}.windows({key!r})')


class WindowSet:
    """The windows of one key; arithmetic applies to every window of the current event."""

    def __init__(self, table: WindowedTable, key: Any) -> None:
        self._table = table
        self._key = key

    def current(self) -> Any:
        """The value in the newest window containing the event being processed."""
        return self._table.value_at(self._key, self._table.event_time(self._key))

    def now(self) -> Any:
        """The value in the newest window containing the wall-clock time."""
        return self._table.value_at(self._key, time.time())

    def delta(self, seconds: float) -> Any:
        """The value in the window ``seconds`` before the current event's."""
        return self._table.value_at(self._key, self._table.event_time(self._key) - seconds)

    def value(self) -> Any:
        """The same as :meth:`current`."""
        return self.current()

    def apply(self, operation: Callable[[Any], Any]) -> Self:
        """Replace the value of every window of the current event with ``operation(value)``."""
        table = self._table
        context = current()
        for start in table.windowing.starts(table.event_time(self._key, reading=False)):
            key = (self._key, start)
            old = context.read(table, key)
            if old is MISSING:
                if table.default is None:
                    raise KeyError(self._key)
                old = table.default()
            context.write(table, key, operation(old))
        return self

    def __iadd__(self, other: Any) -> Self:
        return self.apply(lambda value: value + other)

    def __isub__(self, other: Any) -> Self:
        return self.apply(lambda value: value - other)

    def __imul__(self, other: Any) -> Self:
        return self.apply(lambda value: value * other)

    def __repr__(self) -> str:
        return f'<WindowSet {self._table.name}[{self._key!r}]>'
