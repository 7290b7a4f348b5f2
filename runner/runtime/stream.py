"""The stream an agent iterates over.

A record counts as processed when the agent asks for the next one (or the
stream ends): only then is it marked in its partition queue, and only marked
records are ever committed.  Between two records the thread serves any
checkpoint waiting for it, and stops the batch if its partition was taken
away.

The batch being processed belongs to the stream, not to one iteration of it:
an agent that catches an exception raised while processing a record and
iterates the stream again goes on with the next record (the one it raised on
counts as processed), and :class:`runner.runtime.agents.AgentThreads` uses
the same to retry, skip or dead-letter a record after the agent function
raised; or it stops the record's partition at the record, which waits in
its queue with the rest of its batch while the thread goes on with other
partitions, until the operator skips it (the next taker dead-letters it
first).  A record that cannot be decoded never reaches the agent: the
agent's error policy takes it (see :class:`runner.runtime.policy.ErrorPolicy`).
"""

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..app.context import Event
from ..app.topics import Topic
from .context import AgentContext
from .policy import ErrorPolicy
from .queues import Inbox, PartitionQueue, Stopped


class Stream:
    """The records of one topic handed to one agent instance (one thread).

    Iterate it for values, or use :meth:`items` for ``(key, value)`` pairs and
    :meth:`events` for :class:`runner.Event` objects.  Records of a partition
    arrive in offset order.  Iterating it again after an exception goes on
    after the record being processed when it was raised.
    """

    def __init__(self, topic: Topic, inbox: Inbox, context: AgentContext,
                 policy: ErrorPolicy, timing: Callable[[float, int], None] | None = None) -> None:
        self.topic = topic
        self._inbox = inbox
        self._context = context
        self._policy = policy
        #: The leased batch being processed: its queue and the records not yet yielded.
        self._open: tuple[PartitionQueue, Iterator] | None = None
        #: The record being processed was handed out and never finished (the agent raised).
        self._unfinished = False
        #: Steps of progress so far: batches taken, records handed out, failed records
        #: dealt with.  Counted, not timed: no clock is read per record.
        self._steps = 0
        #: Records of its batches processed, per partition: added once per batch, read by
        #: the metrics (:mod:`runner.runtime.metrics`) at scrape time.
        self.processed: dict[Any, int] = {}
        self._taken = 0                   # records in the open batch when it was taken
        #: Called once per batch finished with when (monotonic) it was taken and the
        #: timestamp of its last record (see :class:`runner.runtime.metrics.BatchTiming`).
        self._timing = timing
        self._taken_at = 0.0
        self._waiting = False             # inside the inbox, waiting for records
        self._noticed = (0, time.monotonic())   # (steps, when first seen by :attr:`progressed`)

    def __iter__(self) -> Iterator[Any]:
        loads = self.topic.value_codec.loads
        return self._records(lambda record: loads(record.value))

    def items(self) -> Iterator[tuple[Any, Any]]:
        key_loads = self.topic.key_codec.loads
        value_loads = self.topic.value_codec.loads
        return self._records(lambda record: (key_loads(record.key), value_loads(record.value)))

    def events(self) -> Iterator[Event]:
        key_loads = self.topic.key_codec.loads
        value_loads = self.topic.value_codec.loads
        return self._records(lambda record: Event(
            key_loads(record.key), value_loads(record.value), list(record.headers or ()),
            record.topic, record.partition, record.offset, record.timestamp))

    # -- what the agent threads do after the agent function raised ------------

    @property
    def unfinished(self) -> Any:
        """The record the agent raised on (still leased, not processed), or None."""
        return self._context.record if self._unfinished else None

    def retry(self) -> None:
        """Hand the unfinished record out again first."""
        queue, rest = self._open
        self._open = queue, itertools.chain([self._context.record], rest)
        self._unfinished = False
        self._steps += 1

    @property
    def progressed(self) -> float | None:
        """When (monotonic) the thread last made progress, as first noticed here; None while
        it waits for records.  The slot looks four times a second (its stuck check), so a
        step is noticed at most that late."""
        if self._waiting:
            return None
        steps, when = self._noticed
        if steps != self._steps:
            steps, when = self._noticed = self._steps, time.monotonic()
        return when

    def stuck(self, since: float) -> bool:
        """Whether the thread has made no progress since ``since`` (monotonic) while records
        wait for it: the batch it holds, or records queued that no thread takes."""
        progressed = self.progressed
        return progressed is not None and progressed < since and (
            self._open is not None or self._inbox.waiting())

    @property
    def holding(self) -> Any:
        """The record handed out last, while its batch is open (None between batches)."""
        return self._context.record if self._open is not None else None

    def stop_partition(self, stopped: Stopped) -> None:
        """Leave the unfinished record's partition stopped at that record (it and the rest
        of its batch wait in its queue, unprocessed) and let go of the batch, so the thread
        goes on with other partitions and a checkpoint can cut the task."""
        queue, rest = self._open
        self._open = None
        self._unfinished = False
        self._steps += 1
        left = [self._context.record, *rest]
        self._count(queue, self._taken - len(left))
        self._inbox.stop(queue, left, stopped)
        self._context.end()
        self._inbox.release(queue)

    def give_up(self) -> None:
        """Keep the partition leased for good: its agent raised and the slot stops."""
        if self._open is not None:
            self._inbox.fail(self._open[0])

    # -- iteration ------------------------------------------------------------

    def _records(self, convert: Callable[[Any], Any]) -> Iterator[Any]:
        if self._unfinished:
            self._finish()
        while True:
            if self._open is None:
                self._waiting = True
                taken = self._inbox.take()
                self._steps += 1
                self._waiting = False
                if taken is None:
                    return
                self._context.begin(taken[0])
                self._open = taken[0], iter(taken[1])
                self._taken = len(taken[1])
                if self._timing is not None:
                    self._taken_at = time.monotonic()
                if taken[0].skipping is not None:
                    self._set_aside_skipped()
            yield from self._batch(convert)

    def _batch(self, convert: Callable[[Any], Any]) -> Iterator[Any]:
        """Yield what is left of the open batch.  If the agent raises, the batch stays open
        (leased, and its task's guard held) with its record unfinished, so neither another
        thread nor a checkpoint gets past that record until the error is dealt with."""
        queue, records = self._open
        context = self._context
        held = context.held            # exactly-once: the record's sends, made once it is done
        start = self._steps
        for record in records:
            if queue.revoked:          # counted: the records handed out in this pass
                self._count(queue, self._steps - start)
                break
            context.record = record
            self._steps += 1
            try:
                value = convert(record)
            except Exception as exc:  # noqa: BLE001 - a codec's failure is the record's
                self._policy.unreadable(context, record, exc)
            else:
                self._unfinished = True
                yield value
                if held:               # a send failing now fails the record, still unfinished
                    context.release_held()
                self._unfinished = False
            queue.processed = record.offset
            context.boundary()
        else:
            self._count(queue, self._taken)
            if self._timing is not None:
                self._timing(self._taken_at, context.record.timestamp)
        self._open = None
        context.end()
        self._inbox.release(queue)

    def _count(self, queue: PartitionQueue, records: int) -> None:
        """Add a batch's processed records (once per batch, never per record)."""
        self.processed[queue.tp] = self.processed.get(queue.tp, 0) + records

    def _set_aside_skipped(self) -> None:
        """The operator skipped the record its partition stopped at, the first of the batch
        just taken: dead-letter it, processed."""
        queue, records = self._open
        skipped, queue.skipping = queue.skipping, None
        record = self._context.record = next(records)
        assert record.offset == skipped.record.offset, 'a stopped queue starts at its record'
        self._policy.skipped_by_operator(self._context, record, skipped.error)
        queue.processed = record.offset
        self._context.boundary()

    def _finish(self) -> None:
        """The unfinished record is over (skipped, or dead-lettered): mark it processed."""
        self._unfinished = False
        self._steps += 1
        self._open[0].processed = self._context.record.offset
        self._context.boundary()
