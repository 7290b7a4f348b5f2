"""The slot producer's two paths, old and new side by side: CPU per record.

    python bench/produce.py [--changelog N] [--sends M] [--repeat R] [--seed S]

In one process, against one broker, alternating old and new R times each (medians,
min and max):

* changelog: a checkpoint's ``send_batch`` of N (10,000) changed keys of one partition
  (JSON values, a tombstone in 20); old = the records appended one by one to
  kafka-python's accumulator with a future and two callbacks each (the previous
  ``send_batch``, still the path for message formats before v2), new = the batches
  built in bulk (``runner/kafka/batches.py``);
* agent sends: M (100,000) keyed JSON records through ``Producer.send`` (10,000
  distinct keys, 4 partitions); old = the previous ``Producer.send`` (kafka-python's
  ``send``, its murmur2 per record), new = the current one, given the partition as the
  slot's ``placed()`` gives it (``murmur2_partition``, its hash cached).

For each, the CPU of the sending thread per record (``time.thread_time``: the call
itself) and of the whole process per record from the first send until the broker
acknowledged every record (``time.process_time``: kafka-python's sender thread too,
which closes batches, computes their CRC and sends them).  The records each path
wrote are read back and compared.

Uses ``$KAFKA_BOOTSTRAP_SERVERS`` if set, else starts a broker of its own.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from typing import Any

from common import (
    create_topic,
    delete_run_topics,
    emit_json,
    kafka_bootstrap,
    median,
    progress,
    run_id,
    run_main,
    say,
)
from harness import consume
from kafka import KafkaAdminClient, TopicPartition

from runner.app.partitioners import murmur2_partition
from runner.config import Settings
from runner.kafka.producer import Producer


def old_send(producer: Producer, topic: str, key: bytes | None, value: bytes | None) -> Any:
    """``Producer.send`` before this change, at-least-once (no transaction)."""
    with producer._lock:
        producer._note_written()
        epoch = producer._open
        epoch.pending += 1
    future = producer._producer.send(topic, key=key, value=value, headers=None, partition=None)
    future.add_callback(epoch.ack)
    future.add_errback(epoch.fail)
    return future


def changelog_round(producer: Producer, topic: str, records: list, old: bool) -> dict:
    cpu, thread = time.process_time(), time.thread_time()
    if old:
        producer._append_each(TopicPartition(topic, 0), records)
    else:
        producer.send_batch(topic, 0, records)
    thread = time.thread_time() - thread
    if not producer.wait(producer.mark(), 60):
        raise RuntimeError('the changelog records were not acknowledged in 60 s')
    return {'thread_us': thread / len(records) * 1e6,
            'process_us': (time.process_time() - cpu) / len(records) * 1e6}


def sends_round(producer: Producer, topic: str, records: list, old: bool) -> dict:
    send: Callable = (lambda k, v: old_send(producer, topic, k, v)) if old else \
        (lambda k, v: producer.send(topic, k, v, partition=murmur2_partition(
            k, producer.partition_count(topic))))
    cpu, thread = time.process_time(), time.thread_time()
    for key, value in records:
        send(key, value)
    thread = time.thread_time() - thread
    if not producer.wait(producer.mark(), 120):
        raise RuntimeError('the agent records were not acknowledged in 120 s')
    return {'thread_us': thread / len(records) * 1e6,
            'process_us': (time.process_time() - cpu) / len(records) * 1e6}


def summary(rounds: list[dict], what: str) -> dict:
    values = [round_[what] for round_ in rounds]
    return {'median': median(values), 'min': round(min(values), 3),
            'max': round(max(values), 3)}


def read_back(bootstrap: str, topic: str, count: int) -> list:
    return [(record.partition, record.key, record.value)
            for record in consume(bootstrap, topic, count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--changelog', type=int, default=10_000)
    parser.add_argument('--sends', type=int, default=100_000)
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--seed', type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    changelog = [(f'key-{n}'.encode(),
                  None if n % 20 == 0 else json.dumps({'count': rng.randrange(10**6)}).encode())
                 for n in range(args.changelog)]
    keys = [f'user-{n}'.encode() for n in range(10_000)]
    sends = [(rng.choice(keys), json.dumps({'n': n, 'word': 'x' * rng.randrange(20)}).encode())
             for n in range(args.sends)]
    tag = f'bench-produce-{run_id()}'
    results: dict[str, Any] = {'changelog_records': args.changelog, 'sends': args.sends,
                               'repeat': args.repeat}
    with kafka_bootstrap() as bootstrap:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            measured = measure(bootstrap, admin, tag, changelog, sends, args.repeat)
        finally:
            delete_run_topics(admin, tag)
            admin.close()
    for part, rounds in measured.items():
        results[part] = {path: {what: summary(rounds[path], what)
                                for what in ('thread_us', 'process_us')}
                         for path in ('old', 'new')}
        for what in ('thread_us', 'process_us'):
            old, new = (results[part][path][what]['median'] for path in ('old', 'new'))
            say(f'{part:10} {what:10} old {old:7.2f} µs/record   new {new:7.2f} µs/record   '
                f'({old / new:.2f}x)')
    emit_json('produce', results)


def measure(bootstrap: str, admin: KafkaAdminClient, tag: str, changelog: list,
            sends: list, repeat: int) -> dict:
    producer = Producer(Settings(broker=bootstrap), 'bench-produce')
    measured: dict[str, dict[str, list]] = {'changelog': {'old': [], 'new': []},
                                            'agent_sends': {'old': [], 'new': []}}
    try:
        for number in range(repeat):
            for old in (number % 2 == 0, number % 2 == 1):
                path = 'old' if old else 'new'
                topic = f'{tag}-changelog-{path}-{number}'
                create_topic(admin, topic, 1)
                producer.partition_count(topic)
                measured['changelog'][path].append(
                    changelog_round(producer, topic, changelog, old))
                topic = f'{tag}-agent_sends-{path}-{number}'
                create_topic(admin, topic, 4)
                producer.partition_count(topic)
                measured['agent_sends'][path].append(sends_round(producer, topic, sends, old))
                progress(f'round {number + 1}/{repeat} {path}: '
                         f'{measured["changelog"][path][-1]} {measured["agent_sends"][path][-1]}')
        check_same_records(bootstrap, tag, len(changelog), len(sends))
    finally:
        producer.close(10)
    return measured


def check_same_records(bootstrap: str, tag: str, changelog: int, sends: int) -> None:
    """Both paths wrote the same records to the same partitions, in the same order."""
    for part, count in (('changelog', changelog), ('agent_sends', sends)):
        old, new = (read_back(bootstrap, f'{tag}-{part}-{path}-{number}', count)
                    for path, number in (('old', 0), ('new', 0)))
        if sorted(old, key=lambda record: record[0]) != sorted(new, key=lambda r: r[0]):
            raise RuntimeError(f'{part}: the old and the new path wrote different records')
    progress('both paths wrote the same records')


if __name__ == '__main__':
    raise SystemExit(run_main(main))
