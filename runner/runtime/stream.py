"""The stream an agent iterates over.

A record counts as processed when the agent asks for the next one (or the
stream ends): only then is it marked in its partition queue, and only marked
records are ever committed.  Between two records the thread serves any
checkpoint waiting for it, and stops the batch if its partition was taken
away.
"""

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..app.context import Event
from ..app.topics import Topic
from .context import AgentContext
from .queues import Inbox, PartitionQueue


class Stream:
    """The records of one topic handed to one agent instance (one thread).

    Iterate it for values, or use :meth:`items` for ``(key, value)`` pairs and
    :meth:`events` for :class:`runner.Event` objects.  Records of a partition
    arrive in offset order.
    """

    def __init__(self, topic: Topic, inbox: Inbox, context: AgentContext) -> None:
        self.topic = topic
        self._inbox = inbox
        self._context = context

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
        while True:
            taken = self._inbox.take()
            if taken is None:
                return
            yield from self._batch(*taken, convert)

    def _batch(self, queue: PartitionQueue, records: Sequence,
               convert: Callable[[Any], Any]) -> Iterator[Any]:
        """Yield one leased batch.  If the agent stops midway (it raised), the partition
        stays leased and failed and its task's guard stays held, so neither another thread
        nor a checkpoint gets past the unfinished record."""
        context = self._context
        context.begin(queue)
        try:
            for record in records:
                if queue.revoked:
                    break
                context.record = record
                yield convert(record)
                queue.processed = record.offset
                context.boundary()
        except GeneratorExit:
            self._inbox.fail(queue)     # the context keeps the record for the crash report
            raise
        context.end()
        self._inbox.release(queue)
