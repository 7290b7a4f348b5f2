"""Per-partition queues between the consumer thread and the agent threads.

Records flow one way: the consumer thread puts each fetched batch into the
queue of its partition in every inbox that reads the topic; agent threads
take whole batches from their inbox.  Invariant: at most one agent thread
holds (leases) a partition queue at a time, so the records of a partition
are processed in offset order, while different partitions run in parallel.
Locks are taken once per batch, never per record.
"""

import collections
import threading
from collections.abc import Iterable, Sequence

from kafka import TopicPartition


class PartitionQueue:
    """One agent's fetched records of one partition, and its progress."""

    __slots__ = ('batches', 'failed', 'held', 'leased', 'pending', 'processed', 'ready',
                 'revoked', 'start', 'tp')

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.batches: collections.deque[Sequence] = collections.deque()
        self.pending = 0          # records queued and not yet taken by a thread
        self.leased = False       # an agent thread is working on a batch of it
        self.ready = False        # waiting in the inbox's ready line
        self.revoked = False      # the partition was taken away: stop at once
        self.failed = False       # its agent raised: it is never handed out again
        self.held = False         # its tables are recovering: not handed out yet
        self.start: int | None = None      # offset of the first record queued
        self.processed: int | None = None  # offset of the last processed record

    def resume_offset(self) -> int | None:
        """Offset where processing of this partition must continue."""
        if self.processed is not None:
            return self.processed + 1
        return self.start


class Inbox:
    """The partition queues of one agent and the line in which its threads take them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queues: dict[TopicPartition, PartitionQueue] = {}
        self._ready: collections.deque[PartitionQueue] = collections.deque()
        self._closing = False

    def assign(self, tps: Iterable[TopicPartition], held: set[int] = frozenset()) -> None:
        """Add queues; those with a partition number in ``held`` wait for :meth:`unhold`."""
        with self._cond:
            for tp in tps:
                if tp not in self._queues:
                    queue = self._queues[tp] = PartitionQueue(tp)
                    queue.held = tp.partition in held

    def unhold(self, numbers: set[int]) -> None:
        with self._cond:
            for queue in self._queues.values():
                if queue.held and queue.tp.partition in numbers:
                    queue.held = False
                    self._line_up(queue)

    def revoke(self, tps: Iterable[TopicPartition]) -> list[PartitionQueue]:
        """Drop the queues of ``tps``; records not yet taken are abandoned."""
        revoked = []
        with self._cond:
            for tp in tps:
                queue = self._queues.pop(tp, None)
                if queue is not None:
                    queue.revoked = True
                    queue.batches.clear()
                    queue.pending = 0
                    revoked.append(queue)
            self._cond.notify_all()
        return revoked

    def put(self, tp: TopicPartition, records: Sequence) -> None:
        with self._cond:
            queue = self._queues.get(tp)
            if queue is None or self._closing:
                return
            if queue.start is None:
                queue.start = records[0].offset
            queue.batches.append(records)
            queue.pending += len(records)
            self._line_up(queue)

    def take(self) -> tuple[PartitionQueue, Sequence] | None:
        """Lease the next partition with records; ``None`` once the inbox is closed and empty."""
        with self._cond:
            while True:
                while self._ready:
                    queue = self._ready.popleft()
                    queue.ready = False
                    if queue.revoked or queue.failed or queue.held or not queue.batches:
                        continue
                    queue.leased = True
                    records = queue.batches.popleft()
                    queue.pending -= len(records)
                    return queue, records
                if self._closing:
                    return None
                self._cond.wait()

    def release(self, queue: PartitionQueue) -> None:
        """Give a leased partition back after its batch is done (or abandoned)."""
        with self._cond:
            queue.leased = False
            self._line_up(queue)
            self._cond.notify_all()

    def fail(self, queue: PartitionQueue) -> None:
        """Keep a partition leased for good: its agent raised on a record."""
        with self._cond:
            queue.failed = True
            self._cond.notify_all()

    def close(self, drain: bool) -> None:
        """Let threads finish: with ``drain`` they first take what is queued."""
        with self._cond:
            self._closing = True
            if not drain:
                for queue in self._queues.values():
                    queue.batches.clear()
                    queue.pending = 0
            self._cond.notify_all()

    def _line_up(self, queue: PartitionQueue) -> None:
        if queue.batches and not (queue.leased or queue.ready or queue.revoked or queue.failed
                                  or queue.held):
            queue.ready = True
            self._ready.append(queue)
            self._cond.notify()

    def queues(self) -> list[PartitionQueue]:
        with self._cond:
            return list(self._queues.values())

    def idle(self) -> bool:
        """True when no record is queued or being processed (failed and held ones excepted)."""
        with self._cond:
            return not any(q.leased or (q.batches and not (q.failed or q.held))
                           for q in self._queues.values())


class Dispatcher:
    """Routes fetched batches to the inboxes of every agent that reads their topic."""

    def __init__(self, routes: dict[str, list[Inbox]]) -> None:
        self._routes = routes
        self._inboxes = [inbox for inboxes in routes.values() for inbox in inboxes]

    @property
    def topics(self) -> list[str]:
        return sorted(self._routes)

    def dispatch(self, tp: TopicPartition, records: Sequence) -> None:
        for inbox in self._routes.get(tp.topic, ()):
            inbox.put(tp, records)

    def assign(self, tps: Iterable[TopicPartition], held: set[int] = frozenset()) -> None:
        tps = list(tps)
        for topic, inboxes in self._routes.items():
            mine = [tp for tp in tps if tp.topic == topic]
            for inbox in inboxes:
                inbox.assign(mine, held)

    def unhold(self, numbers: set[int]) -> None:
        for inbox in self._inboxes:
            inbox.unhold(numbers)

    def revoke(self, tps: Iterable[TopicPartition]) -> list[PartitionQueue]:
        tps = list(tps)
        return [queue for inbox in self._inboxes for queue in inbox.revoke(tps)]

    def close(self, drain: bool) -> None:
        for inbox in self._inboxes:
            inbox.close(drain)

    def idle(self) -> bool:
        return all(inbox.idle() for inbox in self._inboxes)

    def _by_partition(self) -> dict[TopicPartition, list[PartitionQueue]]:
        return by_partition(queue for inbox in self._inboxes for queue in inbox.queues())

    def backlog(self) -> dict[TopicPartition, int]:
        """Records queued per partition, counted for its slowest agent."""
        return {tp: max(q.pending for q in qs) for tp, qs in self._by_partition().items()}

    def processed(self, numbers: set[int] | None = None) -> dict[TopicPartition, int]:
        """The offset to commit per partition: one past the last record every agent processed.

        ``numbers`` limits the answer to partitions with those numbers.
        """
        groups = self._by_partition()
        if numbers is not None:
            groups = {tp: qs for tp, qs in groups.items() if tp.partition in numbers}
        return committable(groups.values())


def by_partition(queues: Iterable[PartitionQueue]) -> dict[TopicPartition, list[PartitionQueue]]:
    """Group queues of several agents by their partition."""
    grouped: dict[TopicPartition, list[PartitionQueue]] = collections.defaultdict(list)
    for queue in queues:
        grouped[queue.tp].append(queue)
    return grouped


def committable(groups: Iterable[list[PartitionQueue]]) -> dict[TopicPartition, int]:
    """Commit offsets for queues grouped by partition (all agents must have processed a record)."""
    offsets = {}
    for queues in groups:
        if queues and all(q.processed is not None for q in queues):
            offsets[queues[0].tp] = min(q.processed for q in queues) + 1
    return offsets


def resume_offsets(queues: Iterable[PartitionQueue]) -> dict[TopicPartition, int]:
    """Where each partition must resume: the earliest unprocessed record of any agent."""
    offsets: dict[TopicPartition, int] = {}
    for queue in queues:
        offset = queue.resume_offset()
        if offset is not None:
            offsets[queue.tp] = min(offset, offsets.get(queue.tp, offset))
    return offsets
