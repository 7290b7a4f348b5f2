"""A slot's table state: which changelog partitions are recovering or kept as standby,
the open stores and the value cache.

The consumer thread asks for recoveries when tasks are assigned and picks up
the recovered partitions; the changelog reader thread only reports
recoveries, through a queue; the web server reads.  Everything is keyed by
changelog topic-partition, so tables with different partition counts never
share an entry.
"""

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..app.tables import Table
from .partitions import TablePartition, ValueCache, partition_class
from .recovery import ChangelogReader
from .stores import Key, PartitionStore, Stores

log = logging.getLogger(__name__)

#: ``reader(stores, on_recovered) -> ChangelogReader``
ReaderFactory = Callable[[Stores, Callable[[Key, int, PartitionStore, str], None]],
                         ChangelogReader]


class StateManager:
    """Recoveries, standby replicas, stores and the cache of one slot's tables."""

    def __init__(self, tables: Iterable[Table], datadir: Path, reader: ReaderFactory) -> None:
        #: Changelog topic → its table.
        self.tables = {table.changelog.name: table for table in tables}
        self._datadir = datadir
        self.stores = Stores(self.store_path, lambda changelog: bool(
            self.tables[changelog].windowing))
        self.cache = ValueCache()
        self._lock = threading.Lock()
        self._recovering: dict[Key, int] = {}        # key → the request it waits for
        self._requests = 0
        self._recovered: queue.SimpleQueue = queue.SimpleQueue()
        self._standbys: set[Key] = set()
        self.reader = reader(self.stores, self._report_recovered)

    def store_path(self, key: Key) -> Path:
        changelog, number = key
        return self._datadir / 'tables' / self.tables[changelog].name / str(number)

    # -- consumer thread -----------------------------------------------------

    def recover(self, keys: list[Key]) -> None:
        """Bring these partitions up to date with their changelogs, then hand them over."""
        if not keys:
            return
        with self._lock:
            self._requests += 1
            self._recovering.update((key, self._requests) for key in keys)
        self.reader.recover(keys, self._requests)

    def cancel(self, keys: Iterable[Key]) -> None:
        """Stop recovering these partitions (taken away before they were ready)."""
        with self._lock:
            dropped = [key for key in keys if self._recovering.pop(key, None) is not None]
        if dropped:
            self.reader.drop(dropped)

    def take_recovered(self) -> list[tuple[Key, TablePartition]]:
        """Partitions recovered since the last call, ready for their tasks."""
        ready = []
        while True:
            try:
                key, request, store, topic_id = self._recovered.get_nowait()
            except queue.Empty:
                return ready
            with self._lock:
                current = self._recovering.get(key) == request
                if current:
                    del self._recovering[key]
            if not current:       # asked for before a revocation: a newer request wins
                self.stores.release(key)
                continue
            table = self.tables[key[0]]
            ready.append((key, partition_class(table)(table, key[1], store, topic_id,
                                                      self.cache)))

    def follow(self, keys: set[Key]) -> None:
        """Keep exactly these partitions warm as standby replicas."""
        self._standbys = set(keys)
        self.reader.follow(set(keys))

    # -- any thread ----------------------------------------------------------

    def _report_recovered(self, key: Key, request: int, store: PartitionStore,
                          topic_id: str) -> None:
        self._recovered.put((key, request, store, topic_id))

    def recovering(self) -> tuple[set[Key], int | None]:
        """Partitions still recovering, and how many changelog records remain (None until
        the reader has read where their changelogs end)."""
        with self._lock:
            requests = dict(self._recovering)
        return set(requests), self.reader.remaining(requests)

    def describe_recovering(self) -> tuple[list[str], int | None]:
        """Partitions still recovering as ``table[p]``, and changelog records remaining."""
        keys, remaining = self.recovering()
        return [f'{self.tables[changelog].name}[{number}]'
                for changelog, number in sorted(keys)], remaining

    def disk_usage(self) -> dict[tuple[str, int], int]:
        """Bytes on disk of every store open here (active, standby or recovering), by
        table name and partition number (for the metrics)."""
        return {(self.tables[changelog].name, number):
                _bytes_in(self.store_path((changelog, number)))
                for changelog, number in self.stores.opened()}

    def standbys(self, table: Table) -> dict[int, int]:
        """Standby partitions of ``table`` here, with the changelog offset each has reached."""
        positions = self.reader.positions()
        changelog = table.changelog.name
        return {number: positions.get((topic, number), 0)
                for topic, number in sorted(self._standbys) if topic == changelog}

    def remove_unused(self, older_than: float) -> list[Path]:
        """Delete local table partitions that have been neither open nor written here for
        ``older_than`` seconds (their changelogs can rebuild them)."""
        root = self._datadir / 'tables'
        idle = [path for path in root.glob('*/*')
                if path.is_dir() and _idle_for(path) > older_than]
        removed = self.stores.remove(idle)
        for path in removed:
            log.info('removed local state %s, unused for over %.0fs', path, older_than)
        return removed


def _bytes_in(path: Path) -> int:
    """The size of the files in ``path`` (0 if it cannot be read)."""
    try:
        return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())
    except OSError:
        return 0


def _idle_for(path: Path) -> float:
    """Seconds since anything in ``path`` was last written."""
    try:
        newest = max((entry.stat().st_mtime for entry in path.iterdir()),
                     default=path.stat().st_mtime)
    except OSError:
        return 0.0
    return time.time() - newest
