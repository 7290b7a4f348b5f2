"""The processing contexts of a slot: how tables and sends reach its state and producer.

:class:`SlotContext` serves every thread of the slot that is not processing
a record (the web server, threads an app starts): a key is found in the
partition its bytes hash to, and tables are read-only.  Each agent thread
binds an :class:`AgentContext`, which follows the record being processed:
keys live in that record's task, whose guard the thread takes at its first
table access of a batch.
"""

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from kafka.errors import MessageSizeTooLargeError
from kafka.future import Future
from kafka.record.default_records import DefaultRecordBatchBuilder

from ..app.context import DELETED, MISSING
from ..app.globals import GlobalTable
from ..app.layout import Layout
from ..app.tables import Table
from ..app.topics import Topic
from ..errors import ConfigError, OutputRefused, shown
from ..kafka.producer import Producer
from ..state.checkpoint import Guard
from ..state.globals import GlobalReader
from ..state.manager import StateManager
from ..state.partitions import TablePartition
from ..state.stores import Key
from .queues import PartitionQueue
from .tasks import Task


class SlotContext:
    """Tables read by key hash, and sends through the slot's producer.

    Under exactly-once, ``producer`` is transactional and carries what agents
    send; records sent from anywhere else (no record, no transaction to belong
    to) go through ``outside``, a plain producer, so an aborted transaction
    never takes them along.
    """

    def __init__(self, layout: Layout, producer: Producer, state: StateManager | None,
                 outside: Producer | None = None,
                 global_tables: GlobalReader | None = None) -> None:
        self.layout = layout
        self.producer = producer
        self.outside = outside or producer
        self.state = state
        self.global_tables = global_tables
        #: Changelog partition → its live table partition (written by the consumer thread).
        self.active: dict[Key, TablePartition] = {}

    def key_of(self, table: Table, key: Any) -> Key:
        """The changelog partition a (routing) key of ``table`` is placed in."""
        self.check_declared(table)
        return table.changelog.name, self.layout.partition_of(table, key)

    def caught_up(self, acceptable_lag: int) -> set[Key]:
        """Changelog partitions this slot holds at most ``acceptable_lag`` records behind
        their end: those it owns, and the standby copies close enough."""
        held = set(self.active)
        if self.state is not None:
            held |= self.state.reader.caught_up(acceptable_lag)
        return held

    def check_declared(self, table: Table) -> None:
        """Refuse a table that is not the app's own (such as a plain table made windowed)."""
        if self.layout.app.tables.get(table.name) is not table:
            raise ConfigError(f'table {table.name!r} is not a table of app '
                              f'{self.layout.app.name!r} (a windowed table replaces the plain '
                              'one it was made from)')

    @contextlib.contextmanager
    def active_partition(self, changelog_key: Key) -> Iterator[TablePartition | None]:
        """The live partition of ``changelog_key`` if this slot owns it, its store held
        open for the block (a partition that moves away meanwhile closes after it)."""
        with self.state.stores.reading(changelog_key) as store:
            partition = self.active.get(changelog_key)
            yield partition if store is not None and partition is not None \
                and partition.store is store else None

    def event_time(self) -> float | None:
        return None

    def read(self, table: Table, key: Any) -> Any:
        with self.active_partition(self.key_of(table, table.routing_key(key))) as partition:
            return MISSING if partition is None else partition.get(key)

    def write(self, table: Table, key: Any, value: Any) -> None:
        raise RuntimeError(f'table {table.name!r} can only be changed from an agent')

    def items(self, table: Table) -> Iterator[tuple[Any, Any]]:
        self.check_declared(table)
        for changelog_key in sorted(self.active):
            if changelog_key[0] == table.changelog.name:
                with self.active_partition(changelog_key) as partition:
                    if partition is not None:
                        yield from list(partition.items())

    def windows(self, table: Table, key: Any) -> list[tuple[float, Any]]:
        with self.active_partition(self.key_of(table, key)) as partition:
            return [] if partition is None else partition.windows(key)

    def check_global(self, table: GlobalTable) -> GlobalReader:
        """Refuse a global table that is not the app's own, or one not held here (no
        :class:`GlobalReader` was given, as in ``runner.testing`` so far); the slot's
        global tables."""
        if self.layout.app.global_tables.get(table.name) is not table:
            raise ConfigError(f'global table {table.name!r} is not a table of app '
                              f'{self.layout.app.name!r}')
        if self.global_tables is None:
            raise RuntimeError(f'global table {table.name!r} is not held here: global tables '
                               'live in worker slots')
        return self.global_tables

    def read_global(self, table: GlobalTable, key: Any) -> Any:
        return self.check_global(table).get(table, key)

    def items_global(self, table: GlobalTable) -> Iterator[tuple[Any, Any]]:
        return self.check_global(table).items(table)

    def write_global(self, table: GlobalTable, key: Any, value: Any) -> None:
        raise RuntimeError(f'global table {table.name!r} can only be changed by the agent of '
                           'its source topic, or by producing to its changelog topic '
                           f'{table.changelog.name!r}')

    def send(self, topic: Topic, key: bytes | None, value: bytes | None,
             headers: list | None = None, partition: int | None = None) -> Any:
        return self.outside.send(topic.name, key, value, headers,
                                 placed(topic, key, partition, self.outside))

    def send_processed(self, topic: Topic, key: bytes | None, value: bytes | None,
                       headers: list | None, partition: int | None,
                       dropped: Callable[[], bool], after: int,
                       timestamp_ms: int | None = None) -> Any:
        """Send on behalf of an agent's record (in its transaction, under exactly-once)."""
        return self.producer.send(topic.name, key, value, headers,
                                  placed(topic, key, partition, self.producer), dropped, after,
                                  timestamp_ms)

    def flush(self, timeout: float) -> None:
        self.outside.flush(timeout)


class AgentContext:
    """The context of one agent thread: the record it is processing and that record's task.

    Under exactly-once what a record sends is *held* until the record is done, then sent
    into the open transaction (the task is cut only after that, at the record boundary);
    if the record fails, its held sends are dropped with its table writes, so a record
    tried again, skipped, dead-lettered or stopped at leaves no output in a committed
    transaction.  An agent that waits for a send's result (``get()``) sends what it holds
    there and then.
    """

    __slots__ = ('_owned_key', '_owned_record', '_owned_table', 'guard', 'held', 'queue',
                 'record', 'slot', 'task', 'undone')

    def __init__(self, slot: SlotContext) -> None:
        self.slot = slot
        self.queue: PartitionQueue | None = None
        self.task: Task | None = None
        self.record: Any = None
        self.guard: Guard | None = None     # the guard this thread holds, if any
        #: The record's table writes so far, as (partition, key, value before), to take
        #: them back if the record fails (no checkpoint cuts a task inside a record).
        self.undone: list[tuple[TablePartition, Any, Any]] = []
        #: The last (table, key) found to be the record's partition's, and for which record.
        self._owned_table: Table | None = None
        self._owned_key: Any = None
        self._owned_record: Any = None
        #: Exactly-once: the record's sends not made yet (None: sends are made at once).
        self.held: list[HeldSend] | None = [] if slot.producer.transactional else None

    # -- the stream's side ---------------------------------------------------

    def begin(self, queue: PartitionQueue) -> None:
        """A batch of ``queue`` starts (its lease already counts as inside its task).
        Under exactly-once the thread holds the task's guard for the whole batch, so the
        task is only ever cut between two records (sends included)."""
        self.queue, self.task = queue, queue.task
        if self.slot.producer.transactional:
            self._hold(queue.task)

    def hold(self) -> None:
        """Hold the task's guard for the rest of the batch, as a table access does, so a
        checkpoint cuts the task only between two records (their sends included)."""
        self._hold(self.task)

    def boundary(self) -> None:
        """Between two records: send what the last one held, serve a checkpoint waiting for
        this thread."""
        if self.held:
            self.release_held()
        if self.undone:
            self.undone.clear()
        guard = self.guard
        if guard is not None:
            guard.boundary()

    def end(self) -> None:
        """The batch is over (done, revoked or abandoned): let go of the guard and the task."""
        assert not self.held, 'a record\'s held sends are made or dropped before its batch ends'
        guard, self.guard = self.guard, None
        if guard is not None:
            guard.release()
        task, self.task, self.queue, self.record = self.task, None, None, None
        if task is not None:
            task.leave()

    # -- the processing context ----------------------------------------------

    def event_time(self) -> float | None:
        record = self.record
        return None if record is None else record.timestamp / 1000.0

    def read(self, table: Table, key: Any) -> Any:
        task = self.task
        if task is None:
            return self.slot.read(table, key)
        # The partition and key checks of write, inline: they run on every table access.
        partition = task.partitions.get(table.name)
        if partition is None or self.guard is not task.guard:
            partition = self._partition(table)
        if key is not self._owned_key or table is not self._owned_table \
                or self.record is not self._owned_record:
            self._check_owned(table, key)
        return partition.get(key, fill_cache=True)

    def write(self, table: Table, key: Any, value: Any) -> None:
        task = self.task
        if task is None:
            raise RuntimeError(f'table {table.name!r} can only be changed while processing a '
                               'record')
        table.check(key, value)
        partition = task.partitions.get(table.name)
        if partition is None or self.guard is not task.guard:
            partition = self._partition(table)
        if key is not self._owned_key or table is not self._owned_table \
                or self.record is not self._owned_record:
            self._check_owned(table, key)
        self.undone.append((partition, key, partition.set(key, value)))
        if table.windowing is not None:
            partition.observe(self.event_time())

    def undo(self) -> None:
        """Take back the table writes of the record being processed (it failed), and drop
        the sends it holds."""
        while self.undone:
            partition, key, before = self.undone.pop()
            partition.unset(key, before)
        if self.held:
            self.held.clear()

    def release_held(self) -> None:
        """Make the sends held so far, in order (the record is done, or waits for one)."""
        held = self.held
        while held:
            held.pop(0).make()

    def items(self, table: Table) -> Iterator[tuple[Any, Any]]:
        return self.slot.items(table)

    def windows(self, table: Table, key: Any) -> list[tuple[float, Any]]:
        if self.task is None:
            return self.slot.windows(table, key)
        partition = self._partition(table)
        self._check_routed(table, key)
        return partition.windows(key)

    def read_global(self, table: GlobalTable, key: Any) -> Any:
        """Any key of a global table, whatever the record's partition: every slot holds
        all of it."""
        return self.slot.read_global(table, key)

    def items_global(self, table: GlobalTable) -> Iterator[tuple[Any, Any]]:
        return self.slot.items_global(table)

    def write_global(self, table: GlobalTable, key: Any, value: Any) -> None:
        """Send the new value to the global table's changelog as an output of the record
        being processed (held for its transaction under exactly-once); refused unless the
        record is one of the table's writer agent, the agent of its source topic."""
        record = self.record
        if self.task is None or record is None:
            raise RuntimeError(f'global table {table.name!r} can only be changed while '
                               'processing a record of its source topic')
        self.slot.check_global(table)
        if record.topic not in self.slot.layout.global_writers[table.name]:
            raise ConfigError(_not_the_writer(table, record.topic))
        self.send(table.changelog, table.key_codec.dumps(key),
                  None if value is DELETED else table.value_codec.dumps(value))

    def send(self, topic: Topic, key: bytes | None, value: bytes | None,
             headers: list | None = None, partition: int | None = None,
             timestamp_ms: int | None = None) -> Any:
        """Send through the slot's producer; dropped once the record's task is finished
        (its partition was taken away, and the next owner processes the record again).
        Outside a record it is a send of the slot's, belonging to no record."""
        task = self.task
        if task is None:
            return self.slot.send(topic, key, value, headers, partition)
        if self.held is None:
            return self.send_now(topic, key, value, headers, partition, timestamp_ms)
        _check_size(topic, key, value, headers, self.slot.producer.max_request_size)
        held = HeldSend(self, (topic, key, value, headers, partition, timestamp_ms))
        self.held.append(held)
        return held

    def send_now(self, topic: Topic, key: bytes | None, value: bytes | None,
                 headers: list | None, partition: int | None,
                 timestamp_ms: int | None = None) -> Any:
        """Send on behalf of the record being processed (see :meth:`send`)."""
        task = self.task
        try:
            sent = None if self.dropping else self.slot.send_processed(
                topic, key, value, headers, partition, lambda: self.dropping, task.cut_in,
                timestamp_ms)
        except MessageSizeTooLargeError as exc:
            raise OutputRefused(f'a record for {topic.name} is too large: {exc}') from None
        return Future().success(None) if sent is None else sent

    @property
    def dropping(self) -> bool:
        """Whether the record's task is finished: its outputs would only be duplicates."""
        task = self.task
        return task is not None and task.finished

    def flush(self, timeout: float) -> None:
        self.slot.producer.flush(timeout)

    def _partition(self, table: Table) -> TablePartition:
        """The task's partition of ``table``, its guard held from now to the end of the
        batch (read and write take it from the task themselves once the guard is held)."""
        task = self.task
        partition = task.partitions.get(table.name)
        if partition is None:
            self.slot.check_declared(table)
            raise ConfigError(
                f'table {table.name!r} has {self.slot.layout.partitions(table)} partitions but '
                f'topic {self.queue.tp.topic!r} has {task.id[0]}; tables must be co-partitioned '
                'with their source topics')
        self._hold(task)
        return partition

    def _check_owned(self, table: Table, stored_key: Any) -> None:
        """Refuse a key that lives in another partition than the record's: its value is in
        another task, maybe another slot, and a write here would split it.  The record's
        own key is always served, wherever its producer put the record.  The last key
        found owned is remembered for the record (``counts[k] += 1`` reads, then writes)."""
        self._check_routed(table, table.routing_key(stored_key))
        self._owned_table, self._owned_key, self._owned_record = table, stored_key, self.record

    def _check_routed(self, table: Table, key: Any) -> None:
        """:meth:`_check_owned` of a routing key (a windowed table's key, not its window)."""
        number = self.slot.layout.partition_of(table, key)
        task = self.task
        if number != task.number and \
                self.slot.layout.placement_codecs[table.name].dumps(key) != self.record.key:
            record = self.record
            raise ConfigError(
                f'table {table.name!r}: key {shown(key)} belongs to partition {number}, but '
                f'the record being processed ({record.topic}[{record.partition}]@'
                f'{record.offset}) is in partition {task.number}; an agent reads and writes '
                "only keys of its record's partition: re-key the stream with "
                'stream.group_by(key_fn) (or send to a topic keyed by the table key)')

    def _hold(self, task: Task) -> None:
        if self.guard is not task.guard:
            task.guard.take()
            self.guard = task.guard


class HeldSend(Future):
    """A send an agent made under exactly-once, held until its record is done (see
    :class:`AgentContext`): resolved as the send it becomes, if it is made."""

    def __init__(self, context: AgentContext, send: tuple) -> None:
        super().__init__()
        self._context = context
        self._send = send
        self._made: Any = None

    def make(self) -> None:
        """Send it now; its callbacks follow the real send's."""
        self._made = self._context.send_now(*self._send)
        self._made.add_callback(self.success)
        self._made.add_errback(self.failure)

    def get(self, timeout: float | None = None) -> Any:
        """The record's metadata: sends what the agent holds first, as it waits for it."""
        if self._made is None:
            self._context.release_held()
        if self._made is None:          # dropped: its record failed
            raise OutputRefused('the send was dropped: the record that made it failed')
        return self._made.get(timeout)


def _not_the_writer(table: GlobalTable, topic: str) -> str:
    """Why a record of ``topic`` may not write a global table."""
    changelog = table.changelog.name
    if table.source is None:
        return (f'global table {table.name!r} has no source topic, so no agent writes it '
                f'(a record of {topic!r} tried): produce to its changelog {changelog!r}, or '
                'declare GlobalTable(..., source=topic) to write it from that topic\'s agent')
    return (f'global table {table.name!r} is written only by the agent of its source topic '
            f'{table.source.name!r}, not by one processing a record of {topic!r}: send the '
            f'change to {table.source.name!r}, or produce it to the changelog {changelog!r}')


def _check_size(topic: Topic, key: bytes | None, value: bytes | None, headers: list | None,
                limit: int) -> None:
    """Refuse now, in the agent, a record the producer would refuse once it is made (by
    kafka-python's own estimate, which its producer checks)."""
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers or [])
    if size > limit:
        raise OutputRefused(f'a record for {topic.name} is too large: {size} bytes of key, '
                            f'value and headers, over max_request_size ({limit})')


def placed(topic: Topic, key: bytes | None, partition: int | None, producer: Producer) -> int | None:
    """The partition a record goes to: the one asked for, else where the topic's partitioner
    puts its key (kafka-python places a record without a key)."""
    if partition is not None or key is None:
        return partition
    return topic.partitioner(key, producer.partition_count(topic.name))
