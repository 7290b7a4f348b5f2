"""The slot's table state: which partitions are active, recovering or standby, and the
commit cut that makes table writes durable before source offsets are committed.

Partition numbers are shared by every table of the app (tables are
co-partitioned with their source topics): owning source partition ``p``
means owning partition ``p`` of every table.
"""

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import TopicPartition

from .producer import Producer
from .recovery import ChangelogReader, Key
from .store import PartitionStore
from .tables import Guard, Table, TablePartition

log = logging.getLogger(__name__)

#: Source offsets to commit for the given partition numbers (read under their guards).
Processed = Callable[[set[int]], dict[TopicPartition, int]]


@dataclass
class Cut:
    """Table writes taken at a consistent point, and the source offsets they cover."""

    offsets: dict[TopicPartition, int]
    changes: list[tuple[TablePartition, dict[Any, Any]]] = field(default_factory=list)
    busy: set[int] = field(default_factory=set)
    _sent: list[tuple[TablePartition, dict[Any, Any], list, Any]] = field(default_factory=list)

    def send(self, producer: Producer) -> None:
        """Write the latest value of every changed key to the changelogs."""
        for partition, changes in self.changes:
            encoded = partition.encoded(changes)
            future = None
            for key, value in encoded:
                future = producer.send(partition.table.changelog.name, key, value,
                                       partition=partition.number)
            self._sent.append((partition, changes, encoded, future))

    def store(self) -> None:
        """After the changelog is flushed: write values and changelog offsets to LevelDB."""
        for partition, changes, encoded, future in self._sent:
            if future is not None:
                partition.store.write(encoded, partition.topic_id, future.get(0).offset + 1)
                partition.flushed(changes)


class StateManager:
    """Opens, recovers, flushes and closes the table partitions of one slot."""

    def __init__(self, tables: Iterable[Table], datadir: Path, reader_factory: Callable[
            ..., ChangelogReader]) -> None:
        self.tables = {table.changelog.name: table for table in tables}
        self._datadir = datadir
        self._guards: dict[int, Guard] = {}
        self._lock = threading.Lock()
        self._recovering: dict[Key, int] = {}       # key → the request it waits for
        self._requests = 0
        self._recovered: set[int] = set()
        self._standbys: set[int] = set()
        self.reader = reader_factory(self.store_path, self._activate)

    @property
    def numbers(self) -> int:
        """How many partition numbers any table has."""
        return max((table.partitions for table in self.tables.values()), default=0)

    def store_path(self, key: Key) -> Path:
        topic, number = key
        return self._datadir / 'tables' / self.tables[topic].name / str(number)

    def _keys(self, numbers: Iterable[int]) -> list[Key]:
        """(changelog, number) of every table that has each of these partition numbers."""
        return [(topic, number) for number in numbers for topic, table in self.tables.items()
                if number < table.partitions]

    def guard(self, number: int) -> Guard:
        with self._lock:
            return self._guards.setdefault(number, Guard(number))

    # -- ownership ----------------------------------------------------------

    def assigned(self, numbers: set[int]) -> set[int]:
        """Start recovering the table partitions of newly owned numbers; returns those to hold."""
        keys = [key for key in self._keys(sorted(numbers))
                if key[1] not in self.tables[key[0]].active and key not in self._recovering]
        if not keys:
            return set()
        with self._lock:
            self._requests += 1
            self._recovering.update((key, self._requests) for key in keys)
            request = self._requests
        self.reader.recover(keys, request)
        return {number for _, number in keys}

    def revoked(self, numbers: set[int]) -> None:
        """Close the table partitions of numbers no longer owned (their files stay)."""
        dropped = []
        for topic, table in self.tables.items():
            for number in numbers:
                partition = table.active.pop(number, None)
                if partition is not None:
                    partition.store.close()
                with self._lock:
                    if self._recovering.pop((topic, number), None) is not None:
                        dropped.append((topic, number))
        if dropped:
            self.reader.drop(dropped)

    def follow(self, standbys: set[int]) -> None:
        """Keep these partition numbers warm as standby replicas."""
        self._standbys = set(standbys)
        self.reader.follow(set(self._keys(standbys)))

    def standbys_of(self, table: Table) -> dict[int, int]:
        """Standby partition numbers of ``table`` here, with the changelog offset each has reached."""
        positions = self.reader.positions()
        return {number: positions.get((table.changelog.name, number), 0)
                for number in sorted(self._standbys) if number < table.partitions}

    def peek(self, key: Key) -> PartitionStore | None:
        """The store of a partition being recovered or kept as standby here (for stale reads)."""
        return self.reader.store_for(key)

    def _activate(self, key: Key, request: int, store: PartitionStore, topic_id: str) -> None:
        """Called by the reader thread once a partition has caught up with its changelog.

        A recovery asked for before the partition was revoked (and perhaps assigned
        again) is stale: its store is closed, and the newer request wins.
        """
        topic, number = key
        table, guard = self.tables[topic], self.guard(number)
        with self._lock:
            if self._recovering.get(key) != request:
                store.close()
                return
            del self._recovering[key]
            table.active[number] = table.partition_class(table, number, store, guard, topic_id)
            if not any(k[1] == number for k in self._recovering):
                self._recovered.add(number)

    def take_recovered(self) -> set[int]:
        """Partition numbers whose tables all finished recovering since the last call."""
        with self._lock:
            done, self._recovered = self._recovered, set()
        return done

    def recovering(self) -> tuple[set[int], int]:
        """Numbers still recovering, and how many changelog records remain."""
        with self._lock:
            numbers = {number for _, number in self._recovering}
        return numbers, self.reader.remaining

    def remove_unused(self, older_than: float) -> list[Path]:
        """Delete local table partitions that have been neither owned nor kept as standby
        here for ``older_than`` seconds (their changelog can rebuild them)."""
        root = self._datadir / 'tables'
        with self._lock:
            keys = set(self._recovering) | {(topic, number) for topic, table in self.tables.items()
                                            for number in table.active}
            keys.update(self._keys(self._standbys))
            in_use = {self.store_path(key) for key in keys}
            removed = [path for path in root.glob('*/*')
                       if path.is_dir() and path not in in_use and _idle_for(path) > older_than]
            for path in removed:
                shutil.rmtree(path, ignore_errors=True)
        for path in removed:
            log.info('removed local state %s, unused for over %.0fs', path, older_than)
        return removed

    # -- the commit cut -------------------------------------------------------

    def cut(self, processed: Processed, numbers: Iterable[int]) -> Cut:
        """Take the writes of partitions ``numbers`` whose guard is free right now."""
        cut = Cut(offsets={})
        for number in sorted(set(numbers)):
            guard = self.guard(number)
            if not guard.lock.acquire(blocking=False):
                cut.busy.add(number)
                continue
            try:
                cut.offsets.update(processed({number}))
                for table in self.tables.values():
                    partition = table.active.get(number)
                    if partition is None:
                        continue
                    partition.expire()
                    if partition.dirty:
                        cut.changes.append((partition, partition.cut()))
            finally:
                guard.lock.release()
        return cut


def _idle_for(path: Path) -> float:
    """Seconds since anything in ``path`` was last written."""
    newest = max((entry.stat().st_mtime for entry in path.iterdir()), default=path.stat().st_mtime)
    return time.time() - newest
