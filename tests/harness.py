"""The harness shared by the tests and the benchmarks: worker processes, producing,
consuming, waiting with deadlines, offsets, ports.

Everything runs real processes against a real broker; nothing here times anything
(the benchmarks do their own timing with it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'scripts')]      # runner and kafka_broker, uninstalled too

from kafka_broker import free_port

from runner.app.partitioners import murmur2_partition
from runner.main.control import wait_until
from runner.runtime.web import get_json

__all__ = ['REPO', 'RUNNER', 'Worker', 'alive', 'committed', 'consume', 'debian_command',
           'end_offsets',
           'free_port', 'murmur2_partition', 'produce', 'run_cli', 'runner_env', 'wait_for',
           'write_app']

RUNNER = REPO / 'runner.py'
#: apt-get waits this long for the package manager's lock (tests may install at once).
APT_WAIT = ('-o', 'DPkg::Lock::Timeout=600')
RECOVERED = re.compile(r'\[(\d+)\] \[slot \d+\] INFO runner\.state\.recovery: '
                       r'recovered (\S+)\[(\d+)\]: (\d+) records in ([\d.]+)s')


def wait_for(condition: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy and return that; fail with
    ``TimeoutError`` (an AssertionError-like failure in tests) after ``timeout`` seconds."""
    result = wait_until(condition, timeout, interval)
    if not result:
        raise TimeoutError(f'timed out after {timeout:g}s waiting for {what}')
    return result


def write_app(directory: Path, source: str, name: str = 'testapp') -> str:
    """Write an app module into ``directory``; returns the module name."""
    (directory / f'{name}.py').write_text(textwrap.dedent(source))
    return name


def runner_env(repo: Path = REPO) -> dict[str, str]:
    """The environment of worker processes: ``repo`` importable, output unbuffered."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(repo), env.get('PYTHONPATH')]))
    env['PYTHONUNBUFFERED'] = '1'
    return env


def run_cli(args: Iterable[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``python runner.py ARGS`` to completion."""
    return subprocess.run([sys.executable, str(RUNNER), *args], cwd=cwd, env=runner_env(),
                          check=False, capture_output=True, text=True, timeout=timeout)


class Worker:
    """A ``python runner.py ARGS`` process (a main process and its slots), its log and ports.

    Slot ``i`` answers on ``port + i``.  Used as a context manager it is killed at
    the end, and the tail of its log is printed if the block failed.  ``repo`` is the
    runner checkout to run (this one by default; the benchmarks compare others).
    """

    def __init__(self, cwd: Path, args: Iterable[str], port: int, name: str = 'w',
                 datadir: Path | None = None, host: str = '127.0.0.1',
                 repo: Path = REPO) -> None:
        self.port = port
        self.host = host
        self.datadir = datadir
        self.token: str | None = None       # the bearer token of its web servers, if any
        self.args = list(args)
        self.log_path = cwd / f'{name}.log'
        self._log = open(self.log_path, 'w')  # noqa: SIM115 - closed in kill()
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, str(repo / 'runner.py'), *self.args],
                                     cwd=cwd, env=runner_env(repo), stdout=self._log,
                                     stderr=subprocess.STDOUT)

    @classmethod
    def for_app(cls, cwd: Path, app: str, bootstrap: str, name: str = 'w',
                extra: Iterable[str] = (), host: str = '127.0.0.1',
                datadir: Path | None = None, repo: Path = REPO, slots: int = 4) -> Worker:
        """A worker of ``app`` on free ports (``slots`` slots' worth); its data directory is
        ``datadir``, by default one of its own."""
        port, datadir = free_port(count=slots), datadir or cwd / f'{name}-data'
        args = ['-A', app, '-b', bootstrap, '-p', str(port), '-D', str(datadir), '-l', 'info',
                '--web-host', host, *extra]
        return cls(cwd, args, port, name, datadir, host, repo)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None and not issubclass(kind, KeyboardInterrupt):
            print(f'--- last lines of {self.log_path.name} ---\n{self.log_tail()}',
                  file=sys.stderr)
        self.kill()

    # -- HTTP ----------------------------------------------------------------

    def get(self, path: str, slot: int = 0) -> tuple[int, Any]:
        """``GET path`` on slot ``slot``: (status, JSON body), or (0, None) while it is down."""
        return get_json(f'http://{self.host}:{self.port + slot}{path}', timeout=5,
                        token=self.token)

    def state(self, slot: int = 0, path: str = '/') -> dict[str, Any] | None:
        """The body of a 200 answer to ``GET path`` on slot ``slot``, else None."""
        status, body = self.get(path, slot)
        return body if status == 200 else None

    def wait_ready(self, timeout: float = 60, slot: int = 0) -> float:
        """Wait for ``/ready`` to say 200; returns the seconds since the process started."""
        wait_for(lambda: self.get('/ready', slot)[0] == 200 or self.proc.poll() is not None,
                 timeout, f'{self.log_path.name} to be ready')
        if self.proc.poll() is not None:
            raise AssertionError(f'worker exited with {self.proc.returncode} before it was '
                                 f'ready:\n{self.log_tail()}')
        return time.monotonic() - self.started

    def slot_pids(self, count: int, timeout: float = 60) -> list[int]:
        """Pids of ``count`` slots, once each answers."""
        def read() -> list[int] | None:
            states = [self.state(slot) for slot in range(count)]
            return [state['pid'] for state in states] if all(states) else None
        return wait_for(read, timeout, f'{count} slots to answer')

    def split_between(self, count: int, timeout: float = 60) -> list[int]:
        """Wait until ``count`` slots are ready and each owns partitions; returns their pids."""
        def settled() -> list[int] | None:
            states = [self.state(slot) for slot in range(count)]
            if all(state and state['ready'] and state['assignment'] for state in states):
                return [state['pid'] for state in states]
            return None
        return wait_for(settled, timeout, f'{count} ready slots sharing the partitions')

    # -- the process -----------------------------------------------------------

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.flush()

    def stop(self, timeout: float = 90) -> tuple[int, float]:
        """Warm stop (TERM); returns the exit code and the seconds it took."""
        began = time.monotonic()
        self.signal(signal.SIGTERM)
        return self.wait(timeout), time.monotonic() - began

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._log.close()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')

    def log_tail(self, lines: int = 40) -> str:
        return '\n'.join(self.log().splitlines()[-lines:])

    def recoveries(self, pid: int | None = None) -> list[tuple[str, int, int, float]]:
        """(changelog, partition, records, seconds) of every 'recovered' log line (of one
        slot process)."""
        return [(m[2], int(m[3]), int(m[4]), float(m[5])) for m in RECOVERED.finditer(self.log())
                if pid is None or int(m[1]) == pid]


def without_waiting(stderr: str) -> str:
    """What a command that waits wrote on stderr besides its progress lines (``runner:
    waiting for ...``, one per change into a pipe), stripped."""
    return '\n'.join(line for line in stderr.splitlines()
                     if not line.startswith('runner: waiting for ')).strip()


def debian_command(command: str, package: str | None = None) -> str:
    """The path of ``command``, from Debian's ``package`` (by default named alike), installed
    when missing (as root: ``apt-get update``, then ``install``); the calling test is
    skipped, with the reason, where it cannot be."""
    import pytest  # here: the benchmarks use this module without pytest

    package = package or command
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip(f'{command} is not installed, and installing it (apt-get install '
                    f'{package}) needs root')
    if shutil.which('apt-get') is None:
        pytest.skip(f'{command} is not installed, and there is no apt-get to install it')
    for step in (['update'], ['install', '-y', '--no-install-recommends', package]):
        result = subprocess.run(['apt-get', *APT_WAIT, *step], capture_output=True, text=True,
                                env={**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'},
                                timeout=900, check=False)
    found = shutil.which(command)
    if not found:
        reason = (result.stderr.strip().splitlines() or ['no output'])[-1]
        pytest.skip(f'{command} cannot be installed: {reason}')
    return found


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie counts as gone)."""
    try:
        with open(f'/proc/{pid}/stat') as stat:
            return stat.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (FileNotFoundError, ProcessLookupError):   # gone, even while being read
        return False


def produce(bootstrap: str, topic: str, items: Iterable[tuple[Any, Any]],
            partition: int | None = None, timestamp_ms: int | None = None,
            encode: Callable[[Any], bytes | None] | None = None) -> int:
    """Send ``(key, value)`` pairs (keys as UTF-8 text or bytes, values as JSON unless
    ``encode`` says otherwise), wait until all are written; returns how many."""
    encode = encode or (lambda value: json.dumps(value).encode())
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks='all', linger_ms=20,
                             batch_size=512 * 1024)
    sent = 0
    try:
        for key, value in items:
            raw_key = key if key is None or isinstance(key, bytes) else str(key).encode()
            producer.send(topic, key=raw_key, value=encode(value), partition=partition,
                          timestamp_ms=timestamp_ms)
            sent += 1
        producer.flush(600)
    finally:
        producer.close(10)
    return sent


def consume(bootstrap: str, topic: str, count: int = 0, timeout: float = 60,
            until: Callable[[list], bool] | None = None) -> list:
    """Read ``topic`` from the start until ``until(records)`` holds (default: ``count`` records)."""
    done = until or (lambda found: len(found) >= count)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset='earliest',
                             enable_auto_commit=False, group_id=None)
    try:
        partitions = wait_for(lambda: consumer.partitions_for_topic(topic), 30,
                              f'metadata of {topic}')
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        consumer.seek_to_beginning()
        found: list = []
        deadline = time.monotonic() + timeout
        while not done(found) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                found.extend(batch)
        return found
    finally:
        consumer.close()


def consume_committed(bootstrap: str, topic: str, timeout: float = 60) -> list:
    """Every record of ``topic`` a ``read_committed`` consumer sees, read up to the end
    (the last stable offset of each partition; commit markers are skipped)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset='earliest',
                             enable_auto_commit=False, group_id=None,
                             isolation_level='read_committed')
    try:
        numbers = wait_for(lambda: consumer.partitions_for_topic(topic), 30, f'{topic} metadata')
        partitions = [TopicPartition(topic, n) for n in numbers]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(partitions)
        found: list = []

        def read() -> bool:
            for batch in consumer.poll(timeout_ms=200).values():
                found.extend(batch)
            return all(consumer.position(tp) >= ends[tp] for tp in partitions)
        wait_for(read, timeout, f'the committed records of {topic}', interval=0)
        return found
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The end offset of every partition of ``topic``."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        numbers = wait_for(lambda: consumer.partitions_for_topic(topic), 30, f'{topic} metadata')
        ends = consumer.end_offsets([TopicPartition(topic, n) for n in numbers])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        consumer.close()


def committed(admin: KafkaAdminClient, group: str, topic: str) -> dict[int, int]:
    """Committed offsets of ``group`` for ``topic``, by partition number."""
    offsets = admin.list_group_offsets(group).get(group, {})
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
