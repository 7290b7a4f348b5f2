"""Runner side by side with Quix Streams, Faust and the raw Kafka clients, in one run.

    python bench/peers.py [--quick] [--records N] [--rounds R] [--faust-records M]
                          [--only WORKLOAD ...] [--latency-rate RATE]
                          [--latency-seconds S] [--venv DIR] [--output FILE] [--chart FILE]
                          [--replot] [--markdown]

Installs the peers (``quixstreams``, ``faust-streaming``, ``confluent-kafka``) in a virtual
environment of their own (``--venv``, by default ``~/.cache/runner/peers-venv``), produces
two data sets once (JSON values with 10,000 keys, str values with 2,000 keys, 4
partitions), then for R rounds runs every system on every workload, alternating:

* a. ``count-json``: a stateful count per key of the JSON data set;
* b. ``count-str``: the same on the str data set;
* c. ``forward``: decode, filter, one output per input to a sink topic;
* d. ``window``: a count per key and 5-second tumbling window of the records' timestamps;
* e. runner under exactly-once against at-least-once, on a;
* f. runner ``--workers 2`` against one slot, on a;

and, once, the end-to-end latency of runner (both guarantees) and Quix Streams at a fixed
rate.  Every system is timed the same way, from its first record to its last, by
``peer_probe.tick()`` called once per record in each (for ``forward`` until the sink
holds every output).  Prints a table of ratios and writes the results file and a chart.

Uses ``$KAFKA_BOOTSTRAP_SERVERS`` if set (and deletes the topics it created), else starts
a broker of its own.  See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import venv
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from common import (
    BENCH,
    Worker,
    alive,
    cpu_seconds,
    create_topic,
    delete_run_topics,
    kafka_bootstrap,
    machine,
    peak_rss_mb,
    progress,
    run_id,
    run_main,
    say,
    scratch_dir,
    wait_for,
    write_app,
)
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

PARTITIONS = 4
JSON_KEYS = 10_000
STR_KEYS = 2_000
WINDOW_MS = 5_000
#: Event time of the JSON data set: this many records per millisecond (30 s for 300,000).
RECORDS_PER_MS = 10
PEERS = ('quixstreams', 'faust-streaming', 'confluent-kafka')
DEFAULT_VENV = Path.home() / '.cache' / 'runner' / 'peers-venv'
PEER_LOOPS = BENCH / 'peer_loops.py'
POLL_S = 0.05
#: Seconds a process gets to stop on TERM before it is killed.
STOP_GRACE_S = 20

RUNNER = 'runner'
RUNNER_EOS = 'runner exactly-once'
RUNNER_W2 = 'runner --workers 2'
RUNNER_POLLED = 'runner (polled)'

WORKLOADS = {
    'a': ('count-json', 'stateful count, JSON values, 10,000 keys'),
    'b': ('count-str', 'stateful count, str values, 2,000 keys'),
    'c': ('forward', 'stateless: decode, filter, forward to a sink'),
    'd': ('window', 'tumbling-window count (5 s windows)'),
}
SYSTEMS = {
    'a': ['kafka-python', 'kafka-python+count', 'confluent-kafka', 'confluent-kafka+count',
          'quix', 'faust', RUNNER],
    'b': ['kafka-python', 'kafka-python+count', 'confluent-kafka', 'confluent-kafka+count',
          'quix', 'faust', RUNNER],
    'c': ['kafka-python', 'confluent-kafka', 'quix', 'faust', RUNNER],
    'd': ['kafka-python+count', 'confluent-kafka+count', 'quix', 'faust', RUNNER],
}

APP_HEAD = '''\
import os
import sys

os.environ['PEERS_PROBE_DIR'] = {probe!r}
os.environ['PEERS_PROBE_COUNT'] = {count!r}
sys.path.insert(0, {bench!r})

import runner
from peer_probe import tick

app = runner.App({app!r}{settings})
source = app.topic({topic!r}, partitions={partitions}{serializer})
'''
APP_BODY = {
    'count-json': '''
counts = app.Table('counts', default=int, partitions={partitions})


@app.agent(source)
def count(stream):
    for value in stream:
        counts[value['user']] += 1
        tick()
''',
    'count-str': '''
counts = app.Table('counts', default=int, partitions={partitions})


@app.agent(source)
def count(stream):
    for word in stream:
        counts[word] += 1
        tick()
''',
    'forward': '''
sink = app.topic({sink!r}, partitions={partitions})


@app.agent(source, sink=[sink])
def forward(stream):
    for value in stream:
        tick()
        if value['amount'] >= 0:
            yield value
''',
    'window': '''
windows = app.Table('windows', default=int, partitions={partitions}).tumbling(
    {window_s}, expires=60)


@app.agent(source)
def count(stream):
    for key, _value in stream.items():
        windows[key] += 1
        tick()
''',
}


# -- the peers' virtual environment ----------------------------------------------------------


def peers_python(directory: Path) -> tuple[Path, dict[str, str]]:
    """The virtual environment's Python, created and filled on first use; and the version of
    each peer (or why it is missing)."""
    python = directory / 'bin' / 'python'
    if not python.exists():
        progress(f'creating the peers\' virtual environment in {directory} ...')
        venv.create(directory, with_pip=True)
    versions = peer_versions(python)
    for package in PEERS:
        if not versions[package][0].isdigit():
            progress(f'installing {package} in {directory} ...')
            result = subprocess.run([str(python), '-m', 'pip', 'install', '-q', package],
                                    capture_output=True, text=True, check=False)
            if result.returncode != 0:
                progress(f'could not install {package}: {result.stderr.strip()[-500:]}')
    return python, peer_versions(python)


def peer_versions(python: Path) -> dict[str, str]:
    """Each peer's installed version, or why it cannot be imported."""
    modules = {'quixstreams': 'quixstreams', 'faust-streaming': 'faust',
               'confluent-kafka': 'confluent_kafka'}
    found = {}
    for package, module in modules.items():
        script = (f'import importlib.metadata, {module}; '
                  f'print(importlib.metadata.version({package!r}))')
        result = subprocess.run([str(python), '-W', 'ignore', '-c', script],
                                capture_output=True, text=True, check=False)
        found[package] = (result.stdout.strip() if result.returncode == 0 else
                          'not importable: ' + (result.stderr.strip().splitlines() or ['?'])[-1])
    librdkafka = subprocess.run([str(python), '-W', 'ignore', '-c',
                                 'import confluent_kafka; print(confluent_kafka.libversion()[0])'],
                                capture_output=True, text=True, check=False)
    found['librdkafka'] = librdkafka.stdout.strip() or 'unknown'
    return found


# -- the data sets -------------------------------------------------------------------------


def produce_json(bootstrap: str, topic: str, count: int, seed: int) -> float:
    """``count`` records, key = a user of ``JSON_KEYS``, value = ``{"user", "amount"}``,
    timestamps ``RECORDS_PER_MS`` records a millisecond from now; returns the seconds taken."""
    rng = random.Random(seed)
    users = [f'user{n:05d}' for n in range(JSON_KEYS)]
    base = int(time.time() * 1000)

    def items() -> Iterator[tuple[bytes, bytes, int]]:
        for number in range(count):
            user = rng.choice(users)
            yield (user.encode(), json.dumps({'user': user, 'amount': rng.randrange(1000)}
                                             ).encode(), base + number // RECORDS_PER_MS)
    return produce_all(bootstrap, topic, items(), count)


def produce_str(bootstrap: str, topic: str, count: int, seed: int) -> float:
    """``count`` words, key = value = a word of ``STR_KEYS``; returns the seconds taken."""
    rng = random.Random(seed)
    words = [f'word{n:06d}'.encode() for n in range(STR_KEYS)]
    return produce_all(bootstrap, topic,
                       ((word, word, None) for word in (rng.choice(words) for _ in range(count))),
                       count)


def produce_all(bootstrap: str, topic: str, items: Iterator[tuple[bytes, bytes, int | None]],
                count: int) -> float:
    """Send keyed records with kafka-python (murmur2 places the keys, as the runner's tables
    expect), wait until all are written and check the topic holds them."""
    began = time.monotonic()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks='all', linger_ms=20,
                             batch_size=512 * 1024)
    try:
        for key, value, timestamp in items:
            producer.send(topic, key=key, value=value, timestamp_ms=timestamp)
        producer.flush(600)
    finally:
        producer.close(10)
    seconds = time.monotonic() - began
    written = topic_total(bootstrap, topic)
    if written != count:
        raise RuntimeError(f'{topic} holds {written} records, expected {count}')
    return seconds


def topic_total(bootstrap: str, topic: str) -> int:
    with Offsets(bootstrap, topic) as offsets:
        return offsets.total()


class Offsets:
    """The sum of a topic's end offsets, asked of the broker as often as needed."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap)
        numbers = wait_for(lambda: self._consumer.partitions_for_topic(topic), 30,
                           f'metadata of {topic}')
        self._partitions = [TopicPartition(topic, n) for n in numbers]

    def total(self) -> int:
        return sum(self._consumer.end_offsets(self._partitions).values())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self._consumer.close()


# -- one measured run ----------------------------------------------------------------------


@dataclass
class Suite:
    """What every run of this suite shares."""
    bootstrap: str
    admin: KafkaAdminClient
    workdir: Path
    tag: str
    python: Path
    topics: dict[str, str]
    runs: int = 0

    def fresh(self, kind: str) -> tuple[str, Path]:
        """A unique name (with the run's tag, so its topics are deleted at the end) and an
        empty directory for one run."""
        self.runs += 1
        name = f'peers-{self.tag}-{kind}-{self.runs}'
        directory = self.workdir / name
        directory.mkdir()
        return name, directory

    def sink(self, name: str, config: dict[str, str] | None = None) -> str:
        topic = f'{name}-sink'
        create_topic(self.admin, topic, PARTITIONS, config)
        return topic


@dataclass
class Timing:
    """The probe's moments of one run, and what the harness saw."""
    firsts: dict[int, dict[str, Any]] = field(default_factory=dict)
    last: dict[str, Any] | None = None
    sink_done: float | None = None
    polled_done: float | None = None


def read_probes(directory: Path, timing: Timing) -> None:
    for path in directory.glob('first-*.json'):
        moment = json.loads(path.read_text())
        timing.firsts.setdefault(moment['pid'], moment)
    if timing.last is None:
        for path in directory.glob('last-*.json'):
            timing.last = json.loads(path.read_text())


def measured(records: int, timing: Timing) -> dict[str, Any]:
    """Rate, CPU and RSS from the first record to the last (to the sink's last output)."""
    first = min(timing.firsts.values(), key=lambda moment: moment['monotonic'])
    last = timing.last
    end = max(last['monotonic'], timing.sink_done or 0.0)
    seconds = end - first['monotonic']
    cpu = last['cpu_s'] - timing.firsts[last['pid']]['cpu_s']
    return {'records': records, 'seconds': round(seconds, 3), 'rate': per(records, seconds),
            'cpu_s': round(cpu, 3), 'records_per_cpu_s': per(records, cpu),
            'peak_rss_mb': last['peak_rss_mb'], 'loadavg': os.getloadavg()[0]}


def per(count: float, seconds: float) -> int:
    return round(count / seconds) if seconds > 0 else 0


def run_peer(suite: Suite, workload: str, system: str, records: int) -> dict[str, Any]:
    """One run of a peer loop (``peer_loops.py``) in a process of its own."""
    name, directory = suite.fresh(system.split('-')[0].replace('+', ''))
    kind = WORKLOADS[workload][0]
    source = suite.topics['str' if kind == 'count-str' else 'json']
    sink = suite.sink(name) if kind == 'forward' else None
    python = sys.executable if system.startswith('kafka-python') else str(suite.python)
    args = [python, '-W', 'ignore', str(PEER_LOOPS), system, kind, '--bootstrap',
            suite.bootstrap, '--topic', source, '--group', name, '--state-dir', str(directory),
            '--window-ms', str(WINDOW_MS), *(['--sink', sink] if sink else [])]
    env = {**os.environ, 'PEERS_PROBE_DIR': str(directory), 'PEERS_PROBE_COUNT': str(records),
           'PYTHONUNBUFFERED': '1'}
    env.pop('PYTHONPATH', None)
    log_path = directory / 'process.log'
    with open(log_path, 'w') as log, child(subprocess.Popen(
            args, cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT)) as process:
        timing = Timing()
        sink_offsets = Offsets(suite.bootstrap, sink) if sink else None
        try:
            wait_for(lambda: finished(process, directory, records, timing, sink_offsets),
                     run_timeout(records), f'{system} to process {records} records',
                     interval=POLL_S)
        finally:
            if sink_offsets:
                sink_offsets.__exit__()
        if process.poll() is not None:
            raise RuntimeError(f'{system} exited with {process.returncode}:\n'
                               + tail(log_path))
    return measured(records, timing)


def finished(process: subprocess.Popen, directory: Path, records: int, timing: Timing,
             sink: Offsets | None) -> bool:
    """Whether the run is over: the probe saw the last record (and the sink holds every
    output), or the process exited."""
    if process.poll() is not None:
        return True
    read_probes(directory, timing)
    if timing.last is None:
        return False
    if sink is not None and timing.sink_done is None:
        if sink.total() < records:
            return False
        timing.sink_done = time.monotonic()
    return True


def run_timeout(records: int) -> float:
    """A run that processes fewer than 250 records a second failed."""
    return 60 + records / 250


@contextmanager
def child(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """A child process, stopped at the end (``TERM``, then ``KILL`` after a grace period)."""
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
    return process.returncode


def tail(path: Path, lines: int = 30) -> str:
    return '\n'.join(path.read_text(errors='replace').splitlines()[-lines:])


# -- runner --------------------------------------------------------------------------------


def runner_app(suite: Suite, name: str, directory: Path, kind: str, records: int,
               settings: dict[str, Any], sink: str | None = None,
               source: str | None = None) -> str:
    """Write the runner app of a workload; returns its module name."""
    text = APP_HEAD + APP_BODY[kind]
    serializer = ", value_serializer='str'" if kind == 'count-str' else ''
    topic = source or suite.topics['str' if kind == 'count-str' else 'json']
    code = text.format(probe=str(directory), count=str(records), bench=str(BENCH), app=name,
                       settings=''.join(f', {k}={v!r}' for k, v in settings.items()),
                       topic=topic, partitions=PARTITIONS, serializer=serializer, sink=sink,
                       window_s=WINDOW_MS // 1000)
    return write_app(directory, code, name.replace('-', '_'))


def run_runner(suite: Suite, workload: str, records: int, settings: dict[str, Any],
               workers: int = 1) -> dict[str, Any]:
    """One run of a fresh runner app (its own group, changelog and data directory).

    With one slot it is timed by the probe as the peers are; besides (and with two slots,
    whose probes cannot know their share, only) it is timed from the first record to the
    moment the ``processed`` offsets of the slots' ``GET /`` reach the end (polled every
    50 ms), with the slots' CPU from their first record to then.
    """
    name, directory = suite.fresh('runner')
    kind = WORKLOADS[workload][0]
    sink = suite.sink(name) if kind == 'forward' else None
    module = runner_app(suite, name, directory, kind, records, settings, sink)
    extra = ['--workers', str(workers)] if workers > 1 else []
    source = suite.topics['str' if kind == 'count-str' else 'json']
    timing = Timing()
    with Worker.for_app(directory, module, suite.bootstrap, 'worker', extra=extra) as worker:
        sink_offsets = Offsets(suite.bootstrap, sink) if sink else None
        try:
            wait_for(lambda: runner_finished(worker, workers, directory, source, records,
                                             timing, sink_offsets),
                     run_timeout(records), f'runner to process {records} records',
                     interval=POLL_S)
        finally:
            if sink_offsets:
                sink_offsets.__exit__()
        if worker.proc.poll() is not None:
            raise RuntimeError(f'runner exited with {worker.proc.returncode}:\n'
                               + worker.log_tail())
        polled_cpu = sum(cpu_seconds(pid) - moment['cpu_s']
                         for pid, moment in timing.firsts.items() if alive(pid))
        rss = [peak_rss_mb(pid) for pid in timing.firsts if alive(pid)]
        exit_code, _ = worker.stop()
    first = min(moment['monotonic'] for moment in timing.firsts.values())
    polled_s = timing.polled_done - first
    polled = {'polled_seconds': round(polled_s, 3), 'polled_rate': per(records, polled_s),
              'polled_records_per_cpu_s': per(records, polled_cpu),
              'slots_peak_rss_mb': rss, 'stop_exit_code': exit_code}
    if workers > 1:
        return {'records': records, 'seconds': polled['polled_seconds'],
                'rate': polled['polled_rate'], 'cpu_s': round(polled_cpu, 3),
                'records_per_cpu_s': polled['polled_records_per_cpu_s'],
                'peak_rss_mb': max(rss), 'loadavg': os.getloadavg()[0], **polled}
    return {**measured(records, timing), **polled}


def runner_finished(worker: Worker, workers: int, directory: Path, source: str, records: int,
                    timing: Timing, sink: Offsets | None) -> bool:
    if worker.proc.poll() is not None:
        return True
    read_probes(directory, timing)
    if timing.polled_done is None and processed(worker, workers, source) >= records:
        timing.polled_done = time.monotonic()
    if timing.polled_done is None or (workers == 1 and timing.last is None):
        return False
    if sink is not None and timing.sink_done is None:
        if sink.total() < records:
            return False
        timing.sink_done = time.monotonic()
    return bool(timing.firsts)


def processed(worker: Worker, workers: int, topic: str) -> int:
    """The records of ``topic`` the slots have processed (the highest ``processed`` offset
    of each partition among the slots)."""
    offsets: dict[str, int] = {}
    for slot in range(workers):
        state = worker.state(slot) or {}
        for partition, offset in state.get('processed', {}).items():
            if partition.startswith(f'{topic}:'):
                offsets[partition] = max(offset, offsets.get(partition, 0))
    return sum(offsets.values())


# -- latency -------------------------------------------------------------------------------


class LatencyLoad:
    """Sends ``rate`` JSON records a second (``{"user", "amount", "ts"}``, ``ts`` the wall
    clock at sending, in ms) and reads the sink, read_committed, recording for each output
    the time from ``ts`` to its arrival at this consumer and to its ``LogAppendTime``."""

    def __init__(self, bootstrap: str, source: str, sink: str, rate: int) -> None:
        self.rate, self.sent, self.outputs = rate, 0, []
        self._source = source
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks='all', linger_ms=5)
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                       auto_offset_reset='earliest', enable_auto_commit=False,
                                       isolation_level='read_committed', fetch_max_wait_ms=10)
        self._consumer.assign([TopicPartition(sink, n) for n in range(PARTITIONS)])
        self._sending, self._reading = threading.Event(), threading.Event()
        self._threads = [threading.Thread(target=self._send, daemon=True),
                         threading.Thread(target=self._read, daemon=True)]
        self._users = [f'user{n:05d}'.encode() for n in range(JSON_KEYS)]

    def start(self) -> None:
        self._sending.set()
        self._reading.set()
        for thread in self._threads:
            thread.start()

    def stop_sending(self) -> None:
        self._sending.clear()
        self._threads[0].join()
        self._producer.flush(60)

    def close(self) -> None:
        if self._sending.is_set():
            self.stop_sending()
        self._reading.clear()
        for thread in self._threads[1:]:
            if thread.is_alive():
                thread.join()
        self._producer.close(10)
        self._consumer.close()

    def _send(self) -> None:
        began = time.monotonic()
        while self._sending.is_set():
            due = int((time.monotonic() - began) * self.rate)
            for number in range(self.sent, due):
                value = {'user': self._users[number % JSON_KEYS].decode(), 'amount': number % 1000,
                         'ts': time.time() * 1000}
                self._producer.send(self._source, key=self._users[number % JSON_KEYS],
                                    value=json.dumps(value).encode())
            self.sent = max(self.sent, due)
            time.sleep(0.002)

    def _read(self) -> None:
        while self._reading.is_set():
            for batch in self._consumer.poll(timeout_ms=50).values():
                arrived = time.time() * 1000
                for record in batch:
                    sent = json.loads(record.value)['ts']
                    self.outputs.append((sent, arrived - sent, record.timestamp - sent))


def run_latency(suite: Suite, system: str, rate: int, seconds: float,
                warmup: float) -> dict[str, Any]:
    """The forward workload at ``rate`` records a second for ``seconds`` (after ``warmup``
    seconds from the system's first record): percentiles of source timestamp to output."""
    name, directory = suite.fresh('latency')
    source = f'{name}-source'
    create_topic(suite.admin, source, PARTITIONS)
    sink = suite.sink(name, {'message.timestamp.type': 'LogAppendTime'})
    endless = str(10**12)
    load = LatencyLoad(suite.bootstrap, source, sink, rate)
    try:
        with latency_system(suite, system, name, directory, source, sink, endless):
            load.start()
            timing = Timing()
            wait_for(lambda: read_probes(directory, timing) or timing.firsts, 120,
                     f'{system} to process its first record')
            measured_from = time.time() * 1000 + warmup * 1000
            time.sleep(warmup + seconds)
            load.stop_sending()
            expected = load.sent
            wait_for(lambda: len(load.outputs) >= expected, 60,
                     f'{system}\'s {expected} outputs')
    finally:
        load.close()
    window = [(arrived, appended) for sent, arrived, appended in load.outputs
              if sent >= measured_from]
    return {'rate': rate, 'seconds': seconds, 'outputs': len(window),
            'arrival_ms': percentiles([arrived for arrived, _ in window]),
            'append_ms': percentiles([appended for _, appended in window]),
            'loadavg': os.getloadavg()[0]}


@contextmanager
def latency_system(suite: Suite, system: str, name: str, directory: Path, source: str,
                   sink: str, endless: str) -> Iterator[None]:
    """The system of a latency run, forwarding ``source`` to ``sink`` until the end."""
    if system == 'quix':
        args = [str(suite.python), '-W', 'ignore', str(PEER_LOOPS), 'quix', 'forward',
                '--bootstrap', suite.bootstrap, '--topic', source, '--group', name,
                '--sink', sink, '--state-dir', str(directory)]
        env = {**os.environ, 'PEERS_PROBE_DIR': str(directory), 'PEERS_PROBE_COUNT': endless}
        env.pop('PYTHONPATH', None)
        with open(directory / 'process.log', 'w') as log, child(subprocess.Popen(
                args, cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT)):
            yield
        return
    settings = {'processing_guarantee': 'exactly_once'} if system == RUNNER_EOS else {}
    module = runner_app(suite, name, directory, 'forward', int(endless), settings, sink,
                        source)
    with Worker.for_app(directory, module, suite.bootstrap, 'worker') as worker:
        worker.wait_ready(120)
        yield
        worker.stop()


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 1)
    return {'p50': at(0.5), 'p90': at(0.9), 'p99': at(0.99), 'max': round(ordered[-1], 1)}


# -- the suite ------------------------------------------------------------------------------


@dataclass
class Plan:
    records: int
    rounds: int
    faust_records: int
    workloads: list[str]
    latency_rate: int
    latency_seconds: float
    latency_warmup: float


def systems_of(workload: str, plan: Plan) -> list[str]:
    """The systems run on a workload; (e) and (f) are runs of runner on (a), with it."""
    found = list(SYSTEMS[workload]) if workload in plan.workloads else [RUNNER]
    if workload == 'a':
        found += [RUNNER_EOS] * ('e' in plan.workloads) + [RUNNER_W2] * ('f' in plan.workloads)
    return found


def measured_workloads(plan: Plan) -> list[str]:
    """The workloads with rounds: those asked for, and (a) for (e) and (f)."""
    wanted = set(plan.workloads) | ({'a'} if {'e', 'f'} & set(plan.workloads) else set())
    return [workload for workload in SYSTEMS if workload in wanted]


def run_one(suite: Suite, plan: Plan, workload: str, system: str) -> dict[str, Any]:
    """One measured run; a failure is recorded, not raised (the suite goes on)."""
    records = plan.faust_records if system == 'faust' else plan.records
    try:
        if system == RUNNER:
            return run_runner(suite, workload, records, {})
        if system == RUNNER_EOS:
            return run_runner(suite, workload, records,
                              {'processing_guarantee': 'exactly_once'})
        if system == RUNNER_W2:
            return run_runner(suite, workload, records, {}, workers=2)
        return run_peer(suite, workload, system, records)
    except (RuntimeError, TimeoutError, AssertionError, OSError, ValueError) as error:
        progress(f'{system} on {workload} failed: {error}')
        return {'error': str(error)[-2000:]}


def run_rounds(suite: Suite, plan: Plan, runs: dict[str, dict[str, list[dict]]]) -> None:
    """Every system on every workload, R times, alternating; each run's results are added to
    ``runs`` as it ends."""
    runs.update({workload: {system: [] for system in systems_of(workload, plan)}
                 for workload in measured_workloads(plan)})
    for index in range(1, plan.rounds + 1):
        for workload, systems in runs.items():
            line = []
            for system, results in systems.items():
                progress(f'round {index}/{plan.rounds}, {workload}: {system} ...')
                results.append(run_one(suite, plan, workload, system))
                line.append(f'{system} {results[-1].get("rate", "failed")}')
            say(f'round {index}, {workload}: ' + ' | '.join(line))


def summary(results: list[dict]) -> dict[str, Any]:
    """Median and spread of a system's runs on one workload."""
    good = [run for run in results if 'rate' in run]
    if not good:
        return {'failed': len(results), 'errors': [run.get('error') for run in results]}
    rates = [run['rate'] for run in good]
    found = {'rate': round(statistics.median(rates)), 'min': min(rates), 'max': max(rates),
             'records_per_cpu_s': round(statistics.median(r['records_per_cpu_s'] for r in good)),
             'peak_rss_mb': max(run['peak_rss_mb'] for run in good), 'records': good[0]['records'],
             'runs': len(good), 'failed': len(results) - len(good)}
    if 'polled_rate' in good[0]:
        polled = [run['polled_rate'] for run in good]
        found.update(polled_rate=round(statistics.median(polled)), polled_min=min(polled),
                     polled_max=max(polled),
                     polled_records_per_cpu_s=round(statistics.median(
                         run['polled_records_per_cpu_s'] for run in good)))
    return found


def compare(top: list[dict], bottom: list[dict], measure: str = 'rate',
            bottom_measure: str | None = None) -> dict[str, float] | None:
    """``top`` over ``bottom``: the ratio of the medians and the spread of the ratios of
    the runs of the same round."""
    bottom_measure = bottom_measure or measure
    pairs = [(a[measure], b[bottom_measure]) for a, b in zip(top, bottom, strict=False)
             if measure in a and bottom_measure in b and b[bottom_measure]]
    if not pairs:
        return None
    ratios = [a / b for a, b in pairs]
    medians = statistics.median(a for a, _ in pairs) / statistics.median(b for _, b in pairs)
    return {'ratio': round(medians, 3), 'min': round(min(ratios), 3),
            'max': round(max(ratios), 3)}


def report(runs: dict[str, dict[str, list[dict]]]) -> dict[str, Any]:
    """Print the table of each workload and the ratios; returns them."""
    found: dict[str, Any] = {}
    for workload, systems in runs.items():
        say('')
        say(f'({workload}) {WORKLOADS[workload][1]}')
        say(f'  {"system":<26} {"records/s":>9} {"min-max":>17} {"per CPU-s":>9} '
            f'{"RSS MiB":>7}   {"runner/it: rate (spread)":<25} {"per CPU-s (spread)"}')
        table = {}
        for system, results in systems.items():
            if not results:                 # an interrupted run did not get to it
                continue
            numbers = table[system] = summary(results)
            if 'rate' not in numbers:
                say(f'  {system:<26} failed: {first_line(numbers["errors"][0])}')
                continue
            versus = per_cpu = None
            if RUNNER in systems and not system.startswith(RUNNER):
                versus = compare(systems[RUNNER], results)
                per_cpu = compare(systems[RUNNER], results, 'records_per_cpu_s')
            numbers['runner_over_it'] = versus
            numbers['runner_over_it_per_cpu_s'] = per_cpu
            faust_note = f' ({numbers["records"]:,})' if system == 'faust' else ''
            ratios = f'{spread_text(versus):<25} {spread_text(per_cpu)}' if versus else ''
            say(f'  {system + faust_note:<26} {numbers["rate"]:>9,} '
                f'{numbers["min"]:>8,}-{numbers["max"]:<8,} {numbers["records_per_cpu_s"]:>9,} '
                f'{numbers["peak_rss_mb"]:>7}   {ratios}')
        found[workload] = table
    if 'a' in runs:
        found.update(guarantees_and_slots(runs['a']))
    return found


def guarantees_and_slots(systems: dict[str, list[dict]]) -> dict[str, Any]:
    """(e) exactly-once over at-least-once and (f) two slots over one, on workload a."""
    found: dict[str, Any] = {}
    say('')
    if RUNNER_EOS in systems:
        found['e'] = {'rate': compare(systems[RUNNER_EOS], systems[RUNNER]),
                      'records_per_cpu_s': compare(systems[RUNNER_EOS], systems[RUNNER],
                                                   'records_per_cpu_s')}
        say(f'(e) exactly-once / at-least-once on (a): {spread_text(found["e"]["rate"])} the '
            f'rate, {spread_text(found["e"]["records_per_cpu_s"])} the records per CPU-second')
    if RUNNER_W2 in systems:
        found['f'] = {'rate': compare(systems[RUNNER_W2], systems[RUNNER], 'rate',
                                      'polled_rate'),
                      'records_per_cpu_s': compare(systems[RUNNER_W2], systems[RUNNER],
                                                   'records_per_cpu_s',
                                                   'polled_records_per_cpu_s')}
        say(f'(f) --workers 2 / one slot on (a), both timed by polling GET /: '
            f'{spread_text(found["f"]["rate"])} the rate, '
            f'{spread_text(found["f"]["records_per_cpu_s"])} the records per CPU-second '
            f'(the broker, this harness and the slots share the {os.cpu_count()} CPUs)')
    return found


def first_line(text: str | None) -> str:
    return (text or '?').strip().splitlines()[0][:100]


def spread_text(numbers: dict[str, float] | None) -> str:
    if not numbers:
        return 'n/a'
    return f'{numbers["ratio"]:.2f}x ({numbers["min"]:.2f}-{numbers["max"]:.2f})'


def run_latencies(suite: Suite, plan: Plan, python_ok: bool, found: dict[str, Any]) -> None:
    """The latency of each system, added to ``found`` as each ends."""
    systems = [RUNNER, RUNNER_EOS] + (['quix'] if python_ok else [])
    for system in systems:
        progress(f'latency at {plan.latency_rate:,} records/s for {plan.latency_seconds:g}s: '
                 f'{system} ...')
        try:
            found[system] = run_latency(suite, system, plan.latency_rate, plan.latency_seconds,
                                        plan.latency_warmup)
        except (RuntimeError, TimeoutError, AssertionError, OSError) as error:
            progress(f'latency of {system} failed: {error}')
            found[system] = {'error': str(error)[-2000:]}
            continue
        numbers = found[system]
        say(f'latency, {system}: {numbers["outputs"]:,} outputs; source timestamp to arrival '
            f'(read_committed) p50 {numbers["arrival_ms"].get("p50")} ms, p99 '
            f'{numbers["arrival_ms"].get("p99")} ms; to the sink\'s LogAppendTime p50 '
            f'{numbers["append_ms"].get("p50")} ms, p99 {numbers["append_ms"].get("p99")} ms')


# -- the chart -----------------------------------------------------------------------------


def chart(results: dict[str, Any], path: Path) -> None:
    """Median records/s (min-max bars) of every system per workload, and the latencies."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        say('no chart: matplotlib is not installed (pip install -e \'.[bench]\')')
        return
    tables = results['workloads']
    panels = [key for key in ('a', 'b', 'c', 'd') if key in tables]
    latency = results.get('latency') or {}
    count = len(panels) + bool(latency)
    figure, axes = plt.subplots(count, 1, figsize=(9, 2.6 * count + 0.6), squeeze=False)
    for axis, workload in zip(axes[:, 0], panels, strict=False):
        rows = [(system, n) for system, n in tables[workload].items() if 'rate' in n]
        names = [system + (' (polled)' if system == RUNNER_W2 else '') for system, _ in rows]
        rates = [n['rate'] for _, n in rows]
        errors = [[n['rate'] - n['min'] for _, n in rows], [n['max'] - n['rate'] for _, n in rows]]
        colors = ['tab:red' if system.startswith(RUNNER) else 'tab:gray' for system, _ in rows]
        axis.barh(names, rates, xerr=errors, color=colors, capsize=3)
        for position, (_, numbers) in enumerate(rows):     # the median, right of its bar
            axis.annotate(f'  {numbers["rate"] / 1000:,.1f}k', (numbers['max'], position),
                          va='center', fontsize=7)
        axis.set_xscale('log')
        axis.set_xlim(right=max(n['max'] for _, n in rows) * 4)
        axis.invert_yaxis()
        axis.set_title(f'({workload}) {WORKLOADS[workload][1]}', fontsize=10)
        axis.set_xlabel('records/s, log scale (median, min-max)', fontsize=8)
        axis.tick_params(labelsize=8)
    if latency:
        axis = axes[-1, 0]
        rows = [(system, n) for system, n in latency.items() if n.get('arrival_ms')]
        positions = range(len(rows))
        axis.barh([p - 0.2 for p in positions], [n['arrival_ms']['p50'] for _, n in rows],
                  height=0.4, label='p50', color='tab:blue')
        axis.barh([p + 0.2 for p in positions], [n['arrival_ms']['p99'] for _, n in rows],
                  height=0.4, label='p99', color='tab:orange')
        axis.set_yticks(list(positions), [system + ' at-least-once' * (system == RUNNER)
                                          for system, _ in rows])
        axis.invert_yaxis()
        axis.set_xlabel('ms, source timestamp to arrival at a read_committed consumer',
                        fontsize=8)
        axis.set_title(f'end-to-end latency at {results["plan"]["latency_rate"]:,} records/s',
                       fontsize=10)
        axis.legend(fontsize=8)
        axis.tick_params(labelsize=8)
    stamp = results['machine']
    figure.suptitle(f'runner {stamp["runner_commit"]} and its peers, {stamp["nproc"]} CPUs '
                    f'shared with the broker, load average {stamp["loadavg_at_start"][0]} at '
                    f'the start, {stamp["loadavg"][0]} at the end', fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    say(f'chart: {path}')


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables (for the READMEs)."""
    lines = [('| workload | system | records/s (min-max) | per CPU-s | peak RSS MiB | '
              'runner/it: rate (spread) | runner/it: per CPU-s (spread) |'),
             '| --- | --- | ---: | ---: | ---: | ---: | ---: |']
    for workload, table in results['workloads'].items():
        for system, numbers in table.items():
            if 'rate' not in numbers:
                lines.append(f'| {workload} | {system} | failed | | | | |')
                continue
            name = f'{system} ({numbers["records"]:,} records)' if system == 'faust' else system
            lines.append(
                f'| {workload} | {name} | {numbers["rate"]:,} ({numbers["min"]:,}-'
                f'{numbers["max"]:,}) | {numbers["records_per_cpu_s"]:,} | '
                f'{numbers["peak_rss_mb"]} | {spread_text(numbers.get("runner_over_it"))} | '
                f'{spread_text(numbers.get("runner_over_it_per_cpu_s"))} |')
    for key, label in (('e', 'exactly-once / at-least-once'), ('f', '--workers 2 / one slot')):
        if key in results['ratios']:
            found = results['ratios'][key]
            lines.append(f'| {key} | {label} | {spread_text(found["rate"])} | '
                         f'{spread_text(found["records_per_cpu_s"])} | | | |')
    rate = results['plan']['latency_rate']
    lines += ['', f'| latency at {rate:,} records/s | p50 | p90 | p99 | max | outputs |',
              '| --- | ---: | ---: | ---: | ---: | ---: |']
    for system, numbers in results['latency'].items():
        for kind, label in (('arrival_ms', 'to arrival'), ('append_ms', 'to LogAppendTime')):
            found = numbers.get(kind) or {}
            lines.append(f'| {system}, {label} (ms) | {found.get("p50")} | {found.get("p90")} | '
                         f'{found.get("p99")} | {found.get("max")} | {numbers.get("outputs")} |')
    return '\n'.join(lines)


# -- main ----------------------------------------------------------------------------------


def benchmark(args: argparse.Namespace) -> None:
    plan = Plan(records=args.records, rounds=args.rounds,
                faust_records=min(args.records, args.faust_records), workloads=args.only,
                latency_rate=args.latency_rate, latency_seconds=args.latency_seconds,
                latency_warmup=args.latency_warmup)
    python, versions = peers_python(args.venv)
    say('peers: ' + ', '.join(f'{name} {version}' for name, version in versions.items()))
    tag = run_id()
    topics = {'json': f'peers-{tag}-json', 'str': f'peers-{tag}-str'}
    results: dict[str, Any] = {
        'benchmark': 'peers', 'machine': machine(), 'peers': versions,
        'broker': bootstrap_kind(), 'plan': vars(plan), 'seed': args.seed, 'produce_s': {},
        'runs': {}, 'latency': {}, 'notes': NOTES}
    began = time.monotonic()
    try:
        with kafka_bootstrap() as bootstrap, scratch_dir('bench-peers-') as workdir:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap)
            try:
                suite = Suite(bootstrap, admin, workdir, tag, python, topics)
                results['produce_s'] = produce_data(suite, plan, args.seed)
                if 'latency' in plan.workloads:
                    run_latencies(suite, plan, versions['quixstreams'][0].isdigit(),
                                  results['latency'])
                run_rounds(suite, plan, results['runs'])
            finally:
                delete_run_topics(admin, tag)
                admin.close()
    except KeyboardInterrupt:
        if results['runs'] or results['latency']:
            write_results(args, results, began, interrupted=True)
        raise
    write_results(args, results, began)


def write_results(args: argparse.Namespace, results: dict[str, Any], began: float,
                  interrupted: bool = False) -> None:
    """Print the tables; write the results file (also of an interrupted run) and the chart."""
    tables = report(results['runs'])
    start = results['machine']
    results.update(
        machine={**machine(), 'runner_commit': start['runner_commit'],     # the code run
                 'loadavg_at_start': start.get('loadavg_at_start', start['loadavg'])},
        seconds=round(time.monotonic() - began), interrupted=interrupted,
        workloads={key: value for key, value in tables.items() if key in SYSTEMS},
        ratios={key: tables[key] for key in ('e', 'f') if key in tables})
    args.output.write_text(json.dumps(results, indent=1) + '\n')
    say(f'results{" of the interrupted run" * interrupted}: {args.output}')
    chart(results, args.chart)


def produce_data(suite: Suite, plan: Plan, seed: int) -> dict[str, float]:
    """Each data set once (the str one only if workload b runs)."""
    seconds = {}
    wanted = {'json': any(key in plan.workloads for key in 'acdef'), 'str': 'b' in plan.workloads}
    for kind, producer in (('json', produce_json), ('str', produce_str)):
        if wanted[kind]:
            topic = suite.topics[kind]
            progress(f'producing {plan.records:,} records to {topic} ...')
            create_topic(suite.admin, topic, PARTITIONS)
            seconds[kind] = round(producer(suite.bootstrap, topic, plan.records, seed), 1)
    return seconds


def bootstrap_kind() -> str:
    return ('$KAFKA_BOOTSTRAP_SERVERS (shared)' if os.environ.get('KAFKA_BOOTSTRAP_SERVERS')
            else 'its own, scripts/kafka_broker.py')


NOTES = [
    ('Every system is timed from its first record to its last by peer_probe.tick(), called '
     'once per record in each (forward: until the sink holds every output, by polling its end '
     'offsets every 50 ms); CPU seconds are the process\'s between the same two records.'),
    ('runner --workers 2 is timed by polling the slots\' GET / processed offsets every 50 ms '
     '(its slots cannot know their share); (f) compares it with one slot timed the same way.'),
    'The broker, this harness and the systems share the machine\'s CPUs (nproc in machine).',
    ('Each system runs with its defaults: runner commits every 2 s (0.1 s exactly-once), '
     'Quix Streams every 5 s with RocksDB state, Faust with an in-memory table (its RocksDB '
     'store needs python-rocksdb) and its changelog; the raw loops commit nothing.'),
    ('Faust runs on the first --faust-records records of each data set (it is too slow for '
     'all of them); its rate is comparable, its totals are not.'),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true',
                        help='20,000 records, 1 round, 10 s of latency: a couple of minutes')
    parser.add_argument('--records', type=int, help='records of each data set (300,000)')
    parser.add_argument('--rounds', type=int, help='rounds of every system (3)')
    parser.add_argument('--faust-records', type=int,
                        help='records Faust processes of each data set (20,000)')
    parser.add_argument('--only', nargs='+', metavar='WORKLOAD',
                        choices=['a', 'b', 'c', 'd', 'e', 'f', 'latency'],
                        default=['a', 'b', 'c', 'd', 'e', 'f', 'latency'],
                        help='workloads to run: a b c d e f latency (all)')
    parser.add_argument('--latency-rate', type=int, default=5000, help='records/s (5000)')
    parser.add_argument('--latency-seconds', type=float, help='measured seconds (60)')
    parser.add_argument('--latency-warmup', type=float, default=5.0,
                        help='seconds after the first record before measuring (5)')
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--venv', type=Path, default=DEFAULT_VENV,
                        help=f'the peers\' virtual environment ({DEFAULT_VENV})')
    parser.add_argument('--output', type=Path, default=BENCH / 'peers-results.json')
    parser.add_argument('--chart', type=Path, default=BENCH / 'peers.png')
    parser.add_argument('--markdown', action='store_true',
                        help='only print the results file as Markdown tables')
    parser.add_argument('--replot', action='store_true',
                        help='only print the tables and draw the chart again from the results '
                             'file')
    args = parser.parse_args()
    defaults = ((20_000, 1, 5_000, 10.0) if args.quick else (300_000, 3, 20_000, 60.0))
    for name, value in zip(('records', 'rounds', 'faust_records', 'latency_seconds'),
                           defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.quick and args.output == BENCH / 'peers-results.json':
        args.output, args.chart = BENCH / 'peers-quick.json', BENCH / 'peers-quick.png'
    if args.markdown:
        say(markdown(json.loads(args.output.read_text())))
        return
    if args.replot:
        results = json.loads(args.output.read_text())
        report(results['runs'])
        chart(results, args.chart)
        return
    benchmark(args)


if __name__ == '__main__':
    raise SystemExit(run_main(main))
