"""What the benchmarks share beyond the test harness: the broker, baseline processes,
topics, a steady load, measuring and reporting.

Not a benchmark itself; the benchmarks (``wordcount.py``, ``restore.py``,
``rebalance.py``, ``soak.py``) import it from this directory.  Worker processes,
producing, waiting with deadlines and offsets come from ``tests/harness.py``, the
harness the tests use too.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO / 'tests'), str(REPO / 'scripts')]

import kafka
from harness import (  # noqa: F401 - the benchmarks import these from here
    Worker,
    alive,
    committed,
    end_offsets,
    murmur2_partition,
    produce,
    runner_env,
    wait_for,
    write_app,
)
from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import KafkaTimeoutError
from kafka_broker import Broker

# -- running -------------------------------------------------------------------


def run_main(main: Callable[[], None]) -> int:
    """Run a benchmark's ``main``; TERM behaves like Ctrl-C, so ``finally`` blocks clean up."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        main()
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    return 0


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def kafka_bootstrap() -> Iterator[str]:
    """``$KAFKA_BOOTSTRAP_SERVERS``, else a broker of our own, stopped at the end."""
    external = os.environ.get('KAFKA_BOOTSTRAP_SERVERS')
    if external:
        yield external
        return
    with own_broker() as broker:
        yield broker.bootstrap_servers


@contextmanager
def own_broker() -> Iterator[Broker]:
    """A broker of our own, stopped at the end.  It dies with the thread that started it,
    so only that thread may restart it."""
    print('starting a Kafka broker ...', file=sys.stderr)
    with Broker() as broker:
        yield broker


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory, removed at the end."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_id() -> str:
    """A short tag that makes this run's topic and group names unique."""
    return uuid.uuid4().hex[:8]


def run_baseline_consumer(bootstrap: str, topic: str, extra: Iterable[str] = (),
                          timeout: float = 600) -> dict[str, Any]:
    """Run ``baseline_consumer.py`` as a process of its own; returns its JSON report."""
    args = [sys.executable, str(BENCH / 'baseline_consumer.py'), '--bootstrap', bootstrap,
            '--topic', topic, '--timeout', str(timeout), *extra]
    result = subprocess.run(args, env=runner_env(), capture_output=True, text=True,
                            timeout=timeout + 60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f'baseline consumer failed ({result.returncode}):\n'
                           f'{result.stdout}{result.stderr}')
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- Kafka ---------------------------------------------------------------------


def timed_produce(bootstrap: str, topic: str, items: Iterable[tuple[bytes, bytes]]) -> float:
    """Write keyed records (placed by the default partitioner, murmur2) to an empty topic and
    check they are all there; returns the seconds it took."""
    began = time.monotonic()
    sent = produce(bootstrap, topic, items, encode=lambda value: value)
    seconds = time.monotonic() - began
    written = sum(end_offsets(bootstrap, topic).values())
    if written != sent:
        raise RuntimeError(f'{topic} holds {written} records, expected {sent}')
    return seconds


class Load:
    """A producer thread sending ``rate`` records a second, the keys in turn, value = a
    sequence number; ``truth`` counts the records the broker acknowledged, per key, and
    ``failed`` the sends refused or never acknowledged (such a record may still have been
    written: compare the topic's end offsets with the truth)."""

    def __init__(self, bootstrap: str, topic: str, keys: list[str], rate: int) -> None:
        self.truth: Counter[str] = Counter()
        self.failed = 0
        self.started = 0.0
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks='all', linger_ms=5)
        self._topic, self._keys, self._rate = topic, keys, rate
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name='load', daemon=True)

    def start(self) -> None:
        self.started = time.time()
        self._thread.start()

    def stop(self) -> None:
        """Stop sending; returns once every record sent is acknowledged (or failed)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self.started:
            self._thread.join()
        self._producer.flush(60)
        self._producer.close(10)

    def _run(self) -> None:
        began, sent = time.monotonic(), 0
        while not self._stopping.is_set():
            due = int((time.monotonic() - began) * self._rate)
            for number in range(sent, due):
                self._send(number)
            sent = max(sent, due)
            self._stopping.wait(0.005)

    def _send(self, number: int) -> None:
        key = self._keys[number % len(self._keys)]
        try:
            future = self._producer.send(self._topic, key=key.encode(),
                                         value=str(number).encode())
        except KafkaTimeoutError:       # no metadata within max_block_ms: the broker is away
            self._count_failure()
            return
        future.add_callback(lambda _meta, key=key: self.truth.update((key,)))
        future.add_errback(lambda _exc: self._count_failure())

    def _count_failure(self) -> None:
        self.failed += 1


def create_topic(admin: KafkaAdminClient, name: str, partitions: int,
                 config: dict[str, str] | None = None) -> None:
    admin.create_topics({name: {'num_partitions': partitions, 'replication_factor': 1,
                                'configs': config or {}}}, wait_for_metadata=True)


def delete_run_topics(admin: KafkaAdminClient, tag: str) -> None:
    """On ``$KAFKA_BOOTSTRAP_SERVERS`` (not our own broker), delete the topics named with ``tag``."""
    if not os.environ.get('KAFKA_BOOTSTRAP_SERVERS'):
        return
    mine = [name for name in admin.list_topics() if tag in name]
    if mine:
        admin.delete_topics(mine, raise_errors=False)


# -- measuring and reporting ---------------------------------------------------


def peak_rss_mb(pid: int) -> float:
    """The peak resident set size (VmHWM) of a live process, in MiB."""
    status = Path(f'/proc/{pid}/status').read_text()
    kib = int(re.search(r'^VmHWM:\s+(\d+) kB', status, re.MULTILINE)[1])
    return round(kib / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a live process (all its threads) has used so far."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def dir_size_mb(path: Path) -> float:
    """Bytes of all files under ``path``, in MiB."""
    size = sum(file.stat().st_size for file in Path(path).rglob('*') if file.is_file())
    return round(size / 2**20, 1)


def rate(count: float, seconds: float) -> float:
    """Records per second, rounded; 0 for no time."""
    return round(count / seconds) if seconds > 0 else 0.0


def ratio(value: float, baseline: float) -> float:
    return round(value / baseline, 3) if baseline else 0.0


def median(values: Iterable[float]) -> float:
    return round(statistics.median(list(values)), 3)


def machine() -> dict[str, Any]:
    """What the numbers were measured on (the load averages tell of other work running)."""
    return {'nproc': os.cpu_count(), 'cpu': _cpu_model(), 'python': platform.python_version(),
            'kafka_python': kafka.__version__, 'runner_commit': _runner_commit(),
            'date': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
            'loadavg': [round(load, 2) for load in os.getloadavg()]}


def _runner_commit() -> str:
    """The checkout's commit, with ``+dirty`` when runner/ has uncommitted changes."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(['git', '-C', str(REPO), *args], capture_output=True,
                                  text=True, check=False).stdout.strip()
        except OSError:
            return ''
    commit = git('rev-parse', '--short', 'HEAD') or 'unknown'
    return commit + ('+dirty' if git('status', '--porcelain', '--', 'runner') else '')


def _cpu_model() -> str:
    try:
        text = Path('/proc/cpuinfo').read_text()
    except OSError:
        return platform.processor()
    found = re.search(r'^model name\s*:\s*(.+)$', text, re.MULTILINE)
    return found[1] if found else platform.processor()


def say(line: str) -> None:
    """A line of the human summary (progress lines go to stderr)."""
    print(line, flush=True)


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def emit_json(benchmark: str, results: dict[str, Any]) -> None:
    """The final line: every number of the run as one JSON object."""
    print(json.dumps({'benchmark': benchmark, 'machine': machine(), **results}), flush=True)
