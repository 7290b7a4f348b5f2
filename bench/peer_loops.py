"""The peers ``peers.py`` measures runner against, one system and one workload a process.

    python bench/peer_loops.py SYSTEM WORKLOAD --bootstrap B --topic T --group G
                               [--sink S] [--state-dir D] [--window-ms W]

SYSTEM is one of ``kafka-python`` and ``kafka-python+count`` (run with this checkout's
Python, which has kafka-python), ``confluent-kafka``, ``confluent-kafka+count``, ``quix``
and ``faust`` (run with the Python of the peers' virtual environment).  WORKLOAD is
``count-json`` (a count per key of JSON values), ``count-str`` (str values), ``forward``
(decode, filter, one JSON output per input to ``--sink``) or ``window`` (a count per key
and tumbling window of ``--window-ms`` over the records' timestamps).  The plain raw
loops do no work per record but the probe for the counts and windows (the ``+count``
variants decode and count in a dict: the floor of a stateful count); for ``forward`` all
decode, filter and send.

Every system calls ``peer_probe.tick()`` once per record processed (the same call as the
runner apps of ``peers.py``), which writes the moments of the first and the last record;
the process runs until it is stopped (``TERM``).  Each reads its topic from the beginning
as a consumer group of its own, with the client's defaults otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peer_probe import EXPECTED, tick

POLL_S = 0.1


def keep(value: dict[str, Any]) -> bool:
    """The forward workload's filter (it keeps every record of the data sets)."""
    return value['amount'] >= 0


# -- kafka-python ------------------------------------------------------------------------


def kafka_python(args: argparse.Namespace, floor: bool) -> None:
    """A plain ``KafkaConsumer`` poll loop, with the runner's kafka-python workarounds (as
    ``baseline_consumer.py``: without them kafka-python 3.0.12 can stall)."""
    from baseline_consumer import apply_runner_workarounds
    apply_runner_workarounds()
    from kafka import KafkaConsumer, KafkaProducer
    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, group_id=args.group,
                             auto_offset_reset='earliest', enable_auto_commit=False)
    consumer.topics()
    consumer.subscribe([args.topic])
    if args.workload == 'forward':
        producer = KafkaProducer(bootstrap_servers=args.bootstrap)
        handle = forwarder(lambda key, data: producer.send(args.sink, key=key, value=data),
                           producer.flush)
    else:
        handle = raw_handler(args, floor)
    while True:
        for records in consumer.poll(timeout_ms=int(POLL_S * 1000)).values():
            for record in records:
                handle(record.key, record.value, record.timestamp)


def raw_handler(args: argparse.Namespace, floor: bool) -> Callable[[bytes, bytes, int], None]:
    """What a raw loop does with a record of the count and window workloads."""
    if not floor:
        return lambda _key, _data, _timestamp: tick()
    counts: Counter = Counter()
    if args.workload == 'count-json':
        def handle(_key: bytes, data: bytes, _timestamp: int) -> None:
            counts[json.loads(data)['user']] += 1
            tick()
    elif args.workload == 'count-str':
        def handle(_key: bytes, data: bytes, _timestamp: int) -> None:
            counts[data.decode()] += 1
            tick()
    else:
        width = args.window_ms

        def handle(key: bytes, data: bytes, timestamp: int) -> None:
            json.loads(data)
            counts[key, timestamp - timestamp % width] += 1
            tick()
    return handle


def forwarder(send: Callable[[bytes, bytes], Any],
              flush: Callable[[], Any]) -> Callable[[bytes, bytes, int], None]:
    """Decode, filter, re-encode and send; flush after the probe's last record."""
    seen = 0

    def handle(key: bytes, data: bytes, _timestamp: int) -> None:
        nonlocal seen
        value = json.loads(data)
        tick()
        if keep(value):
            send(key, json.dumps(value).encode())
        seen += 1
        if seen == EXPECTED:
            flush()
    return handle


# -- confluent-kafka -----------------------------------------------------------------------


def confluent(args: argparse.Namespace, floor: bool) -> None:
    """A plain ``confluent_kafka.Consumer`` loop consuming batches of up to 500 messages."""
    from confluent_kafka import Consumer, Producer
    consumer = Consumer({'bootstrap.servers': args.bootstrap, 'group.id': args.group,
                         'auto.offset.reset': 'earliest', 'enable.auto.commit': False})
    consumer.subscribe([args.topic])
    if args.workload == 'forward':
        producer = Producer({'bootstrap.servers': args.bootstrap})

        def send(key: bytes, data: bytes) -> None:
            while True:
                try:
                    producer.produce(args.sink, data, key)
                    return
                except BufferError:         # its queue is full: serve the callbacks
                    producer.poll(0.01)
        handle = forwarder(send, producer.flush)
    else:
        producer = None
        handle = raw_handler(args, floor)
    while True:
        for message in consumer.consume(num_messages=500, timeout=POLL_S):
            if message.error() is None:
                handle(message.key(), message.value(), message.timestamp()[1])
        if producer is not None:
            producer.poll(0)


# -- Quix Streams ----------------------------------------------------------------------------


def quix(args: argparse.Namespace) -> None:
    """A Quix Streams ``Application`` with its defaults (RocksDB state with a changelog
    topic, at-least-once, a commit every 5 s)."""
    from quixstreams import Application
    app = Application(broker_address=args.bootstrap, consumer_group=args.group,
                      auto_offset_reset='earliest', state_dir=args.state_dir,
                      loglevel='WARNING')
    deserializer = 'string' if args.workload == 'count-str' else 'json'
    frame = app.dataframe(app.topic(args.topic, value_deserializer=deserializer))
    if args.workload.startswith('count'):
        def count(_value: Any, state: Any) -> None:
            state.set('count', state.get('count', 0) + 1)
            tick()
        frame = frame.update(count, stateful=True)
    elif args.workload == 'forward':
        def filtered(value: dict[str, Any]) -> bool:
            tick()
            return keep(value)
        frame = frame.filter(filtered)
        frame.to_topic(app.topic(args.sink, value_serializer='json'))
    else:
        frame = frame.tumbling_window(args.window_ms).count().current()
        frame = frame.update(lambda _window: tick())
    app.run(frame)


# -- Faust -------------------------------------------------------------------------------


def faust_app(args: argparse.Namespace) -> None:
    """A faust-streaming app: one agent, an in-memory table (``store='memory://'``: RocksDB
    needs ``faust-streaming[rocksdb]``, not installed) with its changelog topic, and Faust's
    web server off."""
    import faust
    app = faust.App(args.group, broker=f'kafka://{args.bootstrap}', store='memory://',
                    topic_partitions=4, consumer_auto_offset_reset='earliest',
                    datadir=args.state_dir, web_enabled=False)
    raw = args.workload == 'count-str'
    source = app.topic(args.topic, key_serializer='raw',
                       value_serializer='raw' if raw else 'json')
    if args.workload.startswith('count'):
        counts = app.Table('counts', default=int, partitions=4)

        @app.agent(source)
        async def count(stream: Any) -> None:
            async for value in stream:
                counts[value.decode() if raw else value['user']] += 1
                tick()
    elif args.workload == 'forward':
        sink = app.topic(args.sink, key_serializer='raw', value_serializer='json')

        @app.agent(source)
        async def forward(stream: Any) -> None:
            async for key, value in stream.items():
                tick()
                if keep(value):
                    await sink.send(key=key, value=value)
    else:
        windows = app.Table('windows', default=int, partitions=4).tumbling(
            args.window_ms / 1000, expires=60).relative_to_stream()

        @app.agent(source)
        async def window(stream: Any) -> None:
            async for event in stream.events():
                windows[event.key] += 1
                tick()
    asyncio.set_event_loop(asyncio.new_event_loop())
    sys.argv = [sys.argv[0], 'worker', '--loglevel', 'warn', '--without-web']
    app.main()


SYSTEMS: dict[str, Callable[[argparse.Namespace], None]] = {
    'kafka-python': lambda args: kafka_python(args, floor=False),
    'kafka-python+count': lambda args: kafka_python(args, floor=True),
    'confluent-kafka': lambda args: confluent(args, floor=False),
    'confluent-kafka+count': lambda args: confluent(args, floor=True),
    'quix': quix,
    'faust': faust_app,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('system', choices=SYSTEMS)
    parser.add_argument('workload', choices=('count-json', 'count-str', 'forward', 'window'))
    parser.add_argument('--bootstrap', required=True)
    parser.add_argument('--topic', required=True)
    parser.add_argument('--group', required=True)
    parser.add_argument('--sink')
    parser.add_argument('--state-dir', default='.')
    parser.add_argument('--window-ms', type=int, default=5000)
    args = parser.parse_args()
    if args.system not in ('quix', 'faust'):     # the frameworks stop gracefully on TERM
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    SYSTEMS[args.system](args)


if __name__ == '__main__':
    main()
