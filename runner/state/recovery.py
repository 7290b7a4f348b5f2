"""Reading changelogs into LevelDB: recovery of newly owned partitions and standby replicas.

One thread per slot with a consumer of its own (``assign()``, no group).
A recovering partition replays its changelog from the offset stored with the
local state up to the end offset seen when recovery began, then is handed to
the slot as active.  A standby partition is followed for as long as this
slot keeps it warm, so a takeover only replays the last few records.
Local state that does not belong to the current changelog (topic deleted or
recreated, offsets truncated past it) is wiped and rebuilt, never trusted.
"""

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from ..config import Settings
from ..errors import RunnerError
from .stores import Key, PartitionStore, Stores

log = logging.getLogger(__name__)

#: How often recovery progress is logged.
PROGRESS_EVERY = 5.0
#: Under exactly-once, how often the last stable offsets of followed changelogs are asked
#: for (one request), to measure how far behind the replicas are.
LAG_EVERY = 1.0
#: How long a store ahead of its changelog's last stable offset waits for the offset
#: to catch up (transaction markers are written after the commit returns).
MARKERS_WAIT = 5.0


class Replica:
    """One changelog partition being read into its store."""

    def __init__(self, key: Key, store: PartitionStore, topic_id: str, offset: int) -> None:
        self.key = key
        self.request = 0                 # the recovery request being served
        self.tp = TopicPartition(*key)
        self.store = store
        self.topic_id = topic_id
        self.offset = offset             # next changelog offset to apply
        self.target: int | None = None   # set while recovering: stop here
        self.started = time.monotonic()  # when its recovery was asked for
        self.first = offset
        self.applied = 0

    @property
    def remaining(self) -> int:
        return max(0, (self.target or 0) - self.offset)


class ChangelogReader:
    """The recovery and standby thread of a slot."""

    def __init__(self, settings: Settings, client_id: str, stores: Stores,
                 on_recovered: Callable[[Key, int, PartitionStore, str], None],
                 on_failure: Callable[[str], None]) -> None:
        self._settings = settings
        self._transactional = settings.processing_guarantee == 'exactly_once'
        self._on_failure = on_failure
        self._client_id = client_id
        self._stores = stores
        self._on_recovered = on_recovered
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._replicas: dict[Key, Replica] = {}
        self._stopping = False
        self._last_progress = time.monotonic()
        self._targets: dict[Key, tuple[int, int]] = {}    # key → (request, end to reach)
        self._lags: dict[Key, int] = {}     # changelog records a replica is behind the end
        self._lags_measured = float('-inf')  # exactly-once: when they were last asked for
        self._consumer: KafkaConsumer | None = None     # the thread's clients, once created
        self._admin: KafkaAdminClient | None = None
        self.thread = threading.Thread(target=self._run, name='changelog', daemon=True)

    # -- commands (from other threads) --------------------------------------

    def start(self) -> None:
        self.thread.start()

    def recover(self, keys: list[Key], request: int) -> None:
        """Bring these partitions up to date, then hand them over (with their store
        reference) to ``on_recovered``."""
        self._commands.put(('recover', (keys, request)))

    def follow(self, keys: set[Key]) -> None:
        """Keep exactly these partitions warm as standby replicas."""
        self._commands.put(('follow', keys))

    def drop(self, keys: list[Key]) -> None:
        """Stop reading these partitions (revoked while recovering)."""
        self._commands.put(('drop', keys))

    def remaining(self, requests: dict[Key, int]) -> int | None:
        """Changelog records still to replay for these recovery requests (any thread);
        None while this thread has not yet read where some of their changelogs end."""
        targets, replicas = dict(self._targets), dict(self._replicas)
        total = 0
        for key, request in requests.items():
            if targets.get(key, (None,))[0] != request:
                return None
            replica = replicas.get(key)
            if replica is not None and replica.target is not None:
                total += replica.remaining
        return total

    def caught_up(self, acceptable_lag: int) -> set[Key]:
        """Partitions read here that are at most ``acceptable_lag`` records behind their
        changelog's end, as last seen (any thread)."""
        lags = dict(self._lags)
        return {key for key in list(self._replicas) if lags.get(key, acceptable_lag + 1)
                <= acceptable_lag}

    def positions(self) -> dict[Key, int]:
        """Next changelog offset of every partition being read here (any thread)."""
        return {key: replica.offset for key, replica in list(self._replicas.items())}

    def stop(self) -> None:
        self._stopping = True
        self._commands.put(('stop', None))

    # -- the thread ----------------------------------------------------------

    def _run(self) -> None:
        with failures_reported('the changelog reader', self._on_failure):
            try:
                self._open_clients()
                while not self._stopping:
                    self._handle_commands(block=not self._replicas)
                    if self._replicas and not self._stopping:
                        self._read_once()
            finally:
                self._close()

    def _open_clients(self) -> None:
        connection = self._settings.kafka_client()
        self._consumer = KafkaConsumer(
            **connection, client_id=f'{self._client_id}-changelog', group_id=None,
            enable_auto_commit=False, max_poll_records=5000, auto_offset_reset='earliest',
            isolation_level=('read_committed' if self._transactional else 'read_uncommitted'),
            bootstrap_timeout_ms=int(self._settings.broker_timeout * 1000))
        self._admin = KafkaAdminClient(**connection,
                                       client_id=f'{self._client_id}-changelog-admin')

    def _close(self) -> None:
        """Release the stores read here and close the clients that were created."""
        for key in self._replicas:
            self._stores.release(key)
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
        if self._admin is not None:
            self._admin.close()

    def _handle_commands(self, block: bool) -> None:
        """Apply every queued command, then read the resulting set of partitions once."""
        timeout = 0.5 if block else 0
        handled = False
        while True:
            try:
                command, argument = self._commands.get(timeout=timeout)
            except queue.Empty:
                break
            timeout = 0
            if command == 'stop':
                break
            getattr(self, f'_{command}')(argument)
            handled = True
        if handled:
            self._consumer.assign([replica.tp for replica in self._replicas.values()])
            for replica in self._replicas.values():
                self._consumer.seek(replica.tp, replica.offset)

    def _recover(self, order: tuple[list[Key], int]) -> None:
        keys, request = order
        ends = self._consumer.end_offsets([TopicPartition(*key) for key in keys])
        for key in keys:
            replica = self._replicas.get(key) or self._open(key)
            replica.request = request
            replica.target = ends[TopicPartition(*key)]
            self._targets[key] = (request, replica.target)
            replica.first, replica.applied, replica.started = replica.offset, 0, time.monotonic()

    def _follow(self, keys: set[Key]) -> None:
        for key in list(self._replicas):
            if key not in keys and self._replicas[key].target is None:
                del self._replicas[key]
                self._stores.release(key)
        for key in keys:
            if key not in self._replicas:
                self._open(key)

    def _drop(self, keys: list[Key]) -> None:
        for key in keys:
            self._targets.pop(key, None)
            if self._replicas.pop(key, None) is not None:
                self._stores.release(key)

    def _open(self, key: Key) -> Replica:
        """Open the local store and check it against the changelog; rebuild what cannot be trusted."""
        tp = TopicPartition(*key)
        store = self._stores.open(key)
        topic_id = self._topic_id(key[0])
        stored_id, offset = store.position()
        start = self._consumer.beginning_offsets([tp])[tp]
        end = self._committed_end(tp, offset)
        problem = untrusted(stored_id, offset, topic_id, start, end)
        if problem:
            log.warning('rebuilding %s[%d] from its changelog: %s', *key, problem)
            store.clear()
            offset = start
        replica = self._replicas[key] = Replica(key, store, topic_id, max(offset, start))
        return replica

    def _committed_end(self, tp: TopicPartition, offset: int) -> int:
        """The changelog's end as this reader sees it.  Under exactly-once that is the
        last stable offset, which lags a committed transaction until its markers are
        written; a store ahead of it is given a moment before it is distrusted."""
        deadline = time.monotonic() + (MARKERS_WAIT if self._transactional else 0)
        while True:
            end = self._consumer.end_offsets([tp])[tp]
            if end >= offset or time.monotonic() >= deadline:
                return end
            time.sleep(0.05)

    def _topic_id(self, topic: str) -> str:
        [info] = self._admin.describe_topics([topic])
        return info['topic_id']

    def _read_once(self) -> None:
        batches = self._consumer.poll(timeout_ms=100)
        for tp, records in batches.items():
            replica = self._replicas.get((tp.topic, tp.partition))
            if replica is not None:
                self._apply(replica, records)
        self._measure_lags()
        self._finish_caught_up()
        self._log_progress()

    def _apply(self, replica: Replica, records: list[Any]) -> None:
        changes = [(record.key, record.value) for record in records if record.key is not None]
        replica.offset = records[-1].offset + 1
        replica.applied += len(records)
        replica.store.write(changes, replica.topic_id, replica.offset)

    def _measure_lags(self) -> None:
        """How far each replica is behind what it can read.  Under exactly-once that is the
        last stable offset (asked for every ``LAG_EVERY`` seconds), and the position counts
        the commit markers read past: the high watermark runs ahead of it by the open
        transaction's records for as long as the owner is under load."""
        if not self._transactional:
            for key, replica in self._replicas.items():
                end = self._consumer.highwater(replica.tp)
                if end is not None:
                    self._lags[key] = max(0, end - replica.offset)
            return
        now = time.monotonic()
        if now < self._lags_measured + LAG_EVERY:
            return
        self._lags_measured = now
        replicas = list(self._replicas.items())
        try:
            ends = self._consumer.end_offsets([replica.tp for _, replica in replicas])
        except KafkaError as exc:       # Kafka out of reach: the lags stay as last seen
            log.debug('could not read the changelogs\' last stable offsets: %s', exc)
            return
        for key, replica in replicas:
            position = max(replica.offset, self._consumer.position(replica.tp) or 0)
            self._lags[key] = max(0, ends[replica.tp] - position)

    def _finish_caught_up(self) -> None:
        for key, replica in list(self._replicas.items()):
            if replica.target is None:
                continue
            if replica.offset < replica.target:
                position = self._consumer.position(replica.tp)
                if position is None or position < replica.target:
                    continue
                replica.offset = max(replica.offset, position)
            del self._replicas[key]
            elapsed = time.monotonic() - replica.started
            log.info('recovered %s[%d]: %d records in %.2fs', *key, replica.applied, elapsed)
            self._on_recovered(key, replica.request, replica.store, replica.topic_id)

    def _log_progress(self) -> None:
        now = time.monotonic()
        recovering = [r for r in self._replicas.values() if r.target is not None]
        if not recovering or now - self._last_progress < PROGRESS_EVERY:
            return
        self._last_progress = now
        done = sum(r.offset - r.first for r in recovering)
        remaining = sum(r.remaining for r in recovering)
        total = done + remaining
        elapsed = max(now - min(r.started for r in recovering), 1e-6)
        rate = done / elapsed
        left = f'about {remaining / rate:.0f}s left' if rate else 'rate unknown'
        log.info('recovering tables: %d of %d records (%.0f%%), %.0f records/s, %s',
                 done, total, 100 * done / max(total, 1), rate, left)


@contextlib.contextmanager
def failures_reported(reader: str, on_failure: Callable[..., None]) -> Iterator[None]:
    """Hand what ends a reader's thread to ``on_failure`` (a :class:`RunnerError` with its
    exit code; anything else logged with its traceback), so that the slot stops with an
    exit code rather than wait forever for a reader that is gone."""
    try:
        yield
    except RunnerError as exc:             # such as a store that cannot be written
        on_failure(str(exc), exc.exit_code)
    except Exception as exc:
        log.exception('%s failed', reader)
        on_failure(f'{reader} failed: {exc}')


def untrusted(stored_id: str | None, offset: int, topic_id: str, start: int, end: int) -> str:
    """Why local state cannot be trusted against this changelog, or '' if it can."""
    if stored_id is None:
        return ''
    if stored_id != topic_id:
        return 'the changelog topic was deleted and created again'
    if offset > end:
        return f'the state is at offset {offset} but the changelog ends at {end}'
    if offset < start:
        return f'the changelog starts at {start}, after the state\'s offset {offset}'
    return ''
