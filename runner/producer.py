"""The slot's one Kafka producer, shared by every thread (KafkaProducer is thread-safe)."""

import logging
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from .errors import RunnerError

log = logging.getLogger(__name__)


class SendFailed(RunnerError):
    """A record could not be written: offsets must not be committed past it."""


class Producer:
    """Asynchronous sends with a memory for failures.

    A failed send is remembered and raised by the next :meth:`flush`.  The
    commit path flushes before it commits offsets, so an input record is never
    committed while output it produced is lost.
    """

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
        self._error: BaseException | None = None

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: list | None = None, partition: int | None = None):
        """Queue one record; returns kafka-python's future for its metadata."""
        future = self._producer.send(topic, key=key, value=value, headers=headers,
                                     partition=partition)
        future.add_errback(self._remember_failure, topic)
        return future

    def _remember_failure(self, topic: str, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        log.error('could not send a record to %s: %s', topic, exc)

    def flush(self, timeout: float) -> None:
        """Wait until every queued record is acknowledged; raise if any was lost."""
        try:
            self._producer.flush(timeout)
        except KafkaError as exc:
            raise SendFailed(f'producer flush did not finish in {timeout:.0f}s: {exc}') from exc
        if self._error is not None:
            raise SendFailed(f'a record could not be sent: {self._error}')

    def close(self, timeout: float) -> None:
        """Close within ``timeout``; a close that cannot finish is logged, not raised."""
        try:
            self._producer.close(timeout)
        except KafkaError as exc:  # close flushes first, and that flush can time out
            log.warning('producer did not close cleanly: %s', exc)
