"""The raw kafka-python consume loop the benchmarks compare the runner with.

Run as a process of its own by ``wordcount.py`` and ``restore.py`` (so its peak RSS
compares with a worker slot's), with kafka-python's default consumer settings:

* ``--group G --count N``: subscribe as group ``G`` (no auto commit, earliest) and
  count records until ``N``; timed from the partition assignment.
* no ``--group``: ``assign()`` every partition, read from the beginning to the end
  offsets seen at start, doing nothing with the records; timed from the assignment.

Prints one JSON line: records, seconds, rate, peak_rss_mb.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition

POLL_MS = 100


class _Clock(ConsumerRebalanceListener):
    """Notes when the group first gave this consumer its partitions."""

    def __init__(self) -> None:
        self.assigned_at: float | None = None

    def on_partitions_revoked(self, revoked: object) -> None:
        pass

    def on_partitions_assigned(self, assigned: object) -> None:
        if self.assigned_at is None:
            self.assigned_at = time.monotonic()


def count_as_group(consumer: KafkaConsumer, topic: str, count: int,
                   deadline: float) -> tuple[int, float, bool]:
    """Records counted (until ``count``), seconds since the assignment, whether all came."""
    clock = _Clock()
    consumer.subscribe([topic], listener=clock)
    seen = 0
    while seen < count and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=POLL_MS).values():
            seen += len(records)
    return seen, time.monotonic() - (clock.assigned_at or time.monotonic()), seen >= count


def read_to_end(consumer: KafkaConsumer, topic: str,
                deadline: float) -> tuple[int, float, bool]:
    """Records read from the beginning to the end offsets, the seconds taken, whether done."""
    numbers = consumer.partitions_for_topic(topic)
    while not numbers and time.monotonic() < deadline:
        time.sleep(0.05)
        numbers = consumer.partitions_for_topic(topic)
    partitions = [TopicPartition(topic, n) for n in sorted(numbers or ())]
    ends = consumer.end_offsets(partitions)
    began = time.monotonic()
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    seen = 0

    def behind() -> bool:
        return any(consumer.position(tp) < end for tp, end in ends.items())
    while behind() and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=POLL_MS).values():
            seen += len(records)
    return seen, time.monotonic() - began, not behind()


def own_peak_rss_mb() -> float:
    status = Path('/proc/self/status').read_text()
    return round(int(re.search(r'^VmHWM:\s+(\d+) kB', status, re.MULTILINE)[1]) / 1024, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--bootstrap', required=True)
    parser.add_argument('--topic', required=True)
    parser.add_argument('--group', help='consume as this group (needs --count)')
    parser.add_argument('--count', type=int, default=0)
    parser.add_argument('--timeout', type=float, default=600)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, group_id=args.group,
                             auto_offset_reset='earliest', enable_auto_commit=False)
    try:
        if args.group:
            seen, seconds, finished = count_as_group(consumer, args.topic, args.count, deadline)
        else:
            seen, seconds, finished = read_to_end(consumer, args.topic, deadline)
    finally:
        consumer.close(autocommit=False)
    print(json.dumps({'records': seen, 'seconds': round(seconds, 3),
                      'rate': round(seen / seconds) if seconds > 0 else 0,
                      'peak_rss_mb': own_peak_rss_mb(), 'finished': finished}))
    return 0 if finished else 1


if __name__ == '__main__':
    sys.exit(main())
