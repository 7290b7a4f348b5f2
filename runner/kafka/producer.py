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
"""

import collections
import logging
import threading
import time
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from ..errors import RunnerError

log = logging.getLogger(__name__)


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
        self.producer._settle(self, None)

    def fail(self, exc: BaseException) -> None:
        self.producer._settle(self, exc)


class Producer:
    """Asynchronous, thread-safe sends with acknowledgement barriers (see the module)."""

    def __init__(self, bootstrap_servers: list[str], client_id: str,
                 bootstrap_timeout: float, **config: Any) -> None:
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            acks='all',
            linger_ms=5,
            allow_auto_create_topics=False,
            bootstrap_timeout_ms=int(bootstrap_timeout * 1000),
            **config,
        )
        self._lock = threading.Condition()
        self._open = Epoch(self, 0)
        self._epochs: collections.deque[Epoch] = collections.deque([self._open])
        self._error: BaseException | None = None

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: list | None = None, partition: int | None = None) -> Any:
        """Queue one record; returns kafka-python's future for its metadata."""
        with self._lock:
            epoch = self._open
            epoch.pending += 1
        try:
            future = self._producer.send(topic, key=key, value=value, headers=headers,
                                         partition=partition)
        except BaseException:
            self._settle(epoch, None)
            raise
        future.add_callback(epoch.ack)
        future.add_errback(epoch.fail)
        return future

    def partition_count(self, topic: str) -> int:
        """How many partitions ``topic`` has (waits for its metadata the first time)."""
        return len(self._producer.partitions_for(topic))

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

    def wait(self, epoch: Epoch, timeout: float) -> None:
        """Block until :meth:`acknowledged` is true; SendFailed after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._acknowledged(epoch):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SendFailed(f'records sent were not acknowledged within {timeout:g}s')
                self._lock.wait(left)

    def _acknowledged(self, epoch: Epoch) -> bool:
        if self._error is not None:
            raise SendFailed(f'a record could not be sent: {self._error}')
        for earlier in self._epochs:
            if earlier.number > epoch.number:
                return True
            if earlier.pending:
                return False
        return True

    def _settle(self, epoch: Epoch, error: BaseException | None) -> None:
        with self._lock:
            epoch.pending -= 1
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
