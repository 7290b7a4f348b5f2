"""Global tables in a slot: the whole table in one LevelDB, kept by its changelog.

Each global table of the app lives in ``DATADIR/slot-i/globals/NAME``, one
LevelDB holding the keys of every changelog partition (a key is read by key,
whatever partition its producer put it in) and, per partition, the changelog
topic id and the next offset the values reflect (``m:position:P``), written
in the same WriteBatch as the values of that partition.

One thread per slot (:class:`GlobalReader`) reads every partition of every
global changelog with a consumer of its own (``assign()``, no group; under
exactly-once ``read_committed``), separate from the group's consumer.  At
start it reads from the stored offsets (so a restart replays only what it
missed) up to the end offsets as of that moment: the table is *loaded*
then, and the slot starts its agents.  It goes on following the changelogs
for as long as the slot runs.  Local state that does not belong to the
current changelog (topic deleted and created again, truncated past the
stored offset) is cleared and replayed from the start.

Nothing here needs Kafka to be read: :class:`GlobalStore` is written with
:meth:`GlobalStore.apply` and read with ``get``/``items``.
"""

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from ..app.context import MISSING
from ..app.globals import GlobalTable
from ..config import Settings
from .recovery import failures_reported, untrusted
from .stores import PartitionStore

log = logging.getLogger(__name__)

#: Where a partition's position is stored: this prefix and the partition number.
POSITION_OF = b'm:position:'


class GlobalStore(PartitionStore):
    """The LevelDB of one global table: every partition's keys, and each one's position."""

    def positions(self) -> dict[int, tuple[str, int]]:
        """Partition → (changelog topic id, next changelog offset) its values reflect."""
        found = {}
        for raw_key, raw in self._db.iterator(prefix=POSITION_OF):
            position = json.loads(raw)
            found[int(raw_key[len(POSITION_OF):])] = position['topic_id'], position['offset']
        return found

    def apply(self, partition: int, changes: Iterable[tuple[bytes, bytes | None]],
              topic_id: str, offset: int) -> None:
        """Apply changes of one partition (``None`` deletes) and its new position,
        atomically."""
        self.write(changes, topic_id, offset, POSITION_OF + str(partition).encode())

    def value(self, table: GlobalTable, key: Any) -> Any:
        """The decoded value of ``key``, or MISSING."""
        raw = self.get(table.key_codec.dumps(key))
        return MISSING if raw is None else table.value_codec.loads(raw)

    def decoded(self, table: GlobalTable, after: bytes | None = None
                ) -> Iterator[tuple[bytes, Any, Any]]:
        """(stored key, key, value) of every key after ``after``, in stored-key order."""
        for raw_key, raw in self.items(after=after):
            yield raw_key, table.key_codec.loads(raw_key), table.value_codec.loads(raw)


class Followed:
    """One changelog partition of a global table, as the reader follows it."""

    def __init__(self, table: GlobalTable, tp: TopicPartition, topic_id: str,
                 offset: int, target: int) -> None:
        self.table = table
        self.tp = tp
        self.topic_id = topic_id
        self.offset = offset          # next changelog offset to apply
        self.target = target          # the end as of the slot's start: loaded from there on


class GlobalReader:
    """The global tables of a slot and the thread that follows their changelogs.

    ``counts``: the partition count of each global changelog (from the layout).
    """

    def __init__(self, settings: Settings, client_id: str, tables: Iterable[GlobalTable],
                 datadir: Path, counts: dict[str, int],
                 on_failure: Callable[..., None]) -> None:
        self._settings = settings
        self._transactional = settings.processing_guarantee == 'exactly_once'
        self._client_id = client_id
        self._counts = counts
        self._on_failure = on_failure
        self.tables = {table.name: table for table in tables}
        self.stores = {name: GlobalStore(datadir / 'globals' / name) for name in self.tables}
        self._followed: dict[TopicPartition, Followed] = {}
        #: Set once every global table has read its changelogs up to their ends as of start.
        self.loaded = threading.Event()
        #: Table name → changelog records read since the slot started.
        self.read: dict[str, int] = dict.fromkeys(self.tables, 0)
        self._stopping = False
        self.thread = threading.Thread(target=self._run, name='global-tables', daemon=True)

    # -- any thread ----------------------------------------------------------

    def get(self, table: GlobalTable, key: Any) -> Any:
        return self.stores[table.name].value(table, key)

    def items(self, table: GlobalTable) -> Iterator[tuple[Any, Any]]:
        return ((key, value) for _, key, value in self.stores[table.name].decoded(table))

    def remaining(self) -> int | None:
        """Changelog records still to read before the tables are loaded (None until the
        reader knows where the changelogs end)."""
        followed = list(self._followed.values())
        if not followed:
            return None
        return sum(max(0, f.target - f.offset) for f in followed)

    def loading(self) -> str | None:
        """Why the slot is not ready yet because of its global tables, or None."""
        if self.loaded.is_set():
            return None
        remaining = self.remaining()
        left = ('reading where their changelogs end' if remaining is None
                else f'{remaining} changelog records remaining')
        return f'loading global tables {", ".join(sorted(self.tables))}: {left}'

    def describe(self, table: GlobalTable) -> dict[str, Any]:
        """The table as ``GET /tables/NAME`` shows it."""
        offsets = {str(f.tp.partition): f.offset for f in list(self._followed.values())
                   if f.table is table}
        return {'name': table.name, 'global': True, 'changelog': table.changelog.name,
                'partitions': self._counts[table.changelog.name],
                'offsets': dict(sorted(offsets.items(), key=lambda item: int(item[0]))),
                'loaded': self.loaded.is_set(), 'read_since_start': self.read[table.name]}

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stopping = True

    # -- the thread ----------------------------------------------------------

    def _run(self) -> None:
        consumer = None
        with failures_reported('the global table reader', self._on_failure):
            try:
                consumer = KafkaConsumer(
                    **self._settings.kafka_client(), client_id=f'{self._client_id}-global',
                    group_id=None, enable_auto_commit=False, max_poll_records=5000,
                    auto_offset_reset='earliest', bootstrap_timeout_ms=int(
                        self._settings.broker_timeout * 1000),
                    isolation_level=('read_committed' if self._transactional
                                     else 'read_uncommitted'))
                self._start_from_stored(consumer)
                started = time.monotonic()
                while not self._stopping:
                    self._read_once(consumer)
                    if not self.loaded.is_set() and self._caught_up(consumer):
                        self._report_loaded(time.monotonic() - started)
            finally:
                if consumer is not None:
                    consumer.close(autocommit=False)

    def _start_from_stored(self, consumer: KafkaConsumer) -> None:
        """Assign every partition of every global changelog, from its stored offset (the
        whole table again when its local state cannot be trusted)."""
        admin = KafkaAdminClient(**self._settings.kafka_client(),
                                 client_id=f'{self._client_id}-global-admin')
        followed: dict[TopicPartition, Followed] = {}
        try:
            for table in self.tables.values():
                [info] = admin.describe_topics([table.changelog.name])
                followed.update(self._follow(consumer, table, info['topic_id']))
        finally:
            admin.close()
        self._followed = followed          # whole: remaining() counts every partition or none
        consumer.assign(list(self._followed))
        for followed in self._followed.values():
            consumer.seek(followed.tp, followed.offset)

    def _follow(self, consumer: KafkaConsumer, table: GlobalTable,
                topic_id: str) -> dict[TopicPartition, Followed]:
        """Where to read each partition of ``table``'s changelog from, and up to where it
        is loading (local state that cannot be trusted is cleared first)."""
        store = self.stores[table.name]
        tps = [TopicPartition(table.changelog.name, number)
               for number in range(self._counts[table.changelog.name])]
        starts, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        stored = store.positions()
        problems = [problem for tp in tps if (problem := untrusted(
            *stored.get(tp.partition, (None, 0)), topic_id, starts[tp], ends[tp]))]
        if problems:
            log.warning('rebuilding global table %s from its changelog: %s', table.name,
                        problems[0])
            store.clear()
            stored = {}
        return {tp: Followed(table, tp, topic_id,
                             max(stored.get(tp.partition, (None, 0))[1], starts[tp]), ends[tp])
                for tp in tps}

    def _read_once(self, consumer: KafkaConsumer) -> None:
        for tp, records in consumer.poll(timeout_ms=200).items():
            followed = self._followed[tp]
            changes = [(record.key, record.value) for record in records
                       if record.key is not None]
            followed.offset = records[-1].offset + 1
            self.stores[followed.table.name].apply(tp.partition, changes, followed.topic_id,
                                                   followed.offset)
            self.read[followed.table.name] += len(records)

    def _caught_up(self, consumer: KafkaConsumer) -> bool:
        """Whether every partition has reached its end as of the start (its position, past
        commit markers, counts)."""
        for followed in self._followed.values():
            if followed.offset < followed.target:
                position = consumer.position(followed.tp)
                if position is None or position < followed.target:
                    return False
                followed.offset = max(followed.offset, position)
        return True

    def _report_loaded(self, elapsed: float) -> None:
        for name in sorted(self.tables):
            log.info('loaded global table %s: %d records in %.2fs', name, self.read[name],
                     elapsed)
        self.loaded.set()
