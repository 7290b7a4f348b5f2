"""Record batches built in bulk for kafka-python's accumulator (the changelog's path).

``KafkaProducer.send`` costs about 10 µs of CPU per record in pure Python: it
checks the record, builds it field by field (a call per varint) and makes a
future per record, with a callback per record for the epoch.  A checkpoint
sends thousands of records of one partition at once, all bytes, no headers,
one timestamp.  :func:`build` encodes them straight into the buffers of
kafka-python's own batches (byte for byte what its ``append`` writes) and
:func:`enqueue` hands the batches to its accumulator, as its ``append`` does;
the caller follows each *batch* (which is acknowledged or fails as a whole),
not each record.  Compression, the producer id and sequence numbers are
applied by kafka-python when its sender drains the batch, as for any other.

This reaches into kafka-python 3.0.12's private parts (pinned, see
:mod:`.fixes`, which also carries a batch split by the broker over to
per-record futures: :func:`split_into_records`).
"""

import time
from collections.abc import Sequence
from typing import Protocol

from kafka import TopicPartition
from kafka.errors import IllegalStateError
from kafka.producer.future import FutureRecordMetadata
from kafka.producer.kafka import KafkaProducer
from kafka.producer.producer_batch import ProducerBatch
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecordsBuilder
from kafka.record.util import encode_varint

Record = tuple[bytes, bytes | None]


def _varint(value: int) -> bytes:
    encoded = bytearray()
    encode_varint(value, encoded.append)
    return bytes(encoded)


#: The zigzag varints of 0 .. 8191 (one or two bytes: lengths and offset deltas in a batch).
VARINTS = tuple(_varint(number) for number in range(8192))
#: A null key or value: length -1.
NULL = _varint(-1)
#: A record whose own bytes stay under ``max_request_size`` by this much is not too large
#: (DefaultRecordBatchBuilder.estimate_size_in_bytes: batch header and record overhead).
OVERHEAD = DefaultRecordBatchBuilder.HEADER_STRUCT.size + \
    DefaultRecordBatchBuilder.MAX_RECORD_OVERHEAD
#: What that estimate adds to a key and a value without headers, beyond OVERHEAD, at most:
#: two lengths of up to 5 bytes and the count of headers.
LENGTHS = 11


def varint(value: int, table: tuple = VARINTS) -> bytes:
    """The zigzag varint of a non-negative ``value``, as kafka-python writes it."""
    return table[value] if value < 8192 else _varint(value)


class Limits:
    """How large a batch may grow, and a record may be (the producer's configuration)."""

    __slots__ = ('batch_size', 'producer', 'record')

    def __init__(self, producer: KafkaProducer) -> None:
        self.producer = producer
        self.batch_size = producer._accumulator.config['batch_size']
        self.record = producer.config['max_request_size'] - OVERHEAD

    def check(self, key: bytes | None, value: bytes | None) -> None:
        """MessageSizeTooLargeError if kafka-python's ``send`` would refuse the record."""
        self.producer._ensure_valid_record_size(
            DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, []))


def fill(batch: ProducerBatch, records: Sequence[Record], start: int, timestamp: int,
         limits: Limits) -> int:
    """Append ``records[start:]`` to an open batch until it is full (the first record
    always fits); returns the index of the first record left out.  The bytes are those
    ``DefaultRecordBatchBuilder.append`` writes for each record with this timestamp."""
    memory = batch.records
    builder = memory._builder
    if builder._first_timestamp is None:
        builder._first_timestamp = builder._max_timestamp = timestamp
    builder._max_timestamp = max(builder._max_timestamp, timestamp)
    delta = timestamp - builder._first_timestamp
    stamp = b'\x00' + (varint(delta) if delta >= 0 else _varint(delta))
    buffer = builder._buffer
    room = limits.batch_size - len(buffer)
    largest_allowed = limits.record
    first = builder._num_records == 0
    offset = memory._next_offset
    largest = batch.max_record_size
    end = len(records)
    index = start
    parts = []
    while index < end:
        key, value = records[index]
        body = b''.join((stamp, varint(offset),
                         NULL if key is None else varint(len(key)), key or b'',
                         NULL if value is None else varint(len(value)), value or b'',
                         b'\x00'))
        record = varint(len(body)) + body
        size = len(record)
        if size > room and not first:
            break
        if size > largest_allowed:
            limits.check(key, value)
        first = False
        room -= size
        parts.append(record)
        largest = max(largest, size)
        offset += 1
        index += 1
    buffer += b''.join(parts)
    builder._num_records += index - start
    builder._last_offset = offset - 1
    memory._next_offset = offset
    batch.max_record_size = largest
    return index


def build(producer: KafkaProducer, tp: TopicPartition, records: Sequence[Record],
          timestamp: int | None = None) -> list[ProducerBatch]:
    """kafka-python's batches holding ``records`` in order, not yet queued (a record too
    large raises MessageSizeTooLargeError, as ``send`` does, before any is queued)."""
    config = producer._accumulator.config
    limits = Limits(producer)
    timestamp = int(time.time() * 1000) if timestamp is None else timestamp
    now = time.monotonic()
    batches, start = [], 0
    while start < len(records):
        memory = MemoryRecordsBuilder(config['message_version'], config['compression_attrs'],
                                      config['batch_size'])
        batch = ProducerBatch(tp, memory, now=now)
        start = fill(batch, records, start, timestamp, limits)
        batches.append(batch)
    return batches


def enqueue(producer: KafkaProducer, batches: list[ProducerBatch]) -> None:
    """Queue built batches after those of their partition and wake the sender, as the
    accumulator's ``append`` does when it opens a batch."""
    accumulator = producer._accumulator
    tp = batches[0].topic_partition
    accumulator._appends_in_progress.increment()
    try:
        with accumulator._tp_lock(tp):
            if accumulator._closed:
                raise IllegalStateError('RecordAccumulator is closed')
            accumulator._batches[tp].extend(batches)
            for batch in batches:
                accumulator._incomplete.add(batch)
    finally:
        accumulator._appends_in_progress.decrement()
    producer._sender.wakeup()


def last_record_future(batch: ProducerBatch, records: Sequence[Record],
                       timestamp: int) -> FutureRecordMetadata:
    """kafka-python's future for the last record of a built batch (its offset once
    written)."""
    key, value = records[-1]
    return FutureRecordMetadata(batch.produce_future, batch.records._next_offset - 1,
                                timestamp, None, -1 if key is None else len(key),
                                -1 if value is None else len(value), -1)


class Follower(Protocol):
    """What waits for followed batches: told of each one settled, and of more to wait for."""

    def ack(self, metadata: object) -> None: ...

    def fail(self, error: BaseException) -> None: ...

    def expect(self, more: int) -> None: ...


def follow(batch: ProducerBatch, follower: Follower | None,
           last: FutureRecordMetadata | None = None) -> None:
    """Tell ``follower`` (if any) once the batch is acknowledged or has failed: kafka-python
    completes a batch's future with a function giving each record's error, if any.
    ``last`` is the future of the batch's last record, if one was made."""
    batch.runner_follow = (follower, last)
    if follower is not None:
        batch.produce_future.add_callback(_settle_batch, follower)


def _settle_batch(follower: Follower, result: tuple) -> None:
    _offset, _timestamp, record_error = result
    if record_error is None:
        follower.ack(result)
    else:
        follower.fail(record_error(0))


def split_into_records(batch: ProducerBatch) -> None:
    """A followed batch the broker found too large is about to be split: give it a future
    per record, as ``send`` would have, which kafka-python moves to the smaller batches
    (the batch's own future is never completed); its follower now waits for each."""
    follower, last = batch.runner_follow
    count = batch.records.next_offset()
    futures = [FutureRecordMetadata(batch.produce_future, index, None, None, -1, -1, -1)
               for index in range(count - (last is not None))]
    if last is not None:
        futures.append(last)
    if follower is not None:
        follower.expect(count - 1)
        for future in futures:
            future.add_callback(follower.ack)
            future.add_errback(follower.fail)
    batch._record_futures = futures
