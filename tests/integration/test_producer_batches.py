"""The slot's producer against a real broker: the changelog's batch path, plain and in a
transaction."""

from harness import consume, consume_committed
from kafka.admin import NewTopic

from runner.kafka.producer import Producer


def test_a_batch_lands_in_its_partition_in_order_and_its_future_gives_the_last_offset(
        kafka_bootstrap, admin, topic_name):
    admin.create_topics([NewTopic(topic_name, 2, 1)])
    producer = Producer({'bootstrap_servers': [kafka_bootstrap]}, 'batch', 30)
    records = [(f'k{n}'.encode(), f'{n}'.encode()) for n in range(5000)] + [(b'gone', None)]
    future = producer.send_batch(topic_name, 1, records)
    producer.wait(producer.mark(), 30)
    assert future.get(0).offset == len(records) - 1
    producer.close(10)
    found = consume(kafka_bootstrap, topic_name, len(records))
    assert {record.partition for record in found} == {1}
    assert [(record.key, record.value) for record in found] == records


def test_a_batch_in_a_transaction_is_seen_once_committed(kafka_bootstrap, admin, topic_name):
    admin.create_topics([NewTopic(topic_name, 1, 1)])
    producer = Producer({'bootstrap_servers': [kafka_bootstrap]}, 'batch', 30, f'{topic_name}-tid')
    producer.start_transactions()
    producer.send_batch(topic_name, 0, [(b'a', b'1'), (b'b', b'2')])
    producer.seal()
    assert producer.end(commit=True).wait(30000)
    producer.begin()
    producer.send_batch(topic_name, 0, [(b'c', b'3')])
    producer.seal()
    assert producer.end(commit=False).wait(30000)
    producer.close(10)
    assert [(r.key, r.value) for r in consume_committed(kafka_bootstrap, topic_name)] == [
        (b'a', b'1'), (b'b', b'2')]
