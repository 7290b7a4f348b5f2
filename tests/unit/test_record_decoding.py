"""The lean reading of fetched records (``runner.kafka.records``) yields exactly what
kafka-python's own yields, and refuses what it refuses.

Fetched data is made of record batches built with kafka-python's
``DefaultRecordBatchBuilder`` (the producer's), set by hand where only a broker writes
(base offsets, control batches, log append time, offsets removed by compaction), and
read by both classes the same way a fetcher does: a few records at a time, looking at
the next fetch offset after each take.  Runs are derandomized.
"""

import collections
import struct
from typing import Any

import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import codec
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import IsolationLevel
from kafka.record import MemoryRecords
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.legacy_records import LegacyRecordBatchBuilder
from kafka.structs import TopicPartition

from runner.kafka import fixes
from runner.kafka.records import LeanPartitionRecords

KAFKA_PYTHON = LeanPartitionRecords.__mro__[1]
TP = TopicPartition('t', 3)
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: The compression types kafka-python can read here (gzip always; the others if installed).
CODECS = [0, 1] + [number for number, present in
                   ((2, codec.has_snappy), (3, codec.has_lz4), (4, codec.has_zstd)) if present()]
Aborted = collections.namedtuple('Aborted', 'producer_id first_offset')
HEADER = DefaultRecordBatch.HEADER_STRUCT
CRC_AT = DefaultRecordBatch.CRC_OFFSET
ATTRIBUTES_AT = DefaultRecordBatch.ATTRIBUTES_OFFSET


def batch(records: list, *, base_offset: int = 0, compression: int = 0, producer_id: int = -1,
          transactional: bool = False, control: bool = False, append_time: int | None = None,
          extra_offsets: int = 0) -> bytes:
    """A v2 batch of ``records`` (offset delta, timestamp, key, value, headers), as a broker
    stores it: ``extra_offsets`` are offsets compaction removed after the last record."""
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=compression, is_transactional=transactional,
        producer_id=producer_id, producer_epoch=0 if producer_id >= 0 else -1,
        base_sequence=0 if producer_id >= 0 else -1, batch_size=1 << 30)
    for delta, timestamp, key, value, headers in records:
        builder.append(delta, timestamp=timestamp, key=key, value=value, headers=headers)
    fields = list(HEADER.unpack_from(builder.build()))
    data = bytearray(builder.build())
    fields[0] = base_offset
    if control:
        fields[5] |= DefaultRecordBatch.CONTROL_MASK
    if append_time is not None:
        fields[5] |= DefaultRecordBatch.TIMESTAMP_TYPE_MASK
        fields[8] = append_time
    fields[6] += extra_offsets
    HEADER.pack_into(data, 0, *fields)
    return sealed(data)


def sealed(data: bytearray) -> bytes:
    """The batch with its CRC computed again (after a change by hand)."""
    struct.pack_into('>I', data, CRC_AT, crc32c.crc32c(bytes(data[ATTRIBUTES_AT:])))
    return bytes(data)


def marker(offset: int, producer_id: int, commit: bool) -> bytes:
    """The control batch ending a transaction."""
    return batch([(0, 1_000, struct.pack('>hh', 0, int(commit)), struct.pack('>hi', 0, 0), [])],
                 base_offset=offset, producer_id=producer_id, transactional=True, control=True)


def read(cls: type, data: bytes, fetch_offset: int = 0, committed: bool = False,
         aborted: list | None = None, take: int = 7) -> list:
    """What a fetcher sees: each take's records and next fetch offset, the metrics, and the
    type of the error that ended the reading (if any)."""
    level = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
    metrics = []
    aggregator = type('Metrics', (), {'record': lambda _, *args: metrics.append(args)})()
    part = cls(fetch_offset, TP, MemoryRecords(data), check_crcs=True, isolation_level=level,
               aborted_transactions=aborted, metric_aggregator=aggregator)
    seen: list[Any] = []
    while part and len(seen) < 10_000:
        try:
            seen.append((part.take(take), part.next_fetch_offset))
        except Exception as exc:  # noqa: BLE001 - which error it is is compared
            seen.append(type(exc))
            break
    return [*seen, metrics]


def same(data: bytes, **kwargs: Any) -> list:
    expected = read(KAFKA_PYTHON, data, **kwargs)
    assert read(LeanPartitionRecords, data, **kwargs) == expected
    return expected


def records_of(seen: list) -> list:
    return [record for step in seen if isinstance(step, tuple) for record in step[0]]


# -- what records can hold ----------------------------------------------------

BYTES = st.one_of(st.none(), st.just(b''), st.binary(max_size=20), st.binary(min_size=60,
                                                                              max_size=300))
HEADERS = st.lists(st.tuples(st.text(max_size=70), st.one_of(st.none(), st.binary(max_size=70))),
                   max_size=3)
TIMESTAMPS = st.one_of(st.integers(0, 100), st.integers(0, 1 << 45))
GAPS = st.one_of(st.just(1), st.integers(1, 100), st.integers(1, 1 << 20))


@st.composite
def record_lists(draw: Any) -> list:
    deltas, records = 0, []
    for _ in range(draw(st.integers(1, 12))):
        records.append((deltas, draw(TIMESTAMPS), draw(BYTES), draw(BYTES), draw(HEADERS)))
        deltas += draw(GAPS)
    return records


@st.composite
def fetches(draw: Any) -> tuple[bytes, list, int]:
    """Batches one after the other, plain or transactional (committed, aborted, or open),
    with their markers; and the aborted transactions a broker would list."""
    data, aborted, offset = b'', [], draw(st.integers(0, 1 << 40))
    first = offset
    for producer_id in range(draw(st.integers(1, 4))):
        records = draw(record_lists())
        transaction = draw(st.sampled_from(['none', 'commit', 'abort', 'open']))
        transactional = transaction != 'none'
        extra = draw(st.sampled_from([0, 0, 3]))
        data += batch(records, base_offset=offset, compression=draw(st.sampled_from(CODECS)),
                      producer_id=producer_id if transactional or draw(st.booleans()) else -1,
                      transactional=transactional, extra_offsets=extra,
                      append_time=draw(st.one_of(st.none(), TIMESTAMPS)))
        if transaction == 'abort':
            aborted.append(Aborted(producer_id, offset))
        offset += records[-1][0] + extra + 1
        if transaction in ('commit', 'abort'):
            data += marker(offset, producer_id, commit=transaction == 'commit')
            offset += 1
    fetch_offset = draw(st.integers(first, offset))
    return data, aborted, fetch_offset


# -- the same records ---------------------------------------------------------

@FUZZ
@given(fetches(), st.booleans(), st.sampled_from([1, 5, 1000]))
def test_lean_reading_yields_what_kafka_python_yields(fetch, committed, take):
    data, aborted, fetch_offset = fetch
    same(data, fetch_offset=fetch_offset, committed=committed, aborted=aborted, take=take)


@pytest.mark.parametrize('compression', CODECS)
def test_every_field_of_a_record_is_read(compression):
    records = [(0, 1_700_000_000_000, None, None, []),
               (1, 1_700_000_000_500, b'', b'', [('h', None), ('é' * 70, b'v' * 200)]),
               (300, 1_600_000_000_000, b'k' * 200, b'{"n": 1}', [('a', b'')])]
    seen = same(batch(records, base_offset=1 << 33, compression=compression, extra_offsets=5))
    got = records_of(seen)
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in got] == [
        ((1 << 33) + delta, timestamp, key, value, headers)
        for delta, timestamp, key, value, headers in records]
    assert seen[-2][1] == (1 << 33) + 306       # past the offsets compaction removed


def test_log_append_time_is_the_batch_timestamp():
    got = records_of(same(batch([(0, 5, b'k', b'v', []), (1, 9, b'k', b'v', [])],
                                append_time=1234)))
    assert [(r.timestamp, r.timestamp_type) for r in got] == [(1234, 1), (1234, 1)]


def test_aborted_transactions_and_markers_are_left_out_under_read_committed():
    data = (batch([(0, 1, b'k', b'aborted', [])], base_offset=0, producer_id=7,
                  transactional=True)
            + marker(1, 7, commit=False)
            + batch([(0, 1, b'k', b'committed', [])], base_offset=2, producer_id=7,
                    transactional=True)
            + marker(3, 7, commit=True))
    committed = same(data, committed=True, aborted=[Aborted(7, 0)])
    assert [r.value for r in records_of(committed)] == [b'committed']
    assert committed[-2][1] == 4
    uncommitted = same(data, aborted=[Aborted(7, 0)])
    assert [r.value for r in records_of(uncommitted)] == [b'aborted', b'committed']


def test_records_below_the_fetch_offset_are_skipped():
    data = batch([(n, 1, b'k', str(n).encode(), []) for n in range(10)], compression=1)
    assert [r.offset for r in records_of(same(data, fetch_offset=6))] == [6, 7, 8, 9]


def test_old_message_formats_are_read_by_kafka_python():
    builder = LegacyRecordBatchBuilder(magic=1, compression_type=0, batch_size=1 << 20)
    for offset in range(3):
        builder.append(offset, timestamp=10 + offset, key=b'k', value=b'v%d' % offset)
    data = bytes(builder.build()) + batch([(0, 1, b'k', b'new', [])], base_offset=3)
    assert [r.value for r in records_of(same(data))] == [b'v0', b'v1', b'v2', b'new']


# -- refused ------------------------------------------------------------------

@pytest.mark.parametrize('compression', CODECS)
def test_a_batch_with_a_flipped_byte_is_refused(compression):
    data = bytearray(batch([(n, 1, b'key', b'value %d' % n, [('h', b'x')]) for n in range(20)],
                           compression=compression))
    for at in range(ATTRIBUTES_AT, len(data)):
        data[at] ^= 0x10
        assert same(bytes(data))[:-1] == [CorruptRecordError]
        data[at] ^= 0x10


@pytest.mark.parametrize('bit', [0x01, 0x10, 0x80])
def test_a_flipped_bit_before_the_crc_is_read_as_by_kafka_python(bit):
    """The offset, length, leader epoch and magic number are not covered by the CRC."""
    data = bytearray(batch([(n, 1, b'key', b'value %d' % n, [('h', b'x')]) for n in range(5)])
                     + batch([(0, 1, None, b'next', [])], base_offset=5))
    for at in range(CRC_AT):
        data[at] ^= bit
        same(bytes(data))
        data[at] ^= bit


@FUZZ
@given(st.data())
def test_a_broken_record_fails_as_in_kafka_python(data):
    """A byte changed in a record under a correct CRC (written so by a broken producer):
    the same records come first, then the same error."""
    good = bytearray(batch(data.draw(record_lists())))
    at = data.draw(st.integers(ATTRIBUTES_AT, len(good) - 1))
    good[at] = data.draw(st.integers(0, 255))
    same(sealed(good))


def test_a_batch_counting_fewer_records_than_it_holds_is_refused_after_them():
    data = bytearray(batch([(n, 1, b'k', b'v', []) for n in range(3)]))
    struct.pack_into('>i', data, HEADER.size - 4, 2)
    seen = same(sealed(data))
    assert [r.offset for r in records_of(seen)] == [0, 1]
    assert seen[-2] is CorruptRecordError


def test_the_lean_reading_is_installed_with_the_fixes_unless_left_out(monkeypatch):
    monkeypatch.setattr(Fetcher, 'PartitionRecords', KAFKA_PYTHON)
    fixes.install(lean_reading=False)
    assert Fetcher.PartitionRecords is KAFKA_PYTHON
    fixes.install()
    assert Fetcher.PartitionRecords is LeanPartitionRecords
