"""Kafka, replaced: the topics of a test run in memory, and a producer that writes to them.

Every record a run's app sends (and every record a test sends) is appended to
its topic partition at once, with the next offset, and handed to the inboxes
of the agents that read that topic, as the slot's consumer would fetch it.
The producer stands in for :class:`runner.kafka.producer.Producer` where the
slot's contexts and checkpoints use it: the partitions it places records in
are the slot's (the topic's partitioner, in :func:`runner.runtime.context.placed`),
a record larger than ``max_request_size``, without key and value, or with headers
that are not a list of ``(str, bytes)`` is refused as kafka-python refuses it, and
every send is acknowledged at once.
"""

import collections
import itertools
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import MessageSizeTooLargeError
from kafka.future import Future
from kafka.producer.future import RecordMetadata
from kafka.record.default_records import DefaultRecordBatchBuilder

#: ``deliver(tp, records)``: hand fetched records to the agents that read ``tp``.
Deliver = Callable[[TopicPartition, list], None]


def check_record(key: bytes | None, value: bytes | None, headers: Any) -> None:
    """Refuse a record as kafka-python's ``KafkaProducer.send`` does (3.0.12): one without
    key and value, or with headers that are not a list of ``(str, bytes)`` tuples."""
    if value is None and key is None:
        raise ValueError('Need at least one: key or value')
    if not headers:
        return
    if not isinstance(headers, list):
        raise TypeError('headers must be list-type')
    if not all(isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
               and isinstance(item[1], bytes) for item in headers):
        raise TypeError('All headers items must be (str, bytes) tuples')


class Written(Future):
    """A send that has been acknowledged: ``get()`` gives its metadata at once."""

    def get(self, timeout: float | None = None) -> Any:
        return self.value


class Broker:
    """Every topic partition of a run, as the list of its records (offset = index)."""

    def __init__(self, counts: Callable[[str], int], deliver: Deliver) -> None:
        self._counts = counts
        self._deliver = deliver
        self.logs: dict[TopicPartition, list[ConsumerRecord]] = collections.defaultdict(list)
        #: Records sent by the app (not by the test), per topic, in the order they were sent.
        self.produced: dict[str, list[ConsumerRecord]] = collections.defaultdict(list)
        self._spread: dict[str, itertools.count] = {}

    def partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has in this run."""
        return self._counts(topic)

    def unkeyed(self, topic: str) -> int:
        """Where a record without a key (and no partition asked for) goes: the partitions
        in turn (kafka-python spreads them too; a test wants to know where they go)."""
        spread = self._spread.setdefault(topic, itertools.count())
        return next(spread) % self.partitions(topic)

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
               headers: list | None, timestamp_ms: int, produced: bool) -> ConsumerRecord:
        """Write one record and hand it to its readers; ``produced``: sent by the app."""
        if not 0 <= partition < self.partitions(topic):
            raise ValueError(f'topic {topic!r} has no partition {partition} (it has '
                             f'{self.partitions(topic)})')
        tp = TopicPartition(topic, partition)
        log = self.logs[tp]
        record = ConsumerRecord(
            topic, partition, -1, len(log), timestamp_ms, 0, key, value, list(headers or ()),
            None, -1 if key is None else len(key), -1 if value is None else len(value), -1)
        log.append(record)
        if produced:
            self.produced[topic].append(record)
        self._deliver(tp, [record])
        return record


class TestProducer:
    """The slot's producer, writing to a :class:`Broker` (see the module docstring)."""

    __test__ = False          # not a pytest test class

    def __init__(self, broker: Broker, max_request_size: int, transactional: bool,
                 clock: Callable[[], float]) -> None:
        self._broker = broker
        self.max_request_size = max_request_size
        #: Under exactly-once agents hold their sends until their record is done, as in a
        #: slot; the run has no transactions to commit (what is sent is visible at once).
        self.transactional = transactional
        self._clock = clock

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: list | None = None, partition: int | None = None,
             dropped: Callable[[], bool] | None = None, after: int = -1,
             timestamp_ms: int | None = None) -> Any:
        """Write one record now (see :meth:`runner.kafka.producer.Producer.send`)."""
        if dropped is not None and dropped():
            return None
        check_record(key, value, headers)
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers or [])
        if size > self.max_request_size:
            raise MessageSizeTooLargeError(
                f'The message is {size} bytes when serialized which is larger than the '
                f'maximum request size you have configured with the max_request_size '
                f'configuration ({self.max_request_size})')
        if partition is None:
            partition = self._broker.unkeyed(topic)
        if timestamp_ms is None:
            timestamp_ms = int(self._clock() * 1000)
        record = self._broker.append(topic, partition, key, value, headers, timestamp_ms,
                                     produced=True)
        return _written(record)

    def send_batch(self, topic: str, partition: int,
                   records: list[tuple[bytes, bytes | None]]) -> Any:
        """Write changelog records; the future of the last one, or None."""
        last = None
        for key, value in records:
            last = self.send(topic, key, value, partition=partition)
        return last

    def partition_count(self, topic: str) -> int:
        return self._broker.partitions(topic)

    def mark(self) -> None:
        """Every send is acknowledged as it is made: there is nothing to wait for."""

    def flush(self, timeout: float) -> None:
        """Every send is written as it is made."""


def _written(record: ConsumerRecord) -> Written:
    tp = TopicPartition(record.topic, record.partition)
    return Written().success(RecordMetadata(
        record.topic, record.partition, tp, record.offset, record.timestamp, None,
        record.serialized_key_size, record.serialized_value_size, -1))
