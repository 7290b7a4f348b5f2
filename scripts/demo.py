#!/usr/bin/env python3
"""The demo: word count on a local Kafka, two worker slots, counts read over HTTP.

Starts a single-node Apache Kafka on free loopback ports (or uses
$KAFKA_BOOTSTRAP_SERVERS), runs examples/wordcount.py with ``--workers 2``,
sends a few sentences with ``runner send``, prints every word's count as the
slots' table endpoint reports it, and stops everything.
"""

import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'scripts')]

import kafka_broker  # lives beside this script

from runner.progress import Waiting
from runner.runtime.web import get_json

SENTENCES = [
    'the quick brown fox jumps over the lazy dog',
    'the dog barks and the fox runs',
    'a stream of words is counted word by word',
    'every slot answers for every word',
]


def main() -> int:
    bootstrap = os.environ.get('KAFKA_BOOTSTRAP_SERVERS')
    if bootstrap:
        return run_demo(bootstrap)
    print('starting a local Kafka broker (the first run downloads its jars with Maven)...')
    with kafka_broker.Broker() as broker:
        return run_demo(broker.bootstrap_servers)


def run_demo(bootstrap: str) -> int:
    port = kafka_broker.free_port(2)
    with tempfile.TemporaryDirectory(prefix='runner-demo-') as scratch:
        worker = start_worker(bootstrap, port, Path(scratch))
        try:
            wait_until(lambda: all(ready(port + i) for i in range(2)), 120, 'both slots ready')
            print(f'two slots ready on ports {port} and {port + 1}; sending sentences')
            words = collections.Counter(w for s in SENTENCES for w in s.split())
            truth = earlier_counts(port, words) + words
            for sentence in SENTENCES:
                runner('-A', 'wordcount', '-b', bootstrap, 'send', 'sentences', sentence)
            wait_until(lambda: all(count(port, w)[0] == n for w, n in truth.items()), 60,
                       'the counts')
            print_counts(port, truth)
        finally:
            worker.terminate()
            wait_until(lambda: worker.poll() is not None, 60, 'the worker to stop')
    return 0


def start_worker(bootstrap: str, port: int, scratch: Path) -> subprocess.Popen:
    log = open(scratch / 'worker.log', 'w')  # noqa: SIM115 - lives as long as the worker
    return subprocess.Popen(
        [sys.executable, str(REPO / 'runner.py'), '-A', 'wordcount', '-b', bootstrap,
         '--workers', '2', '-p', str(port), '-D', str(scratch / 'data'), '-l', 'warning'],
        cwd=REPO / 'examples', stdout=log, stderr=subprocess.STDOUT)


def runner(*args: str) -> str:
    return subprocess.run([sys.executable, str(REPO / 'runner.py'), *args], cwd=REPO / 'examples',
                          check=True, capture_output=True, text=True).stdout


def print_counts(port: int, truth: collections.Counter) -> None:
    print(f'\n{"word":<10} {"count":>5}  served by (asked slot 0 on port {port})')
    for word in sorted(truth, key=lambda w: (-truth[w], w)):
        value, served_by = count(port, word)
        print(f'{word:<10} {value:>5}  {served_by}')


def earlier_counts(port: int, words: collections.Counter) -> collections.Counter:
    """The counts the table already holds: a broker given by $KAFKA_BOOTSTRAP_SERVERS may
    keep those of an earlier demo, and this run's words add to them."""
    earlier = collections.Counter({word: count(port, word)[0] for word in words})
    if +earlier:
        print('the broker holds the counts of an earlier demo: these sentences add to them')
    return earlier


def count(port: int, word: str) -> tuple[int, str]:
    """A word's count and which slot answered (slot 0 forwards keys it does not own)."""
    body = get(port, f'/tables/counts/{word}') or {}
    return body.get('value', 0), f"slot {body.get('slot', '?')} ({body.get('served_by', '-')})"


def ready(port: int) -> bool:
    return bool((get(port, '/ready') or {}).get('ready'))


def get(port: int, path: str) -> dict | None:
    return get_json(f'http://127.0.0.1:{port}{path}', timeout=5)[1]


def wait_until(condition, timeout: float, what: str) -> None:
    """Wait for ``condition``, saying so (a progress line on a terminal, else plain lines)."""
    deadline = time.monotonic() + timeout
    with Waiting() as waiting:
        while not condition():
            if time.monotonic() > deadline:
                raise SystemExit(f'demo: timed out waiting for {what}')
            waiting.say(what)
            time.sleep(0.1)


if __name__ == '__main__':
    sys.exit(main())
