"""Shared helpers of the benchmarks: the broker, worker processes, waiting, topics, reports.

Not a benchmark itself; ``wordcount.py`` and ``restore.py`` import it from this directory.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner.default import murmur2

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(REPO / 'scripts')]   # runner and kafka_broker, uninstalled too

import kafka_broker

from runner.main.control import wait_until
from runner.runtime.web import get_json

RUNNER = REPO / 'runner.py'
#: Seconds between two looks at a condition.
POLL = 0.03
RECOVERED = re.compile(r'INFO runner\.state\.recovery: recovered (\S+)\[(\d+)\]: (\d+) records in '
                       r'([\d.]+)s')


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


def wait_for(condition: Callable[[], Any], timeout: float, what: str,
             interval: float = POLL) -> Any:
    """Poll ``condition`` until it returns something truthy; TimeoutError after ``timeout``."""
    result = wait_until(condition, timeout, interval)
    if not result:
        raise TimeoutError(f'timed out after {timeout:.0f}s waiting for {what}')
    return result


@contextmanager
def kafka_bootstrap() -> Iterator[str]:
    """``$KAFKA_BOOTSTRAP_SERVERS``, else a broker of our own, stopped at the end."""
    external = os.environ.get('KAFKA_BOOTSTRAP_SERVERS')
    if external:
        yield external
        return
    print('starting a Kafka broker ...', file=sys.stderr)
    with kafka_broker.Broker() as broker:
        yield broker.bootstrap_servers


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def child_env() -> dict[str, str]:
    """The environment of worker and baseline processes: the repository importable."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')]))
    env['PYTHONUNBUFFERED'] = '1'
    return env


def run_baseline_consumer(bootstrap: str, topic: str, extra: Iterable[str] = (),
                          timeout: float = 600) -> dict[str, Any]:
    """Run ``baseline_consumer.py`` as a process of its own; returns its JSON report."""
    args = [sys.executable, str(BENCH / 'baseline_consumer.py'), '--bootstrap', bootstrap,
            '--topic', topic, '--timeout', str(timeout), *extra]
    result = subprocess.run(args, env=child_env(), capture_output=True, text=True,
                            timeout=timeout + 60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f'baseline consumer failed ({result.returncode}):\n'
                           f'{result.stdout}{result.stderr}')
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- workers -------------------------------------------------------------------


class Worker:
    """``python runner.py -A MODULE ...`` with one slot, run from ``cwd``; logs to a file."""

    def __init__(self, cwd: Path, module: str, bootstrap: str, datadir: Path,
                 name: str) -> None:
        self.port = free_port()
        self.log_path = cwd / f'{name}.log'
        args = [sys.executable, str(RUNNER), '-A', module, '-b', bootstrap,
                '-p', str(self.port), '-D', str(datadir), '-l', 'info']
        with open(self.log_path, 'wb') as log:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(args, cwd=cwd, env=child_env(), stdout=log,
                                         stderr=subprocess.STDOUT)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None and not issubclass(kind, KeyboardInterrupt):
            print(f'--- last lines of {self.log_path.name} ---\n{self.log_tail()}',
                  file=sys.stderr)
        self.kill()

    def get(self, path: str) -> tuple[int, Any]:
        """``GET path``: (status, JSON body), or (0, None) while the server does not answer."""
        return get_json(f'http://127.0.0.1:{self.port}{path}', timeout=5)

    def state(self) -> dict[str, Any]:
        """``GET /`` (an empty dict while the server does not answer)."""
        return self.get('/')[1] or {}

    def wait_ready(self, timeout: float) -> float:
        """Wait for ``/ready`` to say 200; returns the seconds since the process started."""
        wait_for(lambda: self.get('/ready')[0] == 200 or self.proc.poll() is not None,
                 timeout, f'{self.log_path.name} to be ready', interval=0.05)
        if self.proc.poll() is not None:
            raise RuntimeError(f'the worker exited with {self.proc.returncode} before it was '
                               'ready')
        return time.monotonic() - self.started

    def slot_pid(self) -> int:
        return wait_for(lambda: self.state().get('pid'), 30, 'the slot pid')

    def stop(self, timeout: float = 90) -> tuple[int, float]:
        """Warm stop (TERM); returns the exit code and the seconds it took."""
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - began

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors='replace')

    def log_tail(self, lines: int = 40) -> str:
        return '\n'.join(self.log().splitlines()[-lines:])

    def recoveries(self) -> list[tuple[str, int, int, float]]:
        """(changelog, partition, records, seconds) of every 'recovered' log line."""
        return [(m[1], int(m[2]), int(m[3]), float(m[4])) for m in RECOVERED.finditer(self.log())]


def write_module(directory: Path, name: str, source: str) -> str:
    """Write an app module into ``directory``; returns its module name."""
    (directory / f'{name}.py').write_text(source)
    return name


# -- Kafka ---------------------------------------------------------------------


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


def produce(bootstrap: str, topic: str,
            records: Iterable[tuple[bytes, bytes, int | None]]) -> float:
    """Write (key, value, partition or None) records to an empty topic, batching hard, and
    check they are all there; returns the seconds it took."""
    began = time.monotonic()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks='all', linger_ms=50,
                             batch_size=512 * 1024)
    sent = 0
    try:
        for key, value, partition in records:
            producer.send(topic, key=key, value=value, partition=partition)
            sent += 1
        producer.flush(600)
    finally:
        producer.close(10)
    seconds = time.monotonic() - began
    written = sum(end_offsets(bootstrap, topic).values())
    if written != sent:
        raise RuntimeError(f'{topic} holds {written} records, expected {sent}')
    return seconds


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2)."""
    return (murmur2(key) & 0x7fffffff) % partitions


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The end offset of every partition of ``topic``."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        numbers = wait_for(lambda: consumer.partitions_for_topic(topic), 30, f'{topic} metadata')
        ends = consumer.end_offsets([TopicPartition(topic, n) for n in numbers])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        consumer.close()


def committed_offsets(admin: KafkaAdminClient, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets of ``topic``, by partition."""
    offsets = admin.list_group_offsets(group).get(group, {})
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


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
