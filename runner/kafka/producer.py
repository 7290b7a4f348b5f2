"""A Kafka producer with acknowledgement barriers, shared by every thread of a slot.

A checkpoint must know that every record sent before it was written (acks=all)
before it commits offsets.  ``KafkaProducer.flush(timeout)`` cannot say so
within a bounded time (its timeout applies to each batch in turn) and blocks
the caller, which must not happen on kafka-python's IO thread.  So every send
is counted in the *epoch* it was made in; :meth:`Producer.mark` closes the
current epoch and returns it, and :meth:`Producer.acknowledged` says, without
blocking, whether every send of that epoch and the earlier ones has been
acknowledged.  A failed send is remembered, and every later question raises
SendFailed: no offset is committed past lost output.

Under exactly-once the producer is transactional: a transaction is always
open while the slot processes, and a checkpoint ends it (see
:mod:`runner.runtime.transactions`).  Transactions are numbered; a send
may ask to wait until a transaction after a given one has begun (the
records of a task already cut belong to the next).  While a transaction
ends the producer is *sealed*: every send waits for the next one, since
kafka-python refuses sends in between.  kafka-python's own transactional
calls wait without a timeout; :meth:`Producer.send_offsets` and
:meth:`Producer.end` start the same requests and return their result
without waiting, so the caller bounds the wait (or awaits it on the IO loop).

A transaction open longer than :data:`TRANSACTION_TIMEOUT_MS` (an agent
stuck inside a record while others send, a broker out of reach) is aborted
by the broker, which bumps the producer's epoch; kafka-python takes the new
epoch (KIP-360) and is ready for a new transaction.  The producer says so
(:meth:`Producer.aborted_by_broker`); sends made meanwhile are dropped, as
the checkpoint that follows aborts the transaction too and the records are
processed again.
"""

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError, TransactionAbortedError
from kafka.producer.transaction_manager import TransactionState

from ..config import Settings
from ..errors import RunnerError
from . import batches

log = logging.getLogger(__name__)

#: A transaction left open (its slot died) is aborted by the broker after this long,
#: unless the slot's next incarnation has done so sooner.
TRANSACTION_TIMEOUT_MS = 10000
#: Seconds a record may wait for a broker beyond the slot's ``broker_outage_limit``.
OUTAGE_MARGIN = 60.0


class SendFailed(RunnerError):
    """A record could not be written: offsets must not be committed past it."""


class Epoch:
    """The sends made between two marks, and how many are still unacknowledged."""

    __slots__ = ('number', 'pending', 'producer')

    def __init__(self, producer: 'Producer', number: int) -> None:
        self.producer = producer
        self.number = number
        self.pending = 0

    def ack(self, _metadata: Any) -> None:
        """A send (a record, or a whole batch) was acknowledged."""
        self.producer._settle(self, None)

    def fail(self, exc: BaseException) -> None:
        self.producer._settle(self, exc)

    def expect(self, more: int) -> None:
        """``more`` sends to wait for than counted (a batch split into records)."""
        with self.producer._lock:
            self.pending += more


class Producer:
    """Asynchronous, thread-safe sends with acknowledgement barriers (see the module)."""

    def __init__(self, settings: Settings, client_id: str,
                 transactional_id: str | None = None) -> None:
        transactional = {} if transactional_id is None else {
            'transactional_id': transactional_id,
            'transaction_timeout_ms': TRANSACTION_TIMEOUT_MS}
        # A record (or a send waiting for buffer space) outlives a broker outage that the
        # slot itself survives: it fails only after the slot has given up.
        outlast_outage_ms = int((settings.broker_outage_limit + OUTAGE_MARGIN) * 1000)
        self._config = dict(
            **settings.kafka_client(),
            client_id=client_id,
            acks='all',
            linger_ms=5,
            allow_auto_create_topics=False,
            bootstrap_timeout_ms=int(settings.broker_timeout * 1000),
            max_request_size=settings.max_request_size,
            delivery_timeout_ms=outlast_outage_ms,
            max_block_ms=outlast_outage_ms,
            **transactional,
        )
        self._producer = KafkaProducer(**self._config)
        self.transactional = transactional_id is not None
        #: Bytes of key and value under which a record is surely not too large to send.
        self._record_limit = settings.max_request_size - batches.OVERHEAD - batches.LENGTHS
        self._lock = threading.Condition()
        self._open = Epoch(self, 0)
        self._epochs: collections.deque[Epoch] = collections.deque([self._open])
        self._error: BaseException | None = None
        self._sealed = self.transactional      # until the first transaction begins
        self._sending = 0                      # sends past the seal, not yet queued
        #: The number of the open transaction.
        self.transaction = 0
        #: Records were sent in the open transaction (the first at ``written_at``, monotonic).
        self.written = False
        self.written_at = 0.0

    @property
    def max_request_size(self) -> int:
        """The largest record (in bytes) it sends; a larger one is refused."""
        return self._producer.config['max_request_size']

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: list | None = None, partition: int | None = None,
             dropped: Callable[[], bool] | None = None, after: int = -1,
             timestamp_ms: int | None = None) -> Any:
        """Queue one record; returns kafka-python's future for its metadata, or None if
        ``dropped()`` says, once the producer is open, that the record is no longer wanted.
        Under exactly-once the record goes into a transaction numbered above ``after``.
        ``timestamp_ms`` is the record's timestamp (None: now)."""
        with self._lock:
            while self._sealed or self.transaction <= after:
                self._lock.wait()
            if dropped is not None and dropped():
                return None
            self._note_written()
            if self.transactional:     # the commit of the transaction is the barrier
                self._sending += 1
                epoch = None
            else:
                epoch = self._open
                epoch.pending += 1
        if epoch is None:
            try:
                return self._queue(topic, key, value, headers, partition, timestamp_ms)
            except KafkaError:
                if self.transaction_broken():
                    return None     # the transaction is lost: its records are processed again
                raise
            finally:
                with self._lock:
                    self._sending -= 1
                    self._lock.notify_all()
        try:
            future = self._queue(topic, key, value, headers, partition, timestamp_ms)
        except BaseException:
            self._settle(epoch, None)
            raise
        future._add_cb_eb(epoch.ack, epoch.fail)
        return future

    def _queue(self, topic: str, key: bytes | None, value: bytes | None,
               headers: list | None, partition: int | None,
               timestamp_ms: int | None = None) -> Any:
        """kafka-python's ``send``, for a record placed in a known partition without headers
        (an agent's keyed output) its own steps only: the record's size checked, its
        partition added to the transaction, the record appended to the accumulator and the
        sender woken for a new or full batch, as ``send`` does in kafka-python 3.0.12
        (pinned, see :mod:`.fixes`).  Its checks of what holds here (serializers, headers,
        the partitioner, metadata) are skipped; anything else goes through ``send``."""
        producer = self._producer
        known = producer._metadata._partitions.get(topic)
        if partition is None or headers or not known or partition not in known or \
                key is None and value is None or producer._closed:
            return producer.send(topic, key=key, value=value, headers=headers,
                                 partition=partition, timestamp_ms=timestamp_ms)
        if len(key or b'') + len(value or b'') > self._record_limit:
            producer._ensure_valid_record_size(producer._estimate_size_in_bytes(key, value))
        tp = TopicPartition(topic, partition)
        if self.transactional:
            producer._transaction_manager.maybe_add_partition_to_transaction(tp)
        future, full, new, _ = producer._accumulator.append(tp, timestamp_ms, key, value, [])
        if full or new:
            producer._sender.wakeup()
        return future

    # -- transactions (exactly-once) ----------------------------------------

    def start_transactions(self) -> None:
        """Fence earlier incarnations of this transactional id and begin the first
        transaction (bounded by kafka-python's ``max_block_ms``)."""
        self._producer.init_transactions()
        self.begin()

    def replace(self) -> None:
        """Close kafka-python's producer and start another of the same transactional id,
        whose initialisation aborts the open transaction: for a transaction that cannot
        end, such as one whose request was lost with a broker outage.  Sealed and idle,
        as the transaction is ending; the caller begins the next one."""
        self._assert_ending()
        lost = self._producer
        # Its IO thread exits after the call it is in (which may be what hangs), failing
        # the records it holds; close() would first flush them, and that cannot finish.
        lost._sender.force_close()
        lost._closed = True
        self._producer = KafkaProducer(**self._config)
        self._producer.init_transactions()

    def renumber(self) -> None:
        """A checkpoint was not committed: the open transaction goes on as the next one, so
        what waits for the next transaction may join it (the next commit, whose cut comes
        after those records, carries them and what the uncommitted checkpoint had cut)."""
        with self._lock:
            self.transaction += 1
            self._lock.notify_all()

    def seal(self) -> None:
        """Make new sends wait: the open transaction is about to end."""
        with self._lock:
            self._sealed = True

    def idle(self) -> bool:
        """No send is between the seal and kafka-python's queue."""
        with self._lock:
            return self._sending == 0

    @property
    def transaction_error(self) -> BaseException | None:
        """Why the producer can no longer carry out transactional calls, if it cannot."""
        return self._producer._transaction_manager.last_error

    def transaction_broken(self) -> bool:
        """The open transaction cannot be committed: it is to be aborted, or the broker
        aborted it, or the producer was fenced."""
        return self._producer._transaction_manager.has_error() or self.aborted_by_broker()

    def transaction_age(self) -> float:
        """Seconds since the open transaction got its first record (0 while it has none);
        the broker aborts it past :data:`TRANSACTION_TIMEOUT_MS`."""
        return time.monotonic() - self.written_at if self.written else 0.0

    def _note_written(self) -> None:
        if not self.written:
            self.written, self.written_at = True, time.monotonic()

    def aborted_by_broker(self) -> bool:
        """The open transaction is gone: the broker aborted it and kafka-python took the
        producer's next epoch (or is taking it), so no transaction is open."""
        state = self._producer._transaction_manager._current_state
        return state in (TransactionState.READY, TransactionState.BUMPING_PRODUCER_EPOCH)

    def ready(self) -> bool:
        """kafka-python can begin a transaction (after the broker aborted one)."""
        return self._producer._transaction_manager._current_state == TransactionState.READY

    def send_offsets(self, offsets: dict, group_metadata: Any) -> Any:
        """Add source offsets to the open transaction; returns the request's result
        (``is_done``, ``failed``, ``exception``) without waiting for it."""
        self._assert_ending()
        result = self._producer._transaction_manager.send_offsets_to_transaction(
            offsets, group_metadata)
        self._producer._sender.wakeup()
        return result

    def end(self, commit: bool) -> Any:
        """Commit or abort the open transaction; returns the request's result unwaited."""
        self._assert_ending()
        manager = self._producer._transaction_manager
        result = manager.begin_commit() if commit else manager.begin_abort()
        self._producer._sender.wakeup()
        return result

    def _assert_ending(self) -> None:
        """A transaction is ended only sealed and idle: no send can enter it meanwhile, and
        every send made in it is in kafka-python's queue (so in the commit)."""
        with self._lock:
            assert self._sealed and self._sending == 0, \
                'a transaction is ending while the producer is not sealed and idle'

    def begin(self) -> None:
        """Begin the next transaction and let waiting sends through.  After an abort, the
        failure of an aborted send is forgotten: its transaction left no trace."""
        self._producer.begin_transaction()
        with self._lock:
            self._error = None
            self.written = False
            self._sealed = False
            self.transaction += 1
            self._lock.notify_all()

    def send_batch(self, topic: str, partition: int,
                   records: list[tuple[bytes, bytes | None]]) -> Any:
        """Queue records for one partition (changelog records: keys and values already
        bytes, no headers, sent by the checkpoint before any seal); returns the future of
        the last one, or None.

        kafka-python's ``send`` checks, looks up and builds, record by record, what holds
        for all of them here (metadata, partition, serializers, headers, the transaction's
        partitions, a future and callbacks per record); this builds its record batches in
        bulk and queues them (:mod:`.batches`), and the epoch waits for each batch, not
        each record.  A checkpoint sends thousands at once, more often under exactly-once.
        """
        if not records:
            return None
        producer = self._producer
        if producer._metadata.partitions_for_topic(topic) is None:
            producer._wait_on_metadata(topic, producer.config['max_block_ms'])
        tp = TopicPartition(topic, partition)
        if producer._accumulator.config['message_version'] < 2:
            return self._append_each(tp, records)
        timestamp = int(time.time() * 1000)
        built = batches.build(producer, tp, records, timestamp)
        last = batches.last_record_future(built[-1], records, timestamp)
        with self._lock:
            self._note_written()
            epoch = None if self.transactional else self._open
            if epoch is not None:
                epoch.pending += len(built)
        for batch in built:
            batches.follow(batch, epoch, last if batch is built[-1] else None)
        if self.transactional:
            producer._transaction_manager.maybe_add_partition_to_transaction(tp)
        try:
            batches.enqueue(producer, built)
        except BaseException:
            if epoch is not None:
                self._settle(epoch, None, len(built))
            raise
        return last

    def _append_each(self, tp: TopicPartition, records: list[tuple[bytes, bytes | None]]) -> Any:
        """send_batch's records appended one by one (message formats before v2, which
        :mod:`.batches` does not build)."""
        producer = self._producer
        with self._lock:
            self._note_written()
            epoch = None if self.transactional else self._open
            if epoch is not None:
                epoch.pending += len(records)
        if self.transactional:
            producer._transaction_manager.maybe_add_partition_to_transaction(tp)
        append, size = producer._accumulator.append, producer._estimate_size_in_bytes
        future, wake = None, False
        for number, (key, value) in enumerate(records):
            try:
                producer._ensure_valid_record_size(size(key, value))
                future, full, new, _ = append(tp, None, key, value, [])
            except BaseException:
                if epoch is not None:
                    self._settle(epoch, None, len(records) - number)
                raise
            wake = wake or full or new
            if epoch is not None:
                future.add_callback(epoch.ack)
                future.add_errback(epoch.fail)
        if wake:
            producer._sender.wakeup()
        return future

    def partition_count(self, topic: str) -> int:
        """How many partitions ``topic`` has (waits for its metadata the first time)."""
        known = self._producer._metadata._partitions.get(topic)
        return len(known) if known else len(self._producer.partitions_for(topic))

    def mark(self) -> Epoch:
        """Close the current epoch: every send made so far belongs to it or an earlier one."""
        with self._lock:
            marked = self._open
            self._open = Epoch(self, marked.number + 1)
            self._epochs.append(self._open)
            self._forget_settled()
            return marked

    def acknowledged(self, epoch: Epoch) -> bool:
        """True once every send up to ``epoch`` is acknowledged; SendFailed if any failed."""
        with self._lock:
            return self._acknowledged(epoch)

    def wait(self, epoch: Epoch, timeout: float) -> bool:
        """Block until :meth:`acknowledged` is true, at most ``timeout`` seconds; False if
        that time ran out (SendFailed if a send failed)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._acknowledged(epoch):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def _acknowledged(self, epoch: Epoch) -> bool:
        if self._error is not None:
            raise SendFailed(f'a record could not be sent: {self._error}')
        for earlier in self._epochs:
            if earlier.number > epoch.number:
                return True
            if earlier.pending:
                return False
        return True

    def _settle(self, epoch: Epoch, error: BaseException | None, count: int = 1) -> None:
        if isinstance(error, TransactionAbortedError):
            error = None        # this slot aborted the transaction: the record left no trace
        with self._lock:
            epoch.pending -= count
            if error is not None and self._error is None:
                self._error = error
            self._forget_settled()
            self._lock.notify_all()
        if error is not None:
            log.error('could not send a record: %s', error)

    def _forget_settled(self) -> None:
        while self._epochs[0] is not self._open and not self._epochs[0].pending:
            self._epochs.popleft()

    def flush(self, timeout: float) -> None:
        """Wait until every queued record is written (for ``app.flush()``)."""
        try:
            self._producer.flush(timeout)
        except KafkaError as exc:
            raise SendFailed(f'producer flush did not finish in {timeout:g}s: {exc}') from exc

    def close(self, timeout: float) -> None:
        """Close within ``timeout``; a close that cannot finish is logged, not raised."""
        try:
            self._producer.close(timeout)
        except KafkaError as exc:  # close flushes first, and that flush can time out
            log.warning('producer did not close cleanly: %s', exc)
