"""Rebalances under a steady load: how long partitions stall, how often the group
rebalances, and whether anything is lost — with runner's defaults and with eager
assignment and dynamic membership (the situation before static membership, the
cooperative sticky assignor and warm handovers), side by side in one run.

    python bench/rebalance.py [--changelog-records N] [--quick] [--only SCENARIO ...]
                              [--warmup S] [--after S] [--chart PNG] [--keep DIR]

Every scenario runs once per config, each time with a fresh app (its own source topic,
consumer group, changelog and data directories):

1. rolling: ``HUP`` to the main process of a worker with two slots (``-w 2``);
2. join-leave: a second worker (a ``runner.py`` process of its own, own data directory
   and web port) joins the two-slot worker, then leaves for good (``TERM`` to it);
3. kill: one slot of the two-slot worker is killed with ``KILL`` (its main process
   starts it again);
4. big-join: the table's changelog is filled directly with N (1 M) records, each in
   its key's murmur2 partition; a one-slot worker restores it cold, then the load
   runs, then a second worker joins.

The load: a producer thread sends 400 records a second, 64 keys in turn (16 keys in
each of the 4 partitions, so every partition gets 100 records a second), value = a
sequence number.  The app counts records per key in a table; its agent also appends
``time partition offset`` to a file of its process (the probe) for every record.

From the probe: for every partition, the times at which it made *progress* (an offset
processed for the first time; records processed again after a crash do not count),
and so its longest gap between two progresses within a window (a window runs from an
event to at least ``--after`` seconds later, or 5 s after the scenario settled,
whichever is later; the gap across the window's start and up to its end counts).
Reported: the longest and the median of those per-partition stalls, the longest
among partitions whose processing process did not change (a join), and how soon the
leaving worker's partitions were processed by another process.  Rebalances: the
``rebalance to generation N`` lines every slot logs, within the window: how many new
generations (group rebalances), how many lines (member rebalances) and how many
partitions were revoked.  Lost: every key's count (``GET /tables/counts/KEY``)
against what the producer had acknowledged, below it lost, above it duplicated (at
least once); and every offset of the source topic the probe never saw.

Benchmarks print, never assert.  The chart (matplotlib, ``pip install -e '.[bench]'``)
shows records processed per second through each scenario for both configs.

Uses ``$KAFKA_BOOTSTRAP_SERVERS`` if set, else starts a broker of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

from common import (
    BENCH,
    REPO,
    Load,
    Worker,
    create_topic,
    delete_run_topics,
    emit_json,
    end_offsets,
    kafka_bootstrap,
    murmur2_partition,
    progress,
    run_id,
    run_main,
    say,
    scratch_dir,
    wait_for,
    write_app,
)
from kafka import KafkaAdminClient, KafkaProducer

PARTITIONS = 4
KEYS = 64
RATE = 400
#: After a scenario has settled, the window goes on at least this long.
SETTLED_MARGIN = 5.0
#: How long a scenario may take to settle before it is reported as not settled.
SETTLE_TIMEOUT = 120.0
#: Width of the chart's rate bins, seconds.
BIN = 0.5

APP_SOURCE = '''\
import os
import time

import runner

app = runner.App({app!r})
source = app.topic({topic!r}, partitions={partitions})
counts = app.Table('counts', default=int, partitions={partitions})
PROBE = {probe!r}


@app.agent(source)
def count(stream):
    probe = os.open(f'{{PROBE}}/{{os.getpid()}}', os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for event in stream.events():
        counts[event.key] += 1
        os.write(probe, f'{{time.time():.6f}} {{event.partition}} {{event.offset}}\\n'.encode())
'''


@dataclass(frozen=True)
class Config:
    name: str
    slug: str
    settings: dict[str, Any]
    #: the checkout of runner whose ``runner.py`` the workers run
    repo: Path = REPO


CONFIGS = (Config('defaults', 'defaults', {}),
           Config('eager+dynamic', 'eager', {'assignor': 'eager', 'static_membership': False}))

TITLES = {'rolling': '1. rolling restart (HUP, -w 2)',
          'join-leave': '2. a second worker joins, then leaves (TERM)',
          'kill': '3. a slot killed (KILL, -w 2)',
          'big-join': '4. a worker joins a table of {records:,} records'}


def title(scenario: str, records: int) -> str:
    return TITLES[scenario].format(records=records)


# -- the load ----------------------------------------------------------------------------


def load_keys() -> list[str]:
    """64 keys, 16 in each partition (murmur2, as the producer places them)."""
    per_partition: Counter[int] = Counter()
    keys, number = [], 0
    while len(keys) < KEYS:
        key = f'key-{number}'
        partition = murmur2_partition(key.encode(), PARTITIONS)
        if per_partition[partition] < KEYS // PARTITIONS:
            per_partition[partition] += 1
            keys.append(key)
        number += 1
    return keys


def fill_changelog(bootstrap: str, changelog: str, count: int) -> float:
    """Write ``k0000000 → 1`` ... straight into the changelog, each key in its murmur2
    partition; returns the seconds taken (checked against the end offsets)."""
    began = time.monotonic()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks='all', linger_ms=50,
                             batch_size=512 * 1024)
    try:
        for number in range(count):
            key = f'k{number:07d}'.encode()
            producer.send(changelog, key=key, value=b'1',
                          partition=murmur2_partition(key, PARTITIONS))
        producer.flush(600)
    finally:
        producer.close(10)
    seconds = time.monotonic() - began
    written = sum(end_offsets(bootstrap, changelog).values())
    if written != count:
        raise RuntimeError(f'{changelog} holds {written} records, expected {count}')
    return seconds


# -- one scenario under one config -------------------------------------------------------


@dataclass
class Window:
    """A stretch of a run measured on its own: from an event until things settled."""

    label: str
    start: float
    end: float = 0.0
    #: pids whose partitions are to be taken over by others (a worker leaving)
    leaving: set[int] = field(default_factory=set)


class Run:
    """One scenario under one config: its app, topics, workers, load and what happened."""

    def __init__(self, args: argparse.Namespace, bootstrap: str, root: Path, tag: str,
                 scenario: str, config: Config) -> None:
        self.args, self.bootstrap, self.config, self.scenario = args, bootstrap, config, scenario
        self.app = f'bench-rebalance-{tag}-{scenario}-{config.slug}'
        self.topic = f'{self.app}-source'
        self.changelog = f'{self.app}-counts-changelog'
        self.dir = root / f'{scenario}-{config.slug}'
        self.probe_dir = self.dir / 'probe'
        self.probe_dir.mkdir(parents=True)
        self.module = write_app(self.dir, APP_SOURCE.format(
            app=self.app, topic=self.topic, partitions=PARTITIONS, probe=str(self.probe_dir)),
            'rebalanceapp')
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            create_topic(admin, self.topic, PARTITIONS)
        finally:
            admin.close()
        self.workers: list[Worker] = []
        self.windows: list[Window] = []
        self.notes: dict[str, Any] = {}
        self.problems: list[str] = []
        self.load = Load(bootstrap, self.topic, load_keys(), RATE)

    def start_worker(self, name: str, slots: int = 1) -> Worker:
        extra = ['-w', str(slots)]
        if self.config.settings:
            path = self.dir / 'settings.yaml'
            path.write_text(''.join(f'{key}: {json.dumps(value)}\n'
                                    for key, value in self.config.settings.items()))
            extra += ['-c', str(path)]
        worker = Worker.for_app(self.dir, self.module, self.bootstrap, name, extra=extra,
                                repo=self.config.repo)
        self.workers.append(worker)
        return worker

    def warm_up(self) -> None:
        self.load.start()
        time.sleep(self.args.warmup)

    def event(self, label: str, **kwargs: Any) -> Window:
        window = Window(label, time.time(), **kwargs)
        self.windows.append(window)
        return window

    def settle(self, window: Window, condition: Callable[[], Any], what: str) -> Any:
        """Wait for ``condition`` (noting a timeout as a problem), then close the window
        ``--after`` seconds after its start or 5 s after settling, whichever is later."""
        try:
            result = wait_for(condition, SETTLE_TIMEOUT, what, interval=0.1)
        except TimeoutError as exc:
            self.problems.append(f'{window.label}: {exc}')
            result = None
        settled = time.time()
        self.notes[f'{window.label}_settled_after_s'] = round(settled - window.start, 2)
        _sleep_until(max(window.start + self.args.after, settled + SETTLED_MARGIN))
        window.end = time.time()
        return result

    def live_workers(self) -> list[Worker]:
        return [worker for worker in self.workers if worker.proc.poll() is None]

    def logs(self) -> list[str]:
        return [worker.log() for worker in self.workers]

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def assignments(worker: Worker, slots: int) -> list[list[str]] | None:
    """Each slot's partitions if every slot answers and is ready, else None."""
    states = [worker.state(slot) for slot in range(slots)]
    if all(state and state['ready'] for state in states):
        return [sorted(state['assignment']) for state in states]
    return None


def shared_by(members: list[tuple[Worker, int]]) -> bool:
    """Every member (worker, slot) is ready, owns partitions, and together they own all."""
    states = [worker.state(slot) for worker, slot in members]
    if not all(state and state['ready'] and state['assignment'] for state in states):
        return False
    return sum(len(state['assignment']) for state in states) == PARTITIONS


# -- the scenarios -----------------------------------------------------------------------


def rolling_restart(run: Run) -> None:
    worker = run.start_worker('w', slots=2)
    worker.split_between(2)
    run.warm_up()
    before = assignments(worker, 2)
    done = worker.log().count('rolling restart done')
    window = run.event('rolling')
    worker.signal(signal.SIGHUP)
    run.settle(window, lambda: worker.log().count('rolling restart done') > done
               and assignments(worker, 2), 'the rolling restart')
    after = assignments(worker, 2)
    run.notes.update(assignment_before=before, assignment_after=after,
                     own_partitions_back=before is not None and before == after)


def join_then_leave(run: Run) -> None:
    first = run.start_worker('first', slots=2)
    first.split_between(2)
    run.warm_up()
    join = run.event('join')
    second = run.start_worker('second')
    run.settle(join, lambda: shared_by([(first, 0), (first, 1), (second, 0)]),
               'the second worker to own partitions')
    run.notes['join_caught_up_after_s'] = caught_up_after(second, join)
    state = second.state() or {}
    leave = run.event('leave', leaving={state.get('pid', -1)})
    code, seconds = second.stop()
    run.notes.update(leaving_exit_code=code, leaving_stop_s=round(seconds, 2),
                     leaving_assignment=state.get('assignment'))
    run.settle(leave, lambda: shared_by([(first, 0), (first, 1)]),
               'the first worker to own every partition again')


def kill_a_slot(run: Run) -> None:
    worker = run.start_worker('w', slots=2)
    pids = worker.split_between(2)
    run.warm_up()
    window = run.event('kill')
    os.kill(pids[1], signal.SIGKILL)

    def back() -> bool:
        state = worker.state(1)
        return bool(state and state['pid'] != pids[1]) and shared_by([(worker, 0), (worker, 1)])
    run.settle(window, back, 'the killed slot to be back')


def join_big_table(run: Run) -> None:
    admin = KafkaAdminClient(bootstrap_servers=run.bootstrap)
    try:
        create_topic(admin, run.changelog, PARTITIONS, {'cleanup.policy': 'compact'})
    finally:
        admin.close()
    records = run.args.changelog_records
    progress(f'  writing {records:,} records to the changelog ...')
    run.notes['fill_s'] = round(fill_changelog(run.bootstrap, run.changelog, records), 1)
    progress(f'  written in {run.notes["fill_s"]}s; cold restore ...')
    first = run.start_worker('first')
    run.notes['cold_restore_ready_s'] = round(first.wait_ready(max(300.0, records / 2000)), 1)
    run.warm_up()
    join = run.event('join')
    second = run.start_worker('second')
    run.settle(join, lambda: shared_by([(first, 0), (second, 0)]),
               'the second worker to own partitions')
    run.notes['join_caught_up_after_s'] = caught_up_after(second, join)
    run.notes['second_restored'] = sum(count for _, _, count, _ in second.recoveries())


SCENARIOS: dict[str, Callable[[Run], None]] = {
    'rolling': rolling_restart, 'join-leave': join_then_leave, 'kill': kill_a_slot,
    'big-join': join_big_table}


# -- what the probe saw ------------------------------------------------------------------


class Processed(NamedTuple):
    time: float
    partition: int
    offset: int
    pid: int


def read_probe(directory: Path) -> list[Processed]:
    """Every record processed, by every process, in time order."""
    found = []
    for path in directory.iterdir():
        pid = int(path.name)
        for line in path.read_text().splitlines():
            moment, partition, offset = line.split()
            found.append(Processed(float(moment), int(partition), int(offset), pid))
    return sorted(found)


def progresses(processed: list[Processed]) -> dict[int, list[Processed]]:
    """Per partition, the records processed for the first time (offsets beyond any seen)."""
    highest: dict[int, int] = defaultdict(lambda: -1)
    found: dict[int, list[Processed]] = defaultdict(list)
    for record in processed:
        if record.offset > highest[record.partition]:
            highest[record.partition] = record.offset
            found[record.partition].append(record)
    return found


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest time without progress between ``start`` and ``end`` (the gap around
    ``start`` counted from the last progress before it)."""
    before = [t for t in times if t < start]
    inside = [t for t in times if start <= t <= end]
    points = [before[-1] if before else start, *inside, end]
    return max(later - earlier for earlier, later in pairwise(points))


def owner_at(records: list[Processed], moment: float) -> int | None:
    """The pid that made the last progress before ``moment``."""
    owner = None
    for record in records:
        if record.time > moment:
            break
        owner = record.pid
    return owner


def back_within(records: list[Processed], window: Window) -> float | None:
    """Seconds from the window's start until a process other than the leaving one made
    progress on a partition the leaving one had; None if it was not the leaving one's."""
    if owner_at(records, window.start) not in window.leaving:
        return None
    for record in records:
        if record.time > window.start and record.pid not in window.leaving:
            return round(record.time - window.start, 3)
    return float('inf')


def stalls(found: dict[int, list[Processed]], window: Window) -> dict[str, Any]:
    """The per-partition longest stalls of a window and what they say."""
    gaps = {p: longest_gap([r.time for r in found.get(p, [])], window.start, window.end)
            for p in range(PARTITIONS)}
    moved = [p for p in range(PARTITIONS)
             if owner_at(found.get(p, []), window.start) != owner_at(found.get(p, []), window.end)]
    staying = [gaps[p] for p in range(PARTITIONS) if p not in moved]
    result = {'longest_stall_s': round(max(gaps.values()), 3),
              'median_stall_s': round(statistics.median(gaps.values()), 3),
              'stall_by_partition_s': {p: round(gap, 3) for p, gap in gaps.items()},
              'moved': moved,
              'longest_stall_staying_s': round(max(staying), 3) if staying else None}
    if window.leaving:
        backs = [back_within(found.get(p, []), window) for p in range(PARTITIONS)]
        known = [back for back in backs if back is not None]
        result['leaving_partitions_back_within_s'] = max(known) if known else None
    return result


def baseline_gap(found: dict[int, list[Processed]], start: float, end: float) -> float:
    """The longest per-partition gap in the warm-up, after its first 2 s: the normal."""
    return round(max(longest_gap([r.time for r in found.get(p, [])], start + 2, end)
                     for p in range(PARTITIONS)), 3)


def offsets_seen(processed: list[Processed], ends: dict[int, int]) -> dict[str, int]:
    """Offsets of the source topic never processed, and records processed more than once."""
    seen: dict[int, set[int]] = defaultdict(set)
    for record in processed:
        seen[record.partition].add(record.offset)
    never = sum(len(set(range(end)) - seen[p]) for p, end in ends.items())
    return {'never_processed': never,
            'reprocessed': len(processed) - sum(len(offsets) for offsets in seen.values())}


def rate_series(processed: list[Processed], zero: float, start: float,
                end: float) -> list[tuple[float, float]]:
    """Records processed per second, in bins of ``BIN`` s, times relative to ``zero``."""
    bins: Counter[int] = Counter(int((r.time - start) // BIN) for r in processed
                                 if start <= r.time < end)
    return [(round(start + n * BIN - zero, 2), bins[n] / BIN)
            for n in range(int((end - start) // BIN))]


# -- what the logs say -------------------------------------------------------------------


REBALANCE = re.compile(r'^\[(\S+ \S+),(\d+)\] \[(\d+)\] \[slot \d+\] INFO runner\.runtime\.consumer: '
                       r'rebalance to generation (\d+): revoked (.*?)(?: \(handed over in \S+\))?, '
                       r'assigned (.*?), kept', re.MULTILINE)

CAUGHT_UP = re.compile(r'^\[(\S+ \S+),(\d+)\] .* caught up on \d+ task', re.MULTILINE)


class Rebalance(NamedTuple):
    time: float
    pid: int
    generation: int
    revoked: int


def rebalances(logs: list[str]) -> list[Rebalance]:
    """Every ``rebalance to generation N`` line of the workers' logs."""
    def count(partitions: str) -> int:
        return 0 if partitions == 'none' else partitions.count(', ') + 1
    return [Rebalance(_log_time(m[1], m[2]), int(m[3]), int(m[4]), count(m[5]))
            for log in logs for m in REBALANCE.finditer(log)]


def rebalances_in(lines: list[Rebalance], window: Window) -> dict[str, int | None]:
    """Group rebalances (new generations), member rebalances (lines) and revoked
    partitions within a window (None for a runner that does not log its rebalances so)."""
    if not lines:
        return dict.fromkeys(('group_rebalances', 'member_rebalances', 'partitions_revoked'))
    known = max((line.generation for line in lines if line.time < window.start), default=-1)
    inside = [line for line in lines if window.start <= line.time <= window.end]
    return {'group_rebalances': len({line.generation for line in inside
                                     if line.generation > known}),
            'member_rebalances': len(inside),
            'partitions_revoked': sum(line.revoked for line in inside)}


def caught_up_after(worker: Worker, window: Window) -> float | None:
    """Seconds from the window's start until the worker said it had caught up on tasks
    to take over (warmed up), or None if it never did."""
    found = CAUGHT_UP.search(worker.log())
    return round(_log_time(found[1], found[2]) - window.start, 2) if found else None


def _log_time(stamp: str, millis: str) -> float:
    return time.mktime(time.strptime(stamp, '%Y-%m-%d %H:%M:%S')) + int(millis) / 1000


# -- finishing a run ---------------------------------------------------------------------


def finish(run: Run) -> dict[str, Any]:
    """Stop the load, wait for every record to be processed, check the counts, stop the
    workers; returns every number of the run."""
    run.load.stop()
    ends = end_offsets(run.bootstrap, run.topic)
    try:
        wait_for(lambda: all_processed(run.probe_dir, ends), 90, 'every record to be processed',
                 interval=0.2)
    except TimeoutError as exc:
        run.problems.append(str(exc))
    counts = table_errors(run)
    exits = stop_all(run)
    processed = read_probe(run.probe_dir)
    found = progresses(processed)
    lines = rebalances(run.logs())
    windows = {window.label: {**stalls(found, window), **rebalances_in(lines, window),
                              'start': window.start, 'end': window.end}
               for window in run.windows}
    first = run.windows[0].start
    return {'scenario': run.scenario, 'config': run.config.name, 'windows': windows,
            'baseline_gap_s': baseline_gap(found, run.load.started, first),
            'produced': sum(run.load.truth.values()), 'produce_failures': run.load.failed,
            **counts, **offsets_seen(processed, ends), 'exit_codes': exits,
            'notes': run.notes, 'problems': run.problems,
            'rates': rate_series(processed, first, run.load.started, run.windows[-1].end)}


def all_processed(probe_dir: Path, ends: dict[int, int]) -> bool:
    highest: dict[int, int] = defaultdict(lambda: -1)
    for record in read_probe(probe_dir):
        highest[record.partition] = max(highest[record.partition], record.offset)
    return all(highest[p] >= end - 1 for p, end in ends.items())


def table_errors(run: Run) -> dict[str, int]:
    """Counts below the truth (lost) and above it (duplicated), read over HTTP; a count
    that differs is read again for up to 10 s (a write may still be on its way)."""
    truth = run.load.truth
    found: dict[str, int | None] = {}
    deadline = time.monotonic() + 10
    while True:
        found = {key: read_count(run, key) if found.get(key) != count else count
                 for key, count in truth.items()}
        if all(found[key] == count for key, count in truth.items()) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    unanswered = [key for key, value in found.items() if value is None]
    if unanswered:
        run.problems.append(f'no answer for the counts of {len(unanswered)} keys')
    return {'lost': sum(max(0, count - (found[key] or 0)) for key, count in truth.items()
                        if found[key] is not None),
            'duplicated': sum(max(0, (found[key] or 0) - count) for key, count in truth.items()),
            'unanswered_keys': len(unanswered)}


def read_count(run: Run, key: str) -> int | None:
    """``GET /tables/counts/KEY`` on any live worker (retried while it answers 503)."""
    for _ in range(20):
        for worker in run.live_workers():
            status, body = worker.get(f'/tables/counts/{key}')
            if status == 200:
                return body['value']
            if status == 404:
                return 0
        time.sleep(0.25)
    return None


def stop_all(run: Run) -> dict[str, int | None]:
    """TERM to every live worker at once; their exit codes."""
    live = run.live_workers()
    for worker in live:
        worker.signal(signal.SIGTERM)
    codes: dict[str, int | None] = {}
    for worker in run.workers:
        try:
            codes[worker.log_path.stem] = worker.wait(60) if worker in live else \
                worker.proc.returncode
        except Exception:   # noqa: BLE001 - a worker that does not stop is reported, then killed
            codes[worker.log_path.stem] = None
    for name, code in codes.items():
        if code != 0:
            run.problems.append(f'worker {name} exited with {code}')
    return codes


# -- the whole benchmark -----------------------------------------------------------------


def run_one(args: argparse.Namespace, bootstrap: str, root: Path, tag: str, scenario: str,
            config: Config) -> dict[str, Any]:
    run = Run(args, bootstrap, root, tag, scenario, config)
    began = time.monotonic()
    try:
        SCENARIOS[scenario](run)
        result = finish(run)
    except BaseException:
        for worker in run.workers:
            progress(f'--- last lines of {worker.log_path} ---\n{worker.log_tail()}')
        raise
    finally:
        run.load.stop()
        run.close()
    result['seconds'] = round(time.monotonic() - began, 1)
    return result


@contextmanager
def run_directory(keep: Path | None) -> Iterator[Path]:
    """Where the runs' logs and probes go: ``--keep DIR`` (kept), else a temporary one."""
    if keep is None:
        with scratch_dir('bench-rebalance-') as path:
            yield path
        return
    if keep.exists():
        shutil.rmtree(keep)
    keep.mkdir(parents=True)
    yield keep


def benchmark(args: argparse.Namespace) -> None:
    pyplot = require_matplotlib()
    tag = run_id()
    began = time.monotonic()
    results: list[dict[str, Any]] = []
    with kafka_bootstrap() as bootstrap, run_directory(args.keep) as root:
        try:
            for scenario in args.only:
                for config in args.configs:
                    progress(f'{scenario}, {config.name} ...')
                    results.append(run_one(args, bootstrap, root, tag, scenario, config))
        finally:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap)
            delete_run_topics(admin, tag)
            admin.close()
    seconds = round(time.monotonic() - began, 1)
    summarize(args, results, seconds)
    draw(pyplot, results, args.chart, args.changelog_records)
    say(f'chart: {args.chart}')
    emit_json('rebalance', {'keys': KEYS, 'rate': RATE, 'partitions': PARTITIONS,
                            'warmup_s': args.warmup, 'after_s': args.after,
                            'changelog_records': args.changelog_records,
                            'configs': [c.name for c in args.configs],
                            'total_s': seconds, 'runs': results})


def require_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("bench/rebalance.py needs matplotlib for its chart: "
                         "pip install -e '.[bench]' (or pip install matplotlib)") from None
    matplotlib.use('Agg')
    from matplotlib import pyplot
    return pyplot


# -- reporting ---------------------------------------------------------------------------


def summarize(args: argparse.Namespace, results: list[dict[str, Any]], seconds: float) -> None:
    say(f'rebalance: {KEYS} keys, {RATE} records/s, {PARTITIONS} partitions; warm-up '
        f'{args.warmup:g}s, windows of at least {args.after:g}s; {seconds:.0f}s in all')
    by_scenario: dict[str, dict[str, dict]] = defaultdict(dict)
    for result in results:
        by_scenario[result['scenario']][result['config']] = result
    for scenario, runs in by_scenario.items():
        say('')
        widths = [max(16, len(config.name) + 2) for config in args.configs]
        say(f'{title(scenario, args.changelog_records):<48}'
            + ''.join(f'{c.name:>{w}}' for c, w in zip(args.configs, widths, strict=True))
            + '   target')
        for label, values, target in rows(scenario, [runs.get(c.name) for c in args.configs]):
            say(f'  {label:<46}'
                + ''.join(f'{value:>{w}}' for value, w in zip(values, widths, strict=True))
                + (f'   {target}' if target else ''))
        for config, run in runs.items():
            for problem in run['problems']:
                say(f'  PROBLEM ({config}): {problem}')


Row = tuple[str, list[str], str]


def rows(scenario: str, runs: list[dict | None]) -> list[Row]:
    """The summary's lines for one scenario, one column per config."""
    def each(pick: Callable[[dict], Any]) -> list[str]:
        return [_text(pick(run)) if run else '-' for run in runs]
    found: list[Row] = []
    for label in _window_labels(runs):
        def win(run: dict, label: str = label) -> dict:
            return run['windows'].get(label, {})
        prefix = f'{label}: ' if len(_window_labels(runs)) > 1 else ''
        found += [
            (f'{prefix}group / member rebalances', each(
                lambda r, w=win: f'{_text(w(r).get("group_rebalances"))} / '
                                 f'{_text(w(r).get("member_rebalances"))}'), ''),
            (f'{prefix}partitions revoked', each(lambda r, w=win: w(r).get('partitions_revoked')),
             ''),
            (f'{prefix}longest / median stall (s)', each(
                lambda r, w=win: f'{_text(w(r).get("longest_stall_s"))} / '
                                 f'{_text(w(r).get("median_stall_s"))}'),
             _target(scenario, label, 'longest')),
        ]
        if label == 'join':
            found.append((f'{prefix}longest stall, partitions that stay (s)',
                          each(lambda r, w=win: w(r).get('longest_stall_staying_s')),
                          '<= 0.5' if scenario == 'join-leave' else ''))
        if label == 'leave':
            found.append((f'{prefix}its partitions processed again after (s)',
                          each(lambda r, w=win: w(r).get('leaving_partitions_back_within_s')),
                          '<= 5'))
        if label == 'join':
            found.append((f'{prefix}newcomer warmed up after (s)', each(
                lambda r: r['notes'].get('join_caught_up_after_s')), ''))
        found.append((f'{prefix}settled after (s)',
                      each(lambda r, label=label: r['notes'].get(f'{label}_settled_after_s')), ''))
    if scenario == 'rolling':
        found.append(('each slot got its own partitions back',
                      each(lambda r: 'yes' if r['notes'].get('own_partitions_back') else 'no'),
                      'yes'))
    if scenario == 'big-join':
        found += [('changelog fill (s)', each(lambda r: r['notes'].get('fill_s')), ''),
                  ('cold restore, start to ready (s)',
                   each(lambda r: r['notes'].get('cold_restore_ready_s')), ''),
                  ('records the newcomer recovered on takeover', each(
                      lambda r: r['notes'].get('second_restored')), '')]
    found += [
        ('normal longest gap, warm-up (s)', each(lambda r: r['baseline_gap_s']), ''),
        ('lost / duplicated counts (table)', each(lambda r: f'{r["lost"]} / {r["duplicated"]}'),
         '0 lost'),
        ('offsets never processed / reprocessed', each(
            lambda r: f'{r["never_processed"]} / {r["reprocessed"]}'), '0 never'),
        ('problems', each(lambda r: len(r['problems'])), '0'),
    ]
    return found


def _window_labels(runs: list[dict | None]) -> list[str]:
    for run in runs:
        if run:
            return list(run['windows'])
    return []


def _target(scenario: str, label: str, what: str) -> str:
    return {('rolling', 'rolling'): 'longest <= 1.5',
            ('big-join', 'join'): 'longest <= 2'}.get((scenario, label), '')


def _text(value: Any) -> str:
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:.2f}'
    return str(value)


def draw(pyplot: Any, results: list[dict[str, Any]], path: Path, records: int) -> None:
    """Records processed per second through each scenario, one line per config."""
    scenarios = list(dict.fromkeys(result['scenario'] for result in results))
    figure, axes = pyplot.subplots(len(scenarios), 1, figsize=(9, 2.6 * len(scenarios)),
                                   squeeze=False)
    for axis, scenario in zip(axes[:, 0], scenarios):
        for result in results:
            if result['scenario'] != scenario:
                continue
            xs, ys = zip(*result['rates'], strict=True) if result['rates'] else ((), ())
            line, = axis.plot(xs, ys, label=result['config'], linewidth=1)
            zero = min(window['start'] for window in result['windows'].values())
            for window in result['windows'].values():
                axis.axvline(window['start'] - zero, color=line.get_color(), linestyle=':',
                             linewidth=0.8)
        axis.set_title(title(scenario, records), fontsize=9, loc='left')
        axis.set_ylabel('records/s', fontsize=8)
        axis.set_ylim(0, 2 * RATE)
        axis.tick_params(labelsize=7)
        axis.legend(fontsize=7, loc='lower left')
    axes[-1, 0].set_xlabel(f'seconds since the event (dotted: events; {BIN:g} s bins; catch-up '
                           f'bursts above {2 * RATE}/s cut off)', fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)


def compared(checkout: Path) -> Config:
    """Another checkout of runner, run with its defaults, named by its commit."""
    found = subprocess.run(['git', '-C', str(checkout), 'rev-parse', '--short', 'HEAD'],
                           capture_output=True, text=True, check=False).stdout.strip()
    return Config(f'before {found or checkout.name}', 'before', {}, checkout.resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--changelog-records', type=int, default=None,
                        help='records in the changelog of scenario big-join (1000000; '
                             '100000 with --quick)')
    parser.add_argument('--warmup', type=float, default=None,
                        help='seconds of load before each event (10; 5 with --quick)')
    parser.add_argument('--after', type=float, default=None,
                        help='seconds each window lasts at least (20; 12 with --quick)')
    parser.add_argument('--quick', action='store_true', help='shorter windows, smaller table')
    parser.add_argument('--only', nargs='+', choices=list(SCENARIOS), default=list(SCENARIOS),
                        metavar='SCENARIO', help=f'run only these ({", ".join(SCENARIOS)})')
    parser.add_argument('--chart', type=Path, default=BENCH / 'rebalance.png',
                        help='where the PNG goes (bench/rebalance.png)')
    parser.add_argument('--compare', type=Path, default=None, metavar='CHECKOUT',
                        help='also run another checkout of runner (an earlier commit), with '
                             'its defaults, as a third column')
    parser.add_argument('--keep', type=Path, default=None,
                        help='keep the workers\' logs and probe files in this directory '
                             '(emptied first)')
    args = parser.parse_args()
    quick = args.quick
    args.changelog_records = args.changelog_records or (100_000 if quick else 1_000_000)
    args.warmup = args.warmup if args.warmup is not None else (5.0 if quick else 10.0)
    args.after = args.after if args.after is not None else (12.0 if quick else 20.0)
    args.configs = CONFIGS + ((compared(args.compare),) if args.compare else ())
    benchmark(args)


if __name__ == '__main__':
    raise SystemExit(run_main(main))
