"""The producer's acknowledgement barriers, over a stand-in for KafkaProducer."""

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

from runner.config import Settings
from runner.kafka import producer as producer_module
from runner.kafka.producer import Producer, SendFailed


class Metadata:
    def __init__(self):
        self._partitions = {}       # no topic known: every send goes through send()


class FakeKafkaProducer:
    def __init__(self, **config):
        self._metadata = Metadata()
        self.futures: list[Future] = []

    def send(self, topic, key=None, value=None, headers=None, partition=None, timestamp_ms=None):
        self.futures.append(Future())
        return self.futures[-1]


@pytest.fixture
def producer(monkeypatch):
    monkeypatch.setattr(producer_module, 'KafkaProducer', FakeKafkaProducer)
    return Producer(Settings(broker='h:1', broker_timeout=1.0), 'test')


def test_a_barrier_passes_once_every_earlier_send_is_acknowledged(producer):
    producer.send('t', b'k', b'1')
    producer.send('t', b'k', b'2')
    first = producer.mark()
    producer.send('t', b'k', b'3')                      # after the mark: not waited for
    second = producer.mark()
    sent = producer._producer.futures
    assert not producer.acknowledged(first)
    sent[1].success(None)
    assert not producer.acknowledged(first)
    sent[0].success(None)
    assert producer.acknowledged(first) and not producer.acknowledged(second)
    sent[2].success(None)
    assert producer.acknowledged(second)


def test_a_barrier_with_no_sends_passes_at_once(producer):
    assert producer.acknowledged(producer.mark())
    assert producer.wait(producer.mark(), 0.01)


def test_a_failed_send_fails_every_later_barrier(producer):
    producer.send('t', b'k', b'1')
    producer._producer.futures[0].failure(KafkaTimeoutError('broker gone'))
    with pytest.raises(SendFailed, match='a record could not be sent: .*broker gone'):
        producer.acknowledged(producer.mark())
    producer.send('t', b'k', b'2')
    producer._producer.futures[1].success(None)
    with pytest.raises(SendFailed):
        producer.acknowledged(producer.mark())


def test_waiting_is_bounded(producer):
    producer.send('t', b'k', b'1')
    assert not producer.wait(producer.mark(), 0.05)
