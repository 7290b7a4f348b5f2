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

Re-keying (:meth:`Stream.group_by`): the agent's inbox gets the records of
its topic and of its repartition topic.  Iterating the grouped stream sends
each record of the topic to the repartition topic under its new key, as an
output of that record (in its transaction, under exactly-once; holding its
task's guard, so no checkpoint falls between a forward and its record's
offset), and hands the agent the records read back from the repartition
topic, whose partition is the one of the new key: table keys derived from it
are the record's own.
"""

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..app.context import Event
from ..app.topics import Topic
from ..errors import ConfigError
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
                 policy: ErrorPolicy, repartition: Topic | None = None,
                 timing: Callable[[float, int], None] | None = None) -> None:
        self.topic = topic
        #: The agent's repartition topic, if it re-keys its stream.
        self.repartition = repartition
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
        return self._records(decoded_values(self.topic))

    def items(self) -> Iterator[tuple[Any, Any]]:
        """The records as ``(key, value)`` pairs, decoded."""
        return self._records(decoded_items(self.topic))

    def events(self) -> Iterator[Event]:
        """The records as :class:`runner.Event` tuples: key, value, headers, topic,
        partition, offset and timestamp."""
        return self._records(decoded_events(self.topic))

    def group_by(self, key: Callable[[Any], Any]) -> 'GroupedStream':
        """This stream re-keyed by ``key(value)``, through the agent's repartition topic
        ``{app}-{agent}-repartition``: the agent gets each value once it has been read
        back from the partition of its new key, so the table keys derived from that key
        are in the partition of the record being processed.  Call it in the agent's own
        function (the name ``group_by`` in it declares the repartition topic at start)."""
        if self.repartition is None:
            raise ConfigError('stream.group_by is called from outside the agent\'s own '
                              'function, so the agent has no repartition topic: call it in '
                              'the function decorated with @app.agent')
        if not callable(key):
            raise TypeError(f'group_by takes a function of the value (its new key), not '
                            f'{type(key).__name__}')
        return GroupedStream(self, key)

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

    def _regrouped(self, convert: Callable[[Any], Any], key: Callable[[Any], Any]
                   ) -> Iterator[Any]:
        """Records of the repartition topic, converted; those of the topic are sent there
        under ``key(value)``, with their value, headers and timestamp."""
        topic, dumps = self.repartition, self.repartition.key_codec.dumps
        send = self._context.send

        def forward(record: Any, value: Any) -> None:
            new_key = key(value)
            if new_key is None:
                raise TypeError('the key function of group_by returned None')
            send(topic, dumps(new_key), record.value, record.headers, None,
                 record.timestamp if record.timestamp >= 0 else None)
        return self._records(convert, (decoded_values(self.topic), forward))

    def _records(self, convert: Callable[[Any], Any],
                 regroup: tuple[Callable[[Any], Any], Callable[[Any, Any], None]] | None = None
                 ) -> Iterator[Any]:
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
            if regroup is not None and self._open[0].tp.topic == self.topic.name:
                self._context.hold()     # a forward is state: cut with its record's offset
                yield from self._batch(*regroup)
            else:
                yield from self._batch(convert)

    def _batch(self, convert: Callable[[Any], Any],
               forward: Callable[[Any, Any], None] | None = None) -> Iterator[Any]:
        """Yield what is left of the open batch (or pass each value to ``forward``).  If the
        agent raises, the batch stays open (leased, and its task's guard held) with its
        record unfinished, so neither another thread nor a checkpoint gets past that
        record until the error is dealt with."""
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
                if forward is None:
                    yield value
                else:
                    forward(record, value)
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


class GroupedStream:
    """A stream re-keyed through its agent's repartition topic (see :meth:`Stream.group_by`):
    iterate it for values, or use :meth:`items` (the new key first) and :meth:`events`."""

    def __init__(self, stream: Stream, key: Callable[[Any], Any]) -> None:
        self._stream = stream
        self._key = key

    def __iter__(self) -> Iterator[Any]:
        return self._stream._regrouped(decoded_values(self._stream.repartition), self._key)

    def items(self) -> Iterator[tuple[Any, Any]]:
        """The records as ``(new key, value)`` pairs."""
        return self._stream._regrouped(decoded_items(self._stream.repartition), self._key)

    def events(self) -> Iterator[Event]:
        """The records as :class:`runner.Event` tuples, with the new key."""
        return self._stream._regrouped(decoded_events(self._stream.repartition), self._key)


def decoded_values(topic: Topic) -> Callable[[Any], Any]:
    """A record's value, decoded as ``topic`` encodes it."""
    loads = topic.value_codec.loads
    return lambda record: loads(record.value)


def decoded_items(topic: Topic) -> Callable[[Any], tuple[Any, Any]]:
    """A record's ``(key, value)``, decoded as ``topic`` encodes them."""
    key_loads, value_loads = topic.key_codec.loads, topic.value_codec.loads
    return lambda record: (key_loads(record.key), value_loads(record.value))


def decoded_events(topic: Topic) -> Callable[[Any], Event]:
    """A record as an :class:`runner.Event`, decoded as ``topic`` encodes it."""
    key_loads, value_loads = topic.key_codec.loads, topic.value_codec.loads
    return lambda record: Event(
        key_loads(record.key), value_loads(record.value), list(record.headers or ()),
        record.topic, record.partition, record.offset, record.timestamp)
