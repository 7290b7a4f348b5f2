"""LevelDB stores, one per changelog partition, opened and closed by reference count.

A store holds ``d`` + stored key → value, and ``m:position`` → the changelog
topic id and the next changelog offset the values reflect.  The position is
written in the same WriteBatch as the values, so it never claims more than
they hold.  The store of a windowed table also keeps an index, ``i`` + window
start (8 bytes, big-endian microseconds) + stored key, so expiry reads windows
oldest first instead of keeping them all in memory.

A store that LevelDB finds corrupt when it opens is deleted and restored from
the changelog, the source of truth.  Any other LevelDB error (a full disk, an
I/O error) is raised as a one-line :class:`runner.errors.DiskError`: the slot
stops (74), and the main process starts it again with its backoff.  Nothing
is lost: a store is written after the changelog has its changes.

plyvel can crash the process when a database is closed while another thread
reads it.  So every user of a store holds a reference: the task that owns the
partition, the changelog reader that recovers or follows it, a web request for
as long as it reads.  The store closes when the last reference goes; a request
that comes later finds no open store and answers 503.
"""

import contextlib
import json
import logging
import shutil
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import plyvel

from ..errors import DiskError

DATA = b'd'
INDEX = b'i'
INDEX_END = b'j'
POSITION = b'm:position'
_START = struct.Struct('>q')

#: A changelog partition: (changelog topic, partition number).
Key = tuple[str, int]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def leveldb(doing: str, path: Path) -> Iterator[None]:
    """Report a LevelDB error raised in the block as a one-line DiskError."""
    try:
        yield
    except (plyvel.Error, OSError) as exc:
        raise DiskError(f'cannot {doing} table store {path}: {reason(exc)}') from None


def reason(exc: plyvel.Error | OSError) -> str:
    """LevelDB's message (plyvel gives it as bytes), or the system's."""
    message = exc.args[0] if exc.args else exc
    if isinstance(message, bytes):
        return message.decode(errors='replace')
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


class PartitionStore:
    """LevelDB for one partition of one table; safe to use from several threads."""

    def __init__(self, path: Path, windowed: bool = False) -> None:
        self.path = Path(path)
        self.windowed = windowed
        with leveldb('open', self.path):
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                self._db = plyvel.DB(str(self.path), create_if_missing=True)
            except plyvel.CorruptionError as exc:
                log.warning('table store %s is corrupt (%s): deleting it, to restore it from '
                            'its changelog', self.path, reason(exc))
                shutil.rmtree(self.path)
                self._db = plyvel.DB(str(self.path), create_if_missing=True)

    def get(self, key: bytes) -> bytes | None:
        try:
            return self._db.get(DATA + key)
        except plyvel.Error as exc:
            raise DiskError(f'cannot read table store {self.path}: {reason(exc)}') from None

    def items(self, prefix: bytes = b'', after: bytes | None = None
              ) -> Iterator[tuple[bytes, bytes]]:
        """Stored (key, value) pairs whose key starts with ``prefix`` (and comes after
        ``after``, if given), in key order."""
        with self._db.iterator(prefix=DATA + prefix) as iterator:
            if after is not None:
                iterator.seek(DATA + after)
            for key, value in iterator:
                if key[1:] != after:
                    yield key[1:], value

    def position(self) -> tuple[str | None, int]:
        """(changelog topic id, next changelog offset) the values reflect; (None, 0) when new."""
        raw = self._db.get(POSITION)
        if raw is None:
            return None, 0
        position = json.loads(raw)
        return position['topic_id'], position['offset']

    def write(self, changes: Iterable[tuple[bytes, bytes | None]], topic_id: str | None,
              offset: int, position: bytes = POSITION) -> None:
        """Apply changes (``None`` deletes) and the new position atomically (``position``:
        where it is stored)."""
        with leveldb('write', self.path), self._db.write_batch() as batch:
            for key, value in changes:
                if value is None:
                    batch.delete(DATA + key)
                else:
                    batch.put(DATA + key, value)
                if self.windowed:
                    self._index(batch, key, value)
            batch.put(position, json.dumps({'topic_id': topic_id, 'offset': offset}).encode())

    def _index(self, batch: Any, key: bytes, value: bytes | None) -> None:
        entry = INDEX + _START.pack(round(json.loads(key)[1] * 1e6)) + key
        if value is None:
            batch.delete(entry)
        else:
            batch.put(entry, b'')

    def windows_before(self, start: float) -> Iterator[bytes]:
        """Stored keys of the windows starting before ``start``, oldest first (windowed)."""
        stop = INDEX + _START.pack(round(start * 1e6))
        with self._db.iterator(start=INDEX, stop=stop, include_value=False) as iterator:
            for entry in iterator:
                yield entry[1 + _START.size:]

    def newest_window(self) -> float | None:
        """The start of the newest stored window (windowed), or None."""
        with self._db.iterator(start=INDEX, stop=INDEX_END, reverse=True,
                               include_value=False) as iterator:
            for entry in iterator:
                return _START.unpack(entry[1:1 + _START.size])[0] / 1e6
        return None

    def clear(self) -> None:
        """Delete every value, index entry and the position (state that cannot be trusted)."""
        with leveldb('write', self.path), self._db.write_batch() as batch:
            for key in self._db.iterator(include_value=False):
                batch.delete(key)

    @property
    def closed(self) -> bool:
        return self._db.closed

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()


class Stores:
    """The slot's open stores, by changelog partition, with their reference counts."""

    def __init__(self, path_of: Callable[[Key], Path], windowed: Callable[[str], bool]) -> None:
        self._path_of = path_of
        self._windowed = windowed
        self._lock = threading.Lock()
        self._open: dict[Key, PartitionStore] = {}
        self._refs: dict[Key, int] = {}

    def open(self, key: Key) -> PartitionStore:
        """A reference to the store of ``key``, opening it if no one holds it."""
        with self._lock:
            store = self._open.get(key)
            if store is None:
                store = self._open[key] = PartitionStore(self._path_of(key),
                                                         self._windowed(key[0]))
            self._refs[key] = self._refs.get(key, 0) + 1
            return store

    def release(self, key: Key) -> None:
        """Give back a reference; the last one closes the store."""
        with self._lock:
            self._refs[key] -= 1
            if self._refs[key] == 0:
                del self._refs[key]
                self._open.pop(key).close()

    @contextlib.contextmanager
    def reading(self, key: Key) -> Iterator[PartitionStore | None]:
        """The store of ``key`` held open for the block, or None if it is not open here."""
        with self._lock:
            store = self._open.get(key)
            if store is not None:
                self._refs[key] += 1
        try:
            yield store
        finally:
            if store is not None:
                self.release(key)

    def opened(self) -> list[Key]:
        """The stores open now."""
        with self._lock:
            return list(self._open)

    def remove(self, paths: Iterable[Path]) -> list[Path]:
        """Delete the files of stores that are not open; returns those removed."""
        with self._lock:
            busy = {store.path for store in self._open.values()}
            removed = [path for path in paths if path not in busy]
            for path in removed:
                shutil.rmtree(path, ignore_errors=True)
        return removed
