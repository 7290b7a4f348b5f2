"""The raw kafka-python consume loop the benchmarks compare the runner with.

Run as a process of its own by ``wordcount.py`` and ``restore.py`` (so its peak RSS
compares with a worker slot's), with kafka-python's default consumer settings:

* ``--group G --count N``: subscribe as group ``G`` (no auto commit, earliest) and
  count records until ``N``; timed from the partition assignment.
* no ``--group``: ``assign()`` every partition, read from the beginning to the end
  offsets seen at start, doing nothing with the records; timed from the assignment.
* ``--json-count``: with ``--group``, also ``json.loads`` each value and count each key
  in a dict (the least a stateful count does).
* ``--lean-reading``: with runner's leaner reading of records (``runner.kafka.records``).

It applies the runner's kafka-python workarounds (``runner.kafka.fixes``), as a slot
does: without them a plain kafka-python 3.0.12 consumer can stall (the bugs described
there).  Like the runner, it loads the topic metadata before joining.

Prints one JSON line: records, seconds, rate, cpu_s (CPU time of the timed part),
peak_rss_mb and finished.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition

POLL_MS = 100


def apply_runner_workarounds(lean_reading: bool = False) -> None:
    """Only ``runner.kafka.fixes`` (the runner package loads lazily, so RSS stays comparable):
    its bug workarounds, and its leaner reading of records only if asked (the loop
    stands for raw kafka-python)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from runner.kafka import fixes
    fixes.install(lean_reading)


class Stopwatch:
    """Wall-clock and CPU time since ``start()``."""

    def __init__(self) -> None:
        self.wall: float | None = None
        self.cpu = 0.0

    def start(self) -> None:
        self.wall, self.cpu = time.monotonic(), time.process_time()

    def read(self) -> tuple[float, float]:
        if self.wall is None:
            return 0.0, 0.0
        return time.monotonic() - self.wall, time.process_time() - self.cpu


class _StartOnAssignment(ConsumerRebalanceListener):
    def __init__(self, watch: Stopwatch) -> None:
        self.watch = watch

    def on_partitions_revoked(self, revoked: object) -> None:
        pass

    def on_partitions_assigned(self, assigned: object) -> None:
        if self.watch.wall is None:
            self.watch.start()


def count_as_group(consumer: KafkaConsumer, topic: str, count: int, deadline: float,
                   json_count: bool = False) -> dict[str, Any]:
    """Count records (until ``count``) as a group member, timed from the assignment; with
    ``json_count``, decode each value and count each key too."""
    watch = Stopwatch()
    consumer.topics()
    consumer.subscribe([topic], listener=_StartOnAssignment(watch))
    seen = 0
    counts: dict[bytes, int] = {}
    while seen < count and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=POLL_MS).values():
            seen += len(records)
            if json_count:
                for record in records:
                    json.loads(record.value)
                    counts[record.key] = counts.get(record.key, 0) + 1
    return measured(seen, watch, seen >= count)


def read_to_end(consumer: KafkaConsumer, topic: str, deadline: float) -> dict[str, Any]:
    """Read every partition from the beginning to the end offsets seen at start."""
    numbers = consumer.partitions_for_topic(topic)
    while not numbers and time.monotonic() < deadline:
        time.sleep(0.05)
        numbers = consumer.partitions_for_topic(topic)
    partitions = [TopicPartition(topic, n) for n in sorted(numbers or ())]
    ends = consumer.end_offsets(partitions)
    watch = Stopwatch()
    watch.start()
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    seen = 0

    def behind() -> bool:
        return any(consumer.position(tp) < end for tp, end in ends.items())
    while behind() and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=POLL_MS).values():
            seen += len(records)
    return measured(seen, watch, not behind())


def measured(records: int, watch: Stopwatch, finished: bool) -> dict[str, Any]:
    seconds, cpu = watch.read()
    return {'records': records, 'seconds': round(seconds, 3),
            'rate': round(records / seconds) if seconds > 0 else 0, 'cpu_s': round(cpu, 3),
            'finished': finished}


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
    parser.add_argument('--json-count', action='store_true',
                        help='with --group: decode each value, count each key')
    parser.add_argument('--lean-reading', action='store_true',
                        help="with runner's leaner reading of records")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    apply_runner_workarounds(args.lean_reading)
    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, group_id=args.group,
                             auto_offset_reset='earliest', enable_auto_commit=False)
    try:
        if args.group:
            report = count_as_group(consumer, args.topic, args.count, deadline,
                                    args.json_count)
        else:
            report = read_to_end(consumer, args.topic, deadline)
    finally:
        consumer.close(autocommit=False)
    print(json.dumps({**report, 'peak_rss_mb': own_peak_rss_mb()}))
    return 0 if report['finished'] else 1


if __name__ == '__main__':
    sys.exit(main())
