"""The stream an agent iterates over, and the events in it.

A record counts as processed when the agent asks for the next one (or the
stream ends).  Only then is it marked in its partition queue, and only
marked records are ever committed.
"""

import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from .queues import Inbox, PartitionQueue
from .topics import Topic

#: What the current thread is processing: ``partition`` is the PartitionQueue
#: being worked on, ``record`` the raw record, and ``guards`` the table guards
#: taken during the batch (set for agent threads only).
current = threading.local()


class Event(NamedTuple):
    """One record as the agent sees it, key and value decoded."""

    key: Any
    value: Any
    headers: list
    topic: str
    partition: int
    offset: int
    timestamp: int


class Stream:
    """The records of one topic handed to one agent instance (one thread).

    Iterate it for values, or use :meth:`items` for ``(key, value)`` pairs and
    :meth:`events` for :class:`Event` objects.  Records of a partition arrive
    in offset order.
    """

    def __init__(self, topic: Topic, inbox: Inbox) -> None:
        self.topic = topic
        self._inbox = inbox

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

    def _records(self, convert: Callable[[Any], Any]) -> Iterator[Any]:
        inbox = self._inbox
        while True:
            taken = inbox.take()
            if taken is None:
                return
            queue, records = taken
            current.partition = queue
            yield from self._batch(queue, records, convert)

    def _batch(self, queue: PartitionQueue, records: Any,
               convert: Callable[[Any], Any]) -> Iterator[Any]:
        """Yield one leased batch.  If the agent stops midway the partition stays leased
        (and is marked failed) so no other thread can run past the unfinished record."""
        try:
            for record in records:
                if queue.revoked:
                    break
                current.record = record
                yield convert(record)
                queue.processed = record.offset
        except GeneratorExit:
            self._inbox.fail(queue)
            release_guards()
            raise
        current.record = None
        release_guards()
        self._inbox.release(queue)


def release_guards() -> None:
    """Give back the table guards this thread took during its batch (see runner.tables)."""
    held = getattr(current, 'guards', None)
    while held:
        held.pop().release()
