"""The checkpoint: the one place that orders a commit.

A checkpoint is taken every ``commit_interval`` seconds, when partitions are
taken away, and when a slot stops.  Its steps, in this order:

1. **cut**: each task is cut at a record boundary under its guard: the offsets
   its agents have processed and the unflushed writes of its table
   partitions are taken together;
2. **changelog**: the latest value of every changed key is sent to its
   table's changelog partition;
3. **barrier**: every record the slot sent before this point (agent outputs,
   ``app.send``, changelog records) is acknowledged by all in-sync replicas;
4. **commit**: the source offsets are committed;
5. **store**: values and the changelog offset they reflect are written to the
   partition's LevelDB store in one WriteBatch.

A crash anywhere leaves local state at or behind the changelog (recovery
replays the rest) and committed offsets at or behind the outputs: nothing is
lost, and what was processed after the last commit is processed again.

The cut is cooperative.  An agent thread that writes a task's tables holds the
task's :class:`Guard` for a batch of records.  The checkpoint raises a flag on
the guard; if the guard is free the checkpoint cuts the task itself,
otherwise the holder cuts it at its next record boundary (or when it lets go
of the guard).  So a busy agent never starves the commit, and a task whose
agent is stuck inside one record is left out of this checkpoint (and, on
revocation, abandoned) without holding up the others.

Under exactly-once every agent thread holds its task's guard for a whole
batch, so a task is only ever cut between two records, and a checkpoint
notes in each unit it cuts the transaction the cut belongs to
(``Unit.cut_in``): what the unit's agents send after the cut waits for the
next transaction, with the records it belongs to.  They go on processing
meanwhile; their table writes are the next cut's.  Steps 2 to 4 become:
changelog records into the open transaction, then the source offsets and
the commit of the transaction (:mod:`runner.runtime.transactions`); the
store step follows only a committed transaction.
"""

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka import TopicPartition

from ..kafka.producer import Producer
from .partitions import TablePartition


@dataclass
class Cut:
    """What one task contributes to a checkpoint, taken at a record boundary."""

    offsets: dict[TopicPartition, int]
    changes: list[tuple[TablePartition, dict[Any, Any]]] = field(default_factory=list)


class Guard:
    """Mutual exclusion between the agent threads writing a task's tables and the
    checkpoint that cuts them (see the module docstring).

    Invariant: a checkpoint's request is served exactly once, by whoever holds
    the lock when the request is seen, always at a record boundary.
    """

    __slots__ = ('_asked', '_cut', '_lock', 'wanted')

    def __init__(self, cut: Callable[[], Cut]) -> None:
        self._cut = cut
        self._lock = threading.Lock()       # held by an agent thread for a batch
        self._asked = threading.Lock()      # guards ``wanted``, for an instant
        self.wanted: Checkpoint | None = None

    # -- agent threads -------------------------------------------------------

    def take(self) -> None:
        """Hold the guard (first table access of a batch); blocks while another holds it."""
        self._lock.acquire()

    def boundary(self) -> None:
        """Between two records, while holding the guard: serve a waiting checkpoint."""
        if self.wanted is not None:
            self._serve()

    def release(self) -> None:
        """Let go of the guard at the end of a batch, serving a checkpoint that asked."""
        if self.wanted is not None:
            self._serve()
        self._lock.release()
        if self.wanted is not None:      # asked between the look above and the release
            self._serve_if_free()

    # -- checkpoints ---------------------------------------------------------

    def request(self, checkpoint: 'Checkpoint') -> None:
        """Ask for a cut: made now if the guard is free, else by its holder."""
        with self._asked:
            self.wanted = checkpoint
        self._serve_if_free()

    def _serve_if_free(self) -> None:
        if self._lock.acquire(blocking=False):
            try:
                self._serve()
            finally:
                self._lock.release()

    def _serve(self) -> None:
        with self._asked:
            checkpoint, self.wanted = self.wanted, None
        if checkpoint is not None:
            checkpoint.take(self, self._cut)


class Unit(Protocol):
    """What a checkpoint cuts: a task of the slot's runtime."""

    guard: Guard
    #: Its last cut was taken: nothing it does later is committed.
    finished: bool
    #: The last committed offset of each of its source partitions.
    committed: dict[TopicPartition, int]
    #: Exactly-once: the transaction its last cut belongs to.
    cut_in: int


class Checkpoint:
    """One commit, from the cuts of its tasks to the stored state (see the module docstring).

    Cuts arrive from agent threads; the consumer thread (or the rebalance
    listener) closes the checkpoint and drives the remaining steps
    (:meth:`steps`).  A cut that arrives after :meth:`close` is refused, and
    the writes stay for the next checkpoint.  Tasks cut with ``final`` are
    finished: nothing they do later is committed.
    """

    def __init__(self, deadline: float, transaction: int | None = None) -> None:
        self.deadline = deadline
        #: Exactly-once: the transaction this checkpoint ends.
        self.transaction = transaction
        self._lock = threading.Lock()
        self._wanted: dict[Guard, Unit] = {}
        self._final: set[Unit] = set()
        self._cuts: dict[Unit, Cut] = {}
        self._closed = False
        self._committed = False       # the offsets cut were committed
        self._sent: list[tuple[TablePartition, dict[Any, Any], list, Any]] = []

    def request(self, units: Iterable[Unit], final: bool = False) -> None:
        """Ask every unit for its cut."""
        units = list(units)
        with self._lock:
            self._wanted.update((unit.guard, unit) for unit in units)
            if final:
                self._final.update(units)
                for unit in units:
                    if unit in self._cuts:     # cut earlier: what came after is not committed
                        unit.finished = True
        for unit in units:
            unit.guard.request(self)

    def take(self, guard: Guard, cut: Callable[[], Cut]) -> None:
        """Called under ``guard`` at a record boundary: cut its unit, unless closed or done."""
        with self._lock:
            unit = self._wanted.get(guard)
            if self._closed or unit is None or unit in self._cuts:
                return
            self._cuts[unit] = cut()
            if self.transaction is not None:
                unit.cut_in = self.transaction
            if unit in self._final:
                unit.finished = True

    def has_cut(self, units: Iterable[Unit]) -> bool:
        """Every one of ``units`` has been cut."""
        with self._lock:
            return all(unit in self._cuts for unit in units)

    def complete(self) -> bool:
        """Every unit asked has been cut."""
        return self.has_cut(list(self._wanted.values()))

    def close(self) -> list[Unit]:
        """No more cuts; returns the units asked that were not cut."""
        with self._lock:
            self._closed = True
            return [unit for unit in self._wanted.values() if unit not in self._cuts]

    def unfinished(self) -> list[Unit]:
        """The units asked whose later work may still be committed."""
        with self._lock:
            return [unit for unit in self._wanted.values() if not unit.finished]

    @property
    def empty(self) -> bool:
        return not any(cut.offsets or cut.changes for cut in self._cuts.values())

    def offsets(self) -> dict[TopicPartition, int]:
        """The source offsets to commit: one past the last record every agent processed."""
        return {tp: offset for cut in self._cuts.values() for tp, offset in cut.offsets.items()}

    @property
    def changelog_records(self) -> int:
        """Changelog records sent for this checkpoint so far."""
        return sum(len(encoded) for _, _, encoded, _ in self._sent)

    def discard(self) -> None:
        """The transaction was aborted: the writes cut are thrown away, never stored."""
        for cut in self._cuts.values():
            for partition, changes in cut.changes:
                partition.discard(changes)

    def steps(self, producer: Producer) -> Iterator[tuple[str, Any]]:
        """Steps 2 to 5, in their order, once the checkpoint is closed.

        The driver — the consumer thread, blocking, or the rebalance listener,
        awaiting — is asked to wait for the barrier (``('barrier', epoch)``)
        and to commit the offsets (``('commit', offsets)``); after a commit
        that succeeded it calls :meth:`committed`.  A commit that failed or was
        deferred stores nothing: the writes stay unflushed, and the next
        checkpoint takes them again (with their changelog records).
        """
        self.send_changelogs(producer)
        yield 'barrier', producer.mark()
        offsets = self.offsets()
        if offsets:
            yield 'commit', offsets
            if not self._committed:
                return
        self.store()

    def committed(self) -> None:
        """The offsets were committed: each unit remembers its own."""
        self._committed = True
        for unit, cut in self._cuts.items():
            unit.committed.update(cut.offsets)

    def send_changelogs(self, producer: Producer) -> None:
        """Step 2: send the latest value of every changed key."""
        for cut in self._cuts.values():
            for partition, changes in cut.changes:
                encoded = partition.encoded(changes)
                future = producer.send_batch(partition.table.changelog.name, partition.number,
                                             encoded)
                self._sent.append((partition, changes, encoded, future))

    def store(self) -> None:
        """Step 5, once the barrier is passed: values and changelog positions to LevelDB."""
        assert self._committed or not self.offsets(), 'storing writes whose offsets were ' \
            'not committed'
        for partition, changes, encoded, future in self._sent:
            if future is not None:
                partition.store.write(encoded, partition.topic_id, future.value.offset + 1)
                partition.flushed(changes)
