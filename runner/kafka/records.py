"""A leaner reading of fetched records for kafka-python's consumer.

kafka-python decodes every record of a fetched batch through several layers of
pure Python: a ``DefaultRecord`` object per record, a function call per varint,
a property per field, two deserializer calls and a header size sum, then a
``ConsumerRecord``: 4 to 6 µs per record, half of a slot's CPU.  This module
replaces only the per-record part, for record batches of message format v2
(Kafka 0.11 and later): the records are read straight from the batch's buffer,
one- and two-byte varints inline, into the same ``ConsumerRecord`` tuples with the
same values.  The rest is kafka-python's own and unchanged: the batch's CRC
(CRC-32C, by the ``crc32c`` extension), decompression by its codecs,
read_committed filtering of aborted transactions, skipping control batches and
records below the fetch offset, the next fetch offset past compacted records,
its metrics, and the errors raised for a corrupt batch.

Batches of the old message formats (v0, v1) and consumers given deserializers
(the runner gives none: its codecs decode) take kafka-python's path.

Like :mod:`.fixes`, which installs it, this relies on kafka-python's private
parts and is applied only to the versions verified there.
"""

from collections.abc import Iterator
from typing import Any

from kafka.consumer.fetcher import ConsumerRecord, Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import IsolationLevel
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.util import decode_varint
from kafka.structs import TopicPartition

_new_record = tuple.__new__
_LOG_APPEND_TIME = DefaultRecordBatch.LOG_APPEND_TIME


class LeanPartitionRecords(Fetcher.PartitionRecords):
    """kafka-python's records of one fetched partition, read the lean way."""

    def _unpack_records(self, tp: TopicPartition, records: Any, key_deserializer: Any,
                        value_deserializer: Any) -> Iterator[ConsumerRecord]:
        if key_deserializer is not None or value_deserializer is not None:
            return super()._unpack_records(tp, records, key_deserializer, value_deserializer)
        return self._unpack_batches(tp, records)

    def _unpack_batches(self, tp: TopicPartition, records: Any) -> Iterator[ConsumerRecord]:
        """kafka-python's ``_unpack_records`` batch by batch, with the records of each v2
        batch read by :meth:`_read_batch`."""
        try:
            batch = records.next_batch()
            last_batch = None
            while batch is not None:
                last_batch = batch
                if self.check_crcs and not batch.validate_crc():
                    raise CorruptRecordError(
                        f'Record batch for partition {self.topic_partition} at offset '
                        f'{batch.base_offset} failed crc check')
                if batch.magic == 2:
                    if self._skipped(batch):
                        self.next_fetch_offset = batch.next_offset
                        batch = records.next_batch()
                        continue
                    yield from self._read_batch(tp, batch)
                else:
                    yield from self._read_old_batch(tp, batch)
                batch = records.next_batch()
            # message format v2 keeps a batch's last offset even where compaction removed
            # its last record: the next fetch starts after it
            if last_batch and last_batch.magic == 2:
                self.next_fetch_offset = last_batch.next_offset
            self.drain()
        except StopIteration as exc:     # a generator must not leak StopIteration
            raise RuntimeError('StopIteration raised unpacking messageset') from exc

    def _skipped(self, batch: DefaultRecordBatch) -> bool:
        """Whether a v2 batch yields nothing: an aborted transaction's batch under
        read_committed, or a control batch (a transaction marker)."""
        self.leader_epoch = batch.leader_epoch
        if self.isolation_level == IsolationLevel.READ_COMMITTED and batch.has_producer_id():
            self._consume_aborted_transactions_up_to(batch.last_offset)
            if self._contains_abort_marker(batch):
                self.aborted_producer_ids.discard(batch.producer_id)
            elif self._is_batch_aborted(batch):
                return True
        return batch.is_control_batch

    def _read_batch(  # noqa: C901, PLR0912, PLR0915 - inlined hot path, see bench/decode.py
            self, tp: TopicPartition, batch: DefaultRecordBatch,
            decode_varint: Any = decode_varint) -> Iterator[ConsumerRecord]:
        """The records of a v2 batch, as kafka-python's ``DefaultRecordBatch._read_msg``
        reads them (and failing where it fails), without its objects.

        One loop without calls on the common path: varints of one or two bytes (most of
        them) are decoded inline, each the same few lines, since a call per varint is what
        this saves; longer ones and headers go to kafka-python's ``decode_varint``."""
        batch._maybe_uncompress()
        buffer = bytes(batch._buffer)
        pos = batch._pos
        topic, partition, epoch = tp.topic, tp.partition, self.leader_epoch
        timestamp_type = batch.timestamp_type
        base_offset = batch.base_offset
        first_timestamp = batch.first_timestamp
        append_time = batch.max_timestamp if timestamp_type == _LOG_APPEND_TIME else None
        try:
            for _ in range(batch.records_count):
                byte = buffer[pos]
                if byte < 0x80:
                    length, pos = (byte >> 1) ^ -(byte & 1), pos + 1
                elif buffer[pos + 1] < 0x80:
                    byte = (byte & 0x7f) | (buffer[pos + 1] << 7)
                    length, pos = (byte >> 1) ^ -(byte & 1), pos + 2
                else:
                    length, pos = decode_varint(buffer, pos)
                start = pos
                if buffer[pos] < 0x80:       # attributes: unused, read as a varint
                    pos += 1
                else:
                    pos = decode_varint(buffer, pos)[1]
                byte = buffer[pos]
                if byte < 0x80:
                    delta, pos = (byte >> 1) ^ -(byte & 1), pos + 1
                elif buffer[pos + 1] < 0x80:
                    byte = (byte & 0x7f) | (buffer[pos + 1] << 7)
                    delta, pos = (byte >> 1) ^ -(byte & 1), pos + 2
                else:
                    delta, pos = decode_varint(buffer, pos)
                timestamp = first_timestamp + delta if append_time is None else append_time
                byte = buffer[pos]
                if byte < 0x80:
                    delta, pos = (byte >> 1) ^ -(byte & 1), pos + 1
                elif buffer[pos + 1] < 0x80:
                    byte = (byte & 0x7f) | (buffer[pos + 1] << 7)
                    delta, pos = (byte >> 1) ^ -(byte & 1), pos + 2
                else:
                    delta, pos = decode_varint(buffer, pos)
                offset = base_offset + delta
                byte = buffer[pos]
                if byte < 0x80:
                    size, pos = (byte >> 1) ^ -(byte & 1), pos + 1
                elif buffer[pos + 1] < 0x80:
                    byte = (byte & 0x7f) | (buffer[pos + 1] << 7)
                    size, pos = (byte >> 1) ^ -(byte & 1), pos + 2
                else:
                    size, pos = decode_varint(buffer, pos)
                if size >= 0:
                    key, key_size = buffer[pos:pos + size], size
                    pos += size
                else:
                    key, key_size = None, -1
                byte = buffer[pos]
                if byte < 0x80:
                    size, pos = (byte >> 1) ^ -(byte & 1), pos + 1
                elif buffer[pos + 1] < 0x80:
                    byte = (byte & 0x7f) | (buffer[pos + 1] << 7)
                    size, pos = (byte >> 1) ^ -(byte & 1), pos + 2
                else:
                    size, pos = decode_varint(buffer, pos)
                if size >= 0:
                    value, value_size = buffer[pos:pos + size], size
                    pos += size
                else:
                    value, value_size = None, -1
                if buffer[pos] == 0:
                    headers, header_size, pos = [], -1, pos + 1
                else:
                    headers, header_size, pos = _read_headers(buffer, pos)
                if pos - start != length:
                    raise CorruptRecordError(
                        f'Invalid record size: expected to read {length} bytes in record '
                        f'payload, but instead read {pos - start}')
                self.records_read += 1
                self.bytes_read += length
                self.next_fetch_offset = offset + 1
                yield _new_record(ConsumerRecord, (
                    topic, partition, epoch, offset, timestamp, timestamp_type, key, value,
                    headers, None, key_size, value_size, header_size))
        except (ValueError, IndexError) as err:
            raise CorruptRecordError(f'Found invalid record structure: {err!r}') from None
        if pos != len(buffer):
            raise CorruptRecordError(f'{len(buffer) - pos} unconsumed bytes after all records '
                                     'consumed')

    def _read_old_batch(self, tp: TopicPartition, batch: Any) -> Iterator[ConsumerRecord]:
        """The records of a batch of message format v0 or v1 (or of an unknown magic
        number), as kafka-python reads them."""
        for record in batch:
            if self.check_crcs and not record.validate_crc():
                raise CorruptRecordError(f'Record for partition {self.topic_partition} at '
                                         f'offset {record.offset} failed crc check')
            key, value, headers = record.key, record.value, record.headers
            self.records_read += 1
            self.bytes_read += record.size_in_bytes
            self.next_fetch_offset = record.offset + 1
            yield ConsumerRecord(
                tp.topic, tp.partition, self.leader_epoch, record.offset, record.timestamp,
                record.timestamp_type, key, value, headers, record.checksum,
                -1 if key is None else len(key), -1 if value is None else len(value),
                sum(len(name.encode('utf-8')) + (0 if data is None else len(data))
                    for name, data in headers) if headers else -1)


def _read_headers(buffer: bytes, pos: int) -> tuple[list, int, int]:
    """A record's headers from ``pos``: the list, their size as kafka-python counts it, and
    the position after them."""
    count, pos = decode_varint(buffer, pos)
    if count < 0:
        raise CorruptRecordError(f'Found invalid number of record headers {count}')
    headers = []
    size = 0
    for _ in range(count):
        length, pos = decode_varint(buffer, pos)
        if length < 0:
            raise CorruptRecordError(f'Invalid negative header key size {length}')
        name = buffer[pos:pos + length].decode('utf-8')
        size += len(name.encode('utf-8'))
        pos += length
        length, pos = decode_varint(buffer, pos)
        if length >= 0:
            value = buffer[pos:pos + length]
            size += len(value)
            pos += length
        else:
            value = None
        headers.append((name, value))
    return headers, size if headers else -1, pos


def install() -> None:
    """Make kafka-python's fetchers read records with :class:`LeanPartitionRecords`."""
    Fetcher.PartitionRecords = LeanPartitionRecords
