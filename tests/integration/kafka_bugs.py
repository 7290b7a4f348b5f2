"""The kafka-python bugs runner/kafka/fixes.py works around, as scenarios.

Run as ``python kafka_bugs.py SCENARIO BOOTSTRAP TOPIC [patched]``; prints one JSON
line with what the consumer got.  A process of its own, so a scenario runs on a
kafka-python that is patched or not, whatever the test process has loaded.
"""

import json
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewPartitions
from kafka.errors import KafkaError

POLLS = 40


def parked_partition(bootstrap: str, topic: str) -> dict:
    """Bug 1: a partition paused with fetched records only partly returned, while another
    partition's batch is drained, is never fetched again after resume()."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {'num_partitions': 2, 'replication_factor': 1}})
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    for partition in (0, 1):
        for _ in range(50):
            producer.send(topic, value=b'x', partition=partition)
    producer.close(30)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, max_poll_records=5,
                             enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    consumer.seek_to_beginning()
    got = {0: 0, 1: 0}
    first = None
    while first is None:
        for tp, records in consumer.poll(timeout_ms=500).items():
            got[tp.partition] += len(records)
            first = tp
    consumer.pause(first)
    for _ in range(POLLS):
        for tp, records in consumer.poll(timeout_ms=100).items():
            got[tp.partition] += len(records)
    consumer.resume(first)
    for _ in range(POLLS):
        for tp, records in consumer.poll(timeout_ms=100).items():
            got[tp.partition] += len(records)
        if got[first.partition] == 50:
            break
    consumer.close()
    return {'paused_partition_records': got[first.partition], 'other_records': got[
        1 - first.partition]}


def unfinished_join(bootstrap: str, topic: str) -> dict:
    """Bug 2: after partitions are added, a group leader polling with a short timeout
    never finishes the rebalance, so it never gets the new partitions."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {'num_partitions': 1, 'replication_factor': 1}})
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=topic,
                             enable_auto_commit=False, metadata_max_age_ms=500)
    while not consumer.assignment():
        consumer.poll(timeout_ms=100)
    admin.create_partitions({topic: NewPartitions(total_count=2)})
    admin.close()
    deadline = time.monotonic() + 15
    while len(consumer.assignment()) < 2 and time.monotonic() < deadline:
        consumer.poll(timeout_ms=5)
    assigned = sorted(tp.partition for tp in consumer.assignment())
    consumer.close()
    return {'assigned': assigned}


def fenced_member(bootstrap: str, topic: str) -> dict:
    """Bug 3: a static member whose instance id another member took over goes on
    polling records as if nothing happened."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {'num_partitions': 1, 'replication_factor': 1}})
    admin.close()

    def member() -> KafkaConsumer:
        return KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=topic,
                             group_instance_id='same', enable_auto_commit=False,
                             heartbeat_interval_ms=200, auto_offset_reset='earliest')
    old = member()
    while not old.assignment():
        old.poll(timeout_ms=100)
    new = member()
    while not new.assignment():
        new.poll(timeout_ms=100)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for _ in range(10):
        producer.send(topic, b'x')
    producer.close(30)
    got, raised, deadline = 0, None, time.monotonic() + 5
    while time.monotonic() < deadline and raised is None:
        try:
            got += sum(map(len, old.poll(timeout_ms=100).values()))
        except KafkaError as exc:
            raised = type(exc).__name__
    for consumer in (old, new):
        consumer.close()
    return {'raised': raised, 'records': got}


if __name__ == '__main__':
    scenario, bootstrap, topic, *mode = sys.argv[1:]
    if mode == ['patched']:
        from runner.kafka import fixes
        fixes.install()
    print(json.dumps({'parked': parked_partition, 'join': unfinished_join,
                      'fenced': fenced_member}[scenario](
        bootstrap, topic)))
