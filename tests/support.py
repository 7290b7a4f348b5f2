"""Helpers for tests that run real worker processes against the real broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka_broker import free_port

from runner.control import wait_until
from runner.web import get_json

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / 'runner.py'


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05):
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    result = wait_until(condition, timeout, interval)
    if not result:
        raise AssertionError(f'timed out after {timeout}s waiting for {what}')
    return result


def write_app(directory: Path, source: str, name: str = 'testapp') -> str:
    """Write an app module into ``directory``; returns the module name."""
    (directory / f'{name}.py').write_text(textwrap.dedent(source))
    return name


def runner_env() -> dict[str, str]:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')]))
    env['PYTHONUNBUFFERED'] = '1'
    return env


def run_cli(args: Iterable[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``python runner.py ARGS`` to completion."""
    return subprocess.run([sys.executable, str(RUNNER), *args], cwd=cwd, env=runner_env(),
                          check=False, capture_output=True, text=True, timeout=timeout)


class Worker:
    """A ``python runner.py ARGS`` process with its log file and web port."""

    def __init__(self, cwd: Path, args: Iterable[str], port: int, name: str = 'w',
                 datadir: Path | None = None) -> None:
        self.port = port
        self.datadir = datadir
        self.log_path = cwd / f'{name}.log'
        self._log = open(self.log_path, 'w')  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen([sys.executable, str(RUNNER), *args], cwd=cwd,
                                     env=runner_env(), stdout=self._log,
                                     stderr=subprocess.STDOUT)

    @classmethod
    def for_app(cls, cwd: Path, app: str, bootstrap: str, name: str = 'w',
                extra: Iterable[str] = ()) -> Worker:
        """A worker of ``app`` on a free port with its own data directory."""
        port, datadir = free_port(count=4), cwd / f'{name}-data'
        args = ['-A', app, '-b', bootstrap, '-p', str(port), '-D', str(datadir), '-l', 'info',
                *extra]
        return cls(cwd, args, port, name, datadir)

    def get(self, path: str) -> tuple[int, Any]:
        """``GET path`` on the worker's web server: (status, JSON body), or (0, None) if down."""
        return get_json(f'http://127.0.0.1:{self.port}{path}', timeout=2)

    def wait_ready(self, timeout: float = 60) -> None:
        wait_for(lambda: self.get('/ready')[0] == 200 or self._exited(), timeout,
                 f'{self.log_path.name} to be ready')
        assert self.proc.poll() is None, f'worker exited early:\n{self.log()}'

    def _exited(self) -> bool:
        return self.proc.poll() is not None

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()


def produce(bootstrap: str, topic: str, items: Iterable[tuple[Any, Any]],
            partition: int | None = None, timestamp_ms: int | None = None,
            encode: Callable[[Any], bytes] | None = None) -> None:
    """Send ``(key, value)`` pairs (str keys, JSON values unless ``encode`` says otherwise)
    and wait until all are written."""
    encode = encode or (lambda value: json.dumps(value).encode())
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks='all', linger_ms=20,
                             batch_size=256 * 1024)
    try:
        for key, value in items:
            producer.send(topic, key=None if key is None else str(key).encode(),
                          value=encode(value), partition=partition, timestamp_ms=timestamp_ms)
        producer.flush(60)
    finally:
        producer.close(5)


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


def committed(admin, group: str, topic: str) -> dict[int, int]:
    """Committed offsets of ``group`` for ``topic``, by partition number."""
    offsets = admin.list_group_offsets(group)[group]
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
