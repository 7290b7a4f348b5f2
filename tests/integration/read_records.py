"""Read a topic to its end, as kafka-python reads it or with runner's patches installed.

Run as ``python read_records.py BOOTSTRAP TOPIC ISOLATION [patched]``; prints one JSON
line: every record read (all of ``ConsumerRecord``'s fields) and the position reached
in each partition.  A process of its own, so kafka-python is patched or not whatever
the test process has loaded.
"""

import json
import sys
import time

from kafka import KafkaConsumer, TopicPartition

TIMEOUT = 60


def read_to_end(bootstrap: str, topic: str, isolation: str) -> dict:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             isolation_level=isolation, max_poll_records=7)
    partitions = [TopicPartition(topic, n) for n in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    ends = consumer.end_offsets(partitions)
    found = []
    deadline = time.monotonic() + TIMEOUT
    while any(consumer.position(tp) < ends[tp] for tp in partitions):
        if time.monotonic() > deadline:
            raise SystemExit(f'{topic} not read to its end within {TIMEOUT}s')
        for records in consumer.poll(timeout_ms=200).values():
            found.extend(records)
    positions = {tp.partition: consumer.position(tp) for tp in partitions}
    consumer.close()
    return {'records': [shown(record) for record in found], 'positions': positions}


def shown(record: tuple) -> list:
    return [field.hex() if isinstance(field, bytes) else
            [[k, None if v is None else v.hex()] for k, v in field] if isinstance(field, list) else field
            for field in record]


if __name__ == '__main__':
    bootstrap, topic, isolation, *mode = sys.argv[1:]
    if mode == ['patched']:
        from runner.kafka import fixes
        fixes.install()
    print(json.dumps(read_to_end(bootstrap, topic, isolation)))
