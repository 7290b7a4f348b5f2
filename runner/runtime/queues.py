"""Per-partition queues between the consumer thread and the agent threads.

Records flow one way: the consumer thread puts each fetched batch into the
queue of its partition in the inbox of every agent that reads the topic;
agent threads take whole batches from their inbox.  Locks are taken once per
batch, never per record.

Invariant: at most one agent thread holds (leases) the records of a partition
at a time, in one slot, so each agent sees a partition in offset order.  A
queue taken away in a rebalance is *revoked*: its queued records are dropped
and its holder stops at the next record boundary.  If the partition comes
back while that holder is still inside a record, the new queue waits
(``blocked``) until the old lease is given back.

A queue whose agent raised on a record under ``on_error='stop'`` is
*stopped*: that record and the rest of its batch wait at its front, and it
is not handed out until the operator skips the record (``skipping``: the
next taker sets it aside first) or the slot restarts.
"""

import collections
import threading
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from kafka import TopicPartition


class Stopped(NamedTuple):
    """Why a partition queue is stopped: agent ``agent`` raised ``error`` on ``record``."""

    agent: str
    record: Any
    error: str

    def describe(self) -> dict[str, Any]:
        """The record's offset and key (as text), the agent and its error, as JSON."""
        key = self.record.key
        return {'offset': self.record.offset, 'agent': self.agent, 'error': self.error,
                'key': None if key is None else key.decode(errors='replace')}


class PartitionQueue:
    """One agent's fetched records of one partition, and its progress."""

    __slots__ = ('batches', 'blocked', 'failed', 'first', 'held', 'leased', 'pending',
                 'processed', 'ready', 'revoked', 'skipping', 'stopped', 'task', 'tp')

    def __init__(self, tp: TopicPartition, task: Any) -> None:
        self.tp = tp
        self.task = task          # the runtime Task this partition belongs to (enter/leave)
        self.batches: collections.deque[Sequence] = collections.deque()
        self.pending = 0          # records queued and not yet taken by a thread
        self.leased = False       # an agent thread is working on a batch of it
        self.ready = False        # waiting in the inbox's ready line
        self.revoked = False      # the partition was taken away: stop at once
        self.failed = False       # its agent raised: it is never handed out again
        self.stopped: Stopped | None = None    # its agent raised: not handed out for now
        self.skipping: Stopped | None = None   # the stopped record to set aside first
        self.held = False         # its tables are recovering: not handed out yet
        self.blocked = False      # a revoked queue of the same partition is still leased
        self.first: int | None = None      # offset of the first record queued
        self.processed: int | None = None  # offset of the last processed record


class Inbox:
    """The partition queues of one agent and the line in which its threads take them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queues: dict[TopicPartition, PartitionQueue] = {}
        self._ready: collections.deque[PartitionQueue] = collections.deque()
        self._revoked_leases: dict[TopicPartition, PartitionQueue] = {}
        self._closing = False

    def assign(self, tp: TopicPartition, task: Any, held: bool) -> PartitionQueue:
        """Add the queue of ``tp``; a held one waits for :meth:`unhold`."""
        with self._cond:
            queue = self._queues[tp] = PartitionQueue(tp, task)
            queue.held = held
            queue.blocked = tp in self._revoked_leases
            return queue

    def unhold(self, queues: Iterable[PartitionQueue]) -> None:
        """Hand out these queues (those of this inbox) from now on."""
        with self._cond:
            for queue in queues:
                if self._queues.get(queue.tp) is queue:
                    queue.held = False
                    self._line_up(queue)

    def revoke(self, tps: Iterable[TopicPartition]) -> list[PartitionQueue]:
        """Take the queues of ``tps`` away; records not yet taken are dropped."""
        revoked = []
        with self._cond:
            for tp in tps:
                queue = self._queues.pop(tp, None)
                if queue is not None:
                    queue.revoked = True
                    queue.batches.clear()
                    queue.pending = 0
                    if queue.leased:
                        self._revoked_leases[tp] = queue
                    revoked.append(queue)
            self._cond.notify_all()
        return revoked

    def put(self, tp: TopicPartition, records: Sequence) -> None:
        with self._cond:
            queue = self._queues.get(tp)
            if queue is None or self._closing:
                return
            if queue.first is None:
                queue.first = records[0].offset
            queue.batches.append(records)
            queue.pending += len(records)
            self._line_up(queue)

    def take(self) -> tuple[PartitionQueue, Sequence] | None:
        """Lease the next partition with records (blocking); ``None`` once the inbox is
        closed and nothing is left to take.  The lease counts as being inside its task
        (:meth:`runner.runtime.tasks.Task.enter`) until the taker leaves it."""
        with self._cond:
            while True:
                taken = self._take_ready()
                if taken is not None or self._closing:
                    return taken
                self._cond.wait()

    def take_ready(self) -> tuple[PartitionQueue, Sequence] | None | bool:
        """:meth:`take` without waiting: the lease, ``None`` once the inbox is closed and
        empty, or False when nothing is ready yet (:mod:`runner.testing` waits itself)."""
        with self._cond:
            taken = self._take_ready()
            return taken if taken is not None or self._closing else False

    def _take_ready(self) -> tuple[PartitionQueue, Sequence] | None:
        """Lease the first ready partition, if any (the caller holds the condition)."""
        while self._ready:
            queue = self._ready.popleft()
            queue.ready = False
            if not self._can_take(queue):
                continue
            queue.leased = True
            queue.task.enter()       # counted before a revocation can look
            records = queue.batches.popleft()
            queue.pending -= len(records)
            return queue, records
        return None

    def release(self, queue: PartitionQueue) -> None:
        """Give a leased partition back after its batch is done (or abandoned)."""
        with self._cond:
            queue.leased = False
            if self._revoked_leases.get(queue.tp) is queue:
                del self._revoked_leases[queue.tp]
                successor = self._queues.get(queue.tp)
                if successor is not None:
                    successor.blocked = False
                    self._line_up(successor)
            self._line_up(queue)
            self._cond.notify_all()

    def fail(self, queue: PartitionQueue) -> None:
        """Keep a partition leased for good: its agent raised on a record."""
        with self._cond:
            queue.failed = True
            self._cond.notify_all()

    def stop(self, queue: PartitionQueue, records: Sequence, stopped: Stopped) -> None:
        """Hand ``queue`` out no more (its holder releases it afterwards): ``records``, the
        failed record and the rest of its batch, wait at its front."""
        with self._cond:
            queue.stopped = stopped
            if not queue.revoked:
                queue.batches.appendleft(records)
                queue.pending += len(records)

    def skip(self, tp: TopicPartition, offset: int) -> Stopped | None:
        """Hand the queue of ``tp``, stopped at ``offset``, out again, to have that record
        set aside first; returns why it was stopped, or None if it is not stopped there."""
        with self._cond:
            queue = self._queues.get(tp)
            stopped = queue and queue.stopped
            if not stopped or stopped.record.offset != offset:
                return None
            queue.skipping, queue.stopped = stopped, None
            self._line_up(queue)
            return stopped

    def close(self, drain: bool) -> None:
        """Let threads finish: with ``drain`` they first take what is queued."""
        with self._cond:
            self._closing = True
            if not drain:
                for queue in self._queues.values():
                    queue.batches.clear()
                    queue.pending = 0
            self._cond.notify_all()

    @staticmethod
    def _can_take(queue: PartitionQueue) -> bool:
        return bool(queue.batches) and not (queue.leased or queue.revoked or queue.failed
                                            or queue.stopped or queue.held or queue.blocked)

    def _line_up(self, queue: PartitionQueue) -> None:
        if not queue.ready and self._can_take(queue):
            queue.ready = True
            self._ready.append(queue)
            self._cond.notify()

    def queues(self) -> list[PartitionQueue]:
        with self._cond:
            return list(self._queues.values())

    def waiting(self) -> bool:
        """True when a partition with records waits for a thread to take it."""
        with self._cond:
            return any(self._can_take(queue) for queue in self._ready)

    def idle(self) -> bool:
        """True when no record is queued or being processed (failed, stopped and held ones
        excepted)."""
        with self._cond:
            return not any(q.leased or (q.batches and not (q.failed or q.stopped or q.held))
                           for q in self._queues.values())


class Dispatcher:
    """Routes fetched batches to the inboxes of every agent that reads their topic."""

    def __init__(self, routes: dict[str, list[Inbox]]) -> None:
        self._routes = routes
        #: Each inbox once (an agent that re-keys its stream reads two topics).
        self._inboxes = list(dict.fromkeys(inbox for inboxes in routes.values()
                                           for inbox in inboxes))

    @property
    def topics(self) -> list[str]:
        return sorted(self._routes)

    def dispatch(self, tp: TopicPartition, records: Sequence) -> None:
        for inbox in self._routes.get(tp.topic, ()):
            inbox.put(tp, records)

    def assign(self, tp: TopicPartition, task: Any, held: bool) -> list[PartitionQueue]:
        """A queue for ``tp`` in every inbox that reads its topic."""
        return [inbox.assign(tp, task, held) for inbox in self._routes.get(tp.topic, ())]

    def unhold(self, queues: list[PartitionQueue]) -> None:
        for inbox in self._inboxes:
            inbox.unhold(queues)

    def revoke(self, tps: Iterable[TopicPartition]) -> list[PartitionQueue]:
        tps = list(tps)
        return [queue for inbox in self._inboxes for queue in inbox.revoke(tps)]

    def close(self, drain: bool) -> None:
        for inbox in self._inboxes:
            inbox.close(drain)

    def idle(self) -> bool:
        return all(inbox.idle() for inbox in self._inboxes)

    def queues(self) -> list[PartitionQueue]:
        return [queue for inbox in self._inboxes for queue in inbox.queues()]

    def skip(self, tp: TopicPartition, offset: int) -> list[Stopped]:
        """Go on after the record at ``offset`` that stopped ``tp`` (see :meth:`Inbox.skip`),
        in every inbox where it stopped it."""
        return [stopped for inbox in self._routes.get(tp.topic, ())
                if (stopped := inbox.skip(tp, offset)) is not None]

    def stopped(self) -> dict[TopicPartition, Stopped]:
        """The stopped partitions, and why (for one of its agents, if several)."""
        return {queue.tp: stopped for queue in self.queues()
                if (stopped := queue.stopped) is not None}

    def backlog(self) -> dict[TopicPartition, int]:
        """Records queued per partition, counted for its slowest agent."""
        backlog: dict[TopicPartition, int] = {}
        for queue in self.queues():
            backlog[queue.tp] = max(queue.pending, backlog.get(queue.tp, 0))
        return backlog

    def processed(self) -> dict[TopicPartition, int]:
        """Next offset to commit per partition, as far as every agent has got."""
        return committable(self.queues())


def committable(queues: Iterable[PartitionQueue]) -> dict[TopicPartition, int]:
    """Per partition, one past the last record *every* agent of it has processed."""
    by_tp: dict[TopicPartition, list[PartitionQueue]] = collections.defaultdict(list)
    for queue in queues:
        by_tp[queue.tp].append(queue)
    return {tp: min(q.processed for q in qs) + 1 for tp, qs in by_tp.items()
            if all(q.processed is not None for q in qs)}
