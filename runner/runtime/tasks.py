"""Tasks: the unit of processing and of table state in a slot.

A task is partition ``p`` of one co-partition group (see
:mod:`runner.app.layout`): the slot's queues of every assigned topic
partition numbered ``p`` whose topic has the group's partition count, and
partition ``p`` of the group's tables.  The group assignor hands out whole
tasks, so a record and the table state of its key are always in one slot.

The consumer thread creates tasks on assignment and retires them on
revocation; agent threads lease their queues and write their tables under
their guard; checkpoints cut them (see :mod:`runner.state.checkpoint`).
A retired task keeps its stores open until the last agent thread inside one
of its records has let go, so nothing is closed under a reader.
"""

import threading
from collections.abc import Callable, Iterable

from kafka import TopicPartition

from ..app.tables import Table
from ..state.checkpoint import Cut, Guard
from ..state.partitions import TablePartition
from ..state.stores import Key
from .queues import PartitionQueue, committable

#: (partition count of the group, partition number)
TaskId = tuple[int, int]


class Task:
    """Partition ``number`` of the co-partition group of ``group`` partitions, in this slot."""

    def __init__(self, group: int, number: int, tables: Iterable[Table]) -> None:
        self.id: TaskId = (group, number)
        self.number = number
        self.tables = list(tables)
        self.sources: list[TopicPartition] = []
        self.queues: list[PartitionQueue] = []
        #: Table name → its live partition, once recovered.
        self.partitions: dict[str, TablePartition] = {}
        self.guard = Guard(self.cut)
        #: The last cut was taken (or the task was abandoned): nothing it does later is
        #: committed, and what its agents send from now on is dropped.
        self.finished = False
        #: Last committed offset of each source, once this slot has committed one.
        self.committed: dict[TopicPartition, int] = {}
        #: Exactly-once: the transaction of its last cut; what its agents send after the
        #: cut goes into a later one.
        self.cut_in = -1
        self._lock = threading.Lock()
        self._leases = 0
        self._on_idle: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f'<Task {self.number} of {self.id[0]}>'

    @property
    def keys(self) -> list[Key]:
        """The changelog partitions of this task's tables."""
        return [(table.changelog.name, self.number) for table in self.tables]

    @property
    def ready(self) -> bool:
        """Every table partition is recovered: records may be handed out."""
        return len(self.partitions) == len(self.tables)

    def cut(self) -> Cut:
        """Offsets processed and table writes made since the last cut (under the guard)."""
        offsets = {tp: offset for tp, offset in committable(self.queues).items()
                   if offset > self.committed.get(tp, -1)}
        changes = []
        for partition in self.partitions.values():
            taken = partition.cut()
            if taken:
                changes.append((partition, taken))
        return Cut(offsets, changes)

    def restart_offsets(self) -> dict[TopicPartition, int]:
        """Where each source must be read again from if the task comes back: its last
        committed offset, whatever was fetched or processed after it."""
        offsets = {}
        for queue in self.queues:
            start = self.committed.get(queue.tp, queue.first)
            if start is not None:
                offsets[queue.tp] = min(start, offsets.get(queue.tp, start))
        return offsets

    # -- leases (agent threads) ----------------------------------------------

    def enter(self) -> None:
        """An agent thread starts a batch of this task's records."""
        with self._lock:
            self._leases += 1

    def leave(self) -> None:
        """An agent thread is done with its batch."""
        with self._lock:
            self._leases -= 1
            on_idle = self._on_idle if self._leases == 0 else None
            if on_idle is not None:
                self._on_idle = None
        if on_idle is not None:
            on_idle()

    def retire(self, on_idle: Callable[[], None]) -> None:
        """The task is gone from this slot: call ``on_idle`` once no agent is inside it."""
        with self._lock:
            if self._leases:
                self._on_idle = on_idle
                return
        on_idle()


class Tasks:
    """The slot's tasks by id, and the task of each assigned topic partition."""

    def __init__(self, counts: dict[str, int], tables_of: Callable[[int], list[Table]]) -> None:
        self._counts = counts             # topic → partition count (the group's, kept current)
        self._tables_of = tables_of       # group → its tables
        self._tasks: dict[TaskId, Task] = {}
        self._by_source: dict[TopicPartition, Task] = {}

    def assign(self, tps: Iterable[TopicPartition]) -> list[Task]:
        """Tasks for newly assigned partitions; returns the tasks that are new."""
        new = []
        for tp in sorted(tps):
            if tp in self._by_source:
                continue
            task_id = (self._counts[tp.topic], tp.partition)
            task = self._tasks.get(task_id)
            if task is None:
                task = self._tasks[task_id] = Task(*task_id, self._tables_of(task_id[0]))
                new.append(task)
            task.sources.append(tp)
            self._by_source[tp] = task
        return new

    def revoke(self, tps: Iterable[TopicPartition]) -> list[Task]:
        """Remove the tasks that had any of ``tps`` (tasks move as a whole)."""
        gone = {self._by_source[tp].id: self._by_source[tp] for tp in tps if tp in self._by_source}
        for task in gone.values():
            del self._tasks[task.id]
            for tp in task.sources:
                self._by_source.pop(tp, None)
        return list(gone.values())

    def task_of(self, tp: TopicPartition) -> Task | None:
        return self._by_source.get(tp)

    def active(self) -> list[Task]:
        return list(self._tasks.values())

    def __iter__(self):
        return iter(list(self._tasks.values()))


def names(tasks: Iterable[Task]) -> str:
    """The tasks by their source partitions (``topic:partition``), for the log."""
    return ', '.join(sorted(', '.join(f'{tp.topic}:{tp.partition}' for tp in task.sources)
                            or repr(task) for task in tasks))
