"""Reading an agent's dead-letter topic, and sending its records back where they came from.

Replays are remembered by consumer group ``{dead-letter topic}-replay``: a
replay sends the dead letters written since the previous one, so running it
twice sends nothing twice.  Letters that cannot be processed (the caller
says which and why) are passed over, and count as replayed.
"""

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from ..errors import BrokerUnavailable
from .admin import connected
from .producer import Producer

#: Headers runner adds to a dead letter (dropped when it is sent back).
OWN_HEADER = 'runner-'


class DeadLetter(NamedTuple):
    """One record of a dead-letter topic: where it lies, why it is there, and its record."""

    partition: int
    offset: int
    replayed: bool
    key: bytes | None
    value: bytes | None
    headers: list
    why: dict[str, str]

    def origin(self) -> str:
        """Where the original record was: ``topic[partition]@offset``."""
        why = self.why
        return f'{why.get("topic", "?")}[{why.get("partition", "?")}]@{why.get("offset", "?")}'

    def describe(self) -> str:
        """One line: the original record's place, why it failed, and its key."""
        key = self.key.decode(errors='replace') if self.key is not None else None
        replayed = ' (replayed)' if self.replayed else ''
        return (f'{self.origin()} {self.why.get("reason", "?")}: {self.why.get("error", "")} '
                f'key={key!r}{replayed}')


class DeadLetters:
    """The dead-letter topic of one agent, read from its start to its end as of now."""

    def __init__(self, connection: dict[str, Any], topic: str, client_id: str,
                 timeout: float) -> None:
        """``connection``: the servers and security settings of every client (see
        :meth:`runner.config.Settings.kafka_client`)."""
        self.topic = topic
        self._timeout = timeout
        self._consumer = connected(lambda: KafkaConsumer(
            **connection, client_id=client_id, group_id=f'{topic}-replay',
            enable_auto_commit=False, auto_offset_reset='earliest',
            isolation_level='read_committed', bootstrap_timeout_ms=int(timeout * 1000),
            request_timeout_ms=int(max(timeout, 5) * 1000)), connection, timeout)
        try:
            self._find_letters()
        except KafkaError as exc:
            self._consumer.close(autocommit=False)
            raise BrokerUnavailable(f'cannot read the dead letters of {topic} within '
                                    f'{timeout:g}s ({exc})') from None

    def _find_letters(self) -> None:
        """The partitions of the topic (none if it does not exist yet: no record has
        failed), their ends as of now, and how far the last replay got in each."""
        numbers = self._consumer.partitions_for_topic(self.topic)
        self._partitions = [TopicPartition(self.topic, n) for n in sorted(numbers)]
        self._consumer.assign(self._partitions)
        self.ends = self._consumer.end_offsets(self._partitions, self._timeout_ms())
        self.replayed = {tp: self._committed(tp) for tp in self._partitions}

    def read(self, only_new: bool) -> Iterator[DeadLetter]:
        """Every dead letter in partition order; with ``only_new``, those not yet replayed."""
        for tp in self._partitions:
            start = self.replayed[tp] if only_new else 0
            if start >= self.ends[tp]:
                continue
            self._consumer.seek(tp, start)
            yield from self._read_partition(tp)

    def _read_partition(self, tp: TopicPartition) -> Iterator[DeadLetter]:
        while self._consumer.position(tp) < self.ends[tp]:
            batch = self._consumer.poll(timeout_ms=int(self._timeout * 1000)).get(tp, [])
            if not batch and self._consumer.position(tp) < self.ends[tp]:
                raise BrokerUnavailable(f'{tp.topic}[{tp.partition}] could not be read within '
                                        f'{self._timeout:g}s')
            for record in batch:
                if record.offset < self.ends[tp]:
                    yield _dead_letter(record, record.offset < self.replayed[tp])

    def replay(self, producer: Producer,
               unprocessable: Callable[[DeadLetter], str | None]) -> tuple[int, list[str]]:
        """Send every dead letter not yet replayed back to its topic, but those for which
        ``unprocessable`` says why they cannot be processed; returns how many were sent,
        and a line for each passed over."""
        sent, passed = 0, []
        for letter in self.read(only_new=True):
            original = letter.why.get('topic')
            why = unprocessable(letter)
            if why:
                passed.append(f'{letter.origin()} {letter.why.get("reason", "?")}: {why}')
            elif original:
                kept = [(k, v) for k, v in letter.headers if not k.startswith(OWN_HEADER)]
                producer.send(original, letter.key, letter.value, kept or None)
                sent += 1
        if not producer.wait(producer.mark(), self._timeout):
            raise BrokerUnavailable(f'the records sent back were not acknowledged within '
                                    f'{self._timeout:g}s; nothing was marked replayed')
        self._consumer.commit({tp: OffsetAndMetadata(self.ends[tp], '', -1)
                               for tp in self._partitions})
        return sent, passed

    def close(self) -> None:
        self._consumer.close(autocommit=False)

    def _committed(self, tp: TopicPartition) -> int:
        offset = self._consumer.committed(tp, timeout_ms=self._timeout_ms())
        return 0 if offset is None else offset

    def _timeout_ms(self) -> int:
        return int(self._timeout * 1000)


def _dead_letter(record: Any, replayed: bool) -> DeadLetter:
    headers = list(record.headers or ())
    why = {k[len(OWN_HEADER):]: (v or b'').decode(errors='replace') for k, v in headers
           if k.startswith(OWN_HEADER)}
    return DeadLetter(record.partition, record.offset, replayed, record.key, record.value,
                      headers, why)
