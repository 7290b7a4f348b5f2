"""A chaos soak: a counting app with a table under a steady, acknowledged load, while
slots and the main process are killed with ``KILL`` at random moments and the broker is
restarted once; afterwards every key's total is checked against the truth.

    python bench/soak.py [--guarantee at_least_once|exactly_once|both] [--duration S]
                         [--seed N] [--workers N] [--rate R] [--keys K]
                         [--slot-kills N] [--main-kills N] [--keep DIR]

Each guarantee (both by default, at-least-once first) gets a fresh app on the same broker:

* the app: a source topic of 6 partitions, a table ``counts`` (``counts[key] += 1``), two
  agent threads per slot, runner's defaults otherwise;
* a worker of ``--workers`` slots (3), started with a pidfile;
* the load: a producer thread sends ``--rate`` records a second (200), ``--keys`` keys
  (600) in turn (murmur2 spreads them over the partitions); acks=all, idempotent.  The
  truth is what the broker acknowledged, per key;
* the faults, in an order and at moments drawn from ``--seed``, between 10 % and 85 % of
  the ``--duration`` seconds of load (120):

  - ``KILL`` of a slot (``--slot-kills`` times, 6; the slot number drawn at random): its
    main process starts it again;
  - ``KILL`` of the main process (``--main-kills`` times, 2): the main process is stopped
    (``SIGSTOP``, so it forks nothing more), its children are noted, it gets ``KILL``;
    its slots die with it (``PR_SET_PDEATHSIG``); once every one of them is gone the
    soak starts the same command again, as systemd's ``Restart=always`` would.  A main
    process that exits on its own is started again too (and reported);
  - one broker restart: ``SIGTERM``, down 3 to 6 s, started again on the same ports
    with its data.  The soak waits for it to answer again, so faults due meanwhile
    follow at once.

Then the load stops; the soak waits until every slot answers ``/ready`` and the group's
committed offsets reach the end offsets of the source topic (180 s at most: longer is
reported as a hang), reads every key's total over HTTP (``GET /tables/counts/KEY``,
fresh answers only; a total that is off is read again for a while, in case a write was
on its way), and stops the worker with ``TERM``.

Checked: the source topic holds exactly the acknowledged records (else the truth is
uncertain); no total is below the truth (both guarantees); under exactly-once every
total equals it.  Printed per guarantee: each fault and how often it was injected,
records produced, keys below and above the truth and the surplus; then one JSON line.
Exits 1 if a guarantee was violated or could not be checked; the workers' logs are then
kept (their directory is printed), as with ``--keep``.

Always runs a broker of its own (``scripts/kafka_broker.py``), as it restarts it:
``$KAFKA_BOOTSTRAP_SERVERS`` is not used.  The main thread starts, restarts and stops
the broker (it dies with the thread that started it) and injects the faults; the load
runs on a thread of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from common import (
    Broker,
    Load,
    Worker,
    alive,
    committed,
    create_topic,
    emit_json,
    end_offsets,
    own_broker,
    progress,
    run_id,
    run_main,
    say,
    wait_for,
    write_app,
)
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from runner.main.control import status_path
from runner.platform import children

GUARANTEES = ('at_least_once', 'exactly_once')
PARTITIONS = 6
#: The broker is down this long in its restart (seconds, drawn at random).
BROKER_DOWN = (3.0, 6.0)
#: The faults fall between these fractions of the load's duration.
FAULT_WINDOW = (0.1, 0.85)
#: How long the slots of a killed main process may take to die.
SLOTS_GONE_TIMEOUT = 30.0
#: How long a slot may take to have a process again (a crashed one waits up to 30 s).
SLOT_BACK_TIMEOUT = 60.0
#: How long the worker may take to start, and to catch up once the load has stopped.
START_TIMEOUT = 120.0
CATCH_UP_TIMEOUT = 180.0
#: How long the totals may take to be answered and to settle.
READ_TIMEOUT = 60.0
#: How often the main process is looked at while the soak waits for the next fault.
WATCH_INTERVAL = 0.2

FAULTS = {'slot': 'kill -9 of a slot', 'main': 'kill -9 of the main process',
          'broker': 'broker restart'}

APP_SOURCE = '''\
import runner

app = runner.App({app!r}, processing_guarantee={guarantee!r})
source = app.topic({topic!r}, partitions={partitions})
counts = app.Table('counts', default=int, partitions={partitions})


@app.agent(source, concurrency=2)
def count(stream):
    for key, _ in stream.items():
        counts[key] += 1
'''


class Fault(NamedTuple):
    at: float       # seconds into the load
    kind: str       # a key of FAULTS


def schedule(rng: random.Random, duration: float, slot_kills: int,
             main_kills: int) -> list[Fault]:
    """The faults in a random order at random moments within the fault window."""
    kinds = ['slot'] * slot_kills + ['main'] * main_kills + ['broker']
    rng.shuffle(kinds)
    low, high = (duration * share for share in FAULT_WINDOW)
    moments = sorted(rng.uniform(low, high) for _ in kinds)
    return [Fault(round(at, 2), kind) for at, kind in zip(moments, kinds, strict=True)]


def load_keys(count: int) -> list[str]:
    return [f'key-{number:04d}' for number in range(count)]


# -- the worker as systemd runs it ---------------------------------------------------


class Unit:
    """The worker's main process as systemd runs it with ``Restart=always``: whenever it
    is gone, the same command is started again, once every slot of the old one is gone.
    Each start (an *incarnation*) logs to a file of its own, ``main-N.log``."""

    def __init__(self, directory: Path, module: str, bootstrap: str, workers: int) -> None:
        self.workers = workers
        self.pidfile = directory / 'main.pid'
        extra = ['-w', str(workers), '--pidfile', str(self.pidfile)]
        self.incarnations = [Worker.for_app(directory, module, bootstrap, 'main-1', extra,
                                            datadir=directory / 'data', slots=workers)]
        #: Exit codes of the main processes that exited on their own.
        self.exits: list[int] = []
        self.problems: list[str] = []

    @property
    def worker(self) -> Worker:
        """The current incarnation."""
        return self.incarnations[-1]

    def slot_pid(self, index: int) -> int | None:
        """The pid of slot ``index`` if the current main process says it has a live one."""
        try:
            status = json.loads(status_path(self.pidfile).read_text())
        except (OSError, ValueError):
            return None
        if status.get('pid') != self.worker.proc.pid:      # the last one's, left behind
            return None
        pids = [row['pid'] for row in status['slots'] if row['slot'] == index and row['pid']]
        return pids[0] if pids and alive(pids[0]) else None

    def kill_slot(self, index: int) -> int:
        """``KILL`` to slot ``index`` once it has a process; returns its pid once it is
        dead (so the next kill cannot pick the same process)."""
        pid = wait_for(lambda: self.keep_running() or self.slot_pid(index),
                       SLOT_BACK_TIMEOUT, f'slot {index} to have a process')
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(pid), SLOTS_GONE_TIMEOUT, f'slot {index} to die')
        return pid

    def kill_main(self) -> list[int]:
        """``KILL`` to the main process, then start it again; returns the pids of its
        slots.  It is stopped first, so it cannot fork a slot after its children are
        listed."""
        main = self.worker.proc.pid
        os.kill(main, signal.SIGSTOP)
        slots = sorted(children(main))
        os.kill(main, signal.SIGKILL)
        self.worker.wait()
        self._restart(slots)
        return slots

    def keep_running(self) -> None:
        """If the main process exited on its own, note its code and start it again (it
        exits only once its slots have)."""
        code = self.worker.proc.poll()
        if code is not None:
            self.exits.append(code)
            progress(f'    the main process exited with {code}; starting it again')
            self._restart([])

    def stop(self) -> int | None:
        """Stop the worker warm (``TERM``); its exit code, None if it did not stop."""
        try:
            return self.worker.stop()[0]
        except Exception:   # noqa: BLE001 - a worker that does not stop is reported
            return None

    def kill(self) -> None:
        for worker in self.incarnations:
            worker.kill()

    def logs(self) -> str:
        return ''.join(worker.log() for worker in self.incarnations)

    def _restart(self, slots: list[int]) -> None:
        """Start the same command again once ``slots`` are gone (killed if they outlive
        their main process by SLOTS_GONE_TIMEOUT, which is reported)."""
        try:
            wait_for(lambda: not any(alive(pid) for pid in slots), SLOTS_GONE_TIMEOUT,
                     'the slots of the killed main process to die')
        except TimeoutError:
            survivors = [pid for pid in slots if alive(pid)]
            self.problems.append(f'slots {survivors} outlived their main process by '
                                 f'{SLOTS_GONE_TIMEOUT:g}s')
            for pid in survivors:
                os.kill(pid, signal.SIGKILL)
        old = self.worker
        old.kill()
        self.incarnations.append(Worker(old.log_path.parent, old.args, old.port,
                                        f'main-{len(self.incarnations) + 1}', old.datadir))


# -- the faults ----------------------------------------------------------------------


class Chaos:
    """Injects the faults of a schedule into a unit and a broker, each at its moment
    counted from :meth:`start`; notes what it did."""

    def __init__(self, unit: Unit, broker: Broker, rng: random.Random) -> None:
        self.unit, self.broker, self.rng = unit, broker, rng
        self.injected: Counter[str] = Counter()
        self.events: list[dict[str, Any]] = []
        self.broker_down_s = 0.0
        self._began = 0.0

    def start(self) -> None:
        self._began = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self._began

    def run(self, faults: Iterable[Fault]) -> None:
        for fault in faults:
            self.pause_until(fault.at)
            detail = getattr(self, f'_{fault.kind}')()
            self.injected[fault.kind] += 1
            self.events.append({'at': round(self.elapsed(), 1), 'fault': fault.kind,
                                'detail': detail})
            progress(f'  +{self.elapsed():6.1f}s {FAULTS[fault.kind]}: {detail}')

    def pause_until(self, moment: float) -> None:
        """Wait until ``moment`` seconds after the start (the random pause between two
        faults), keeping the main process running meanwhile."""
        while (left := moment - self.elapsed()) > 0:
            self.unit.keep_running()
            time.sleep(min(left, WATCH_INTERVAL))

    def _slot(self) -> str:
        index = self.rng.randrange(self.unit.workers)
        return f'slot {index}, pid {self.unit.kill_slot(index)}'

    def _main(self) -> str:
        main = self.unit.worker.proc.pid
        slots = self.unit.kill_main()
        return f'pid {main} (slots {", ".join(map(str, slots)) or "none"}); started again'

    def _broker(self) -> str:
        down = round(self.rng.uniform(*BROKER_DOWN), 1)
        began = time.monotonic()
        self.broker.restart(down=down)
        self.broker_down_s = down
        return f'down {down:g}s, back after {time.monotonic() - began:.1f}s'


# -- checking ------------------------------------------------------------------------


def caught_up(unit: Unit, admin: KafkaAdminClient, group: str, topic: str,
              ends: dict[int, int]) -> bool:
    """Every slot is ready and the group has committed every record of ``topic``."""
    unit.keep_running()
    if not all(unit.worker.get('/ready', slot)[0] == 200 for slot in range(unit.workers)):
        return False
    try:
        done = committed(admin, group, topic)
    except KafkaError:
        return False
    return all(done.get(partition, 0) >= end for partition, end in ends.items())


def read_total(worker: Worker, key: str, slot: int) -> int | None:
    """``key``'s total as its owner answers it now (any slot forwards to the owner); None
    while no fresh answer comes (a partition moving or recovering)."""
    status, body = worker.get(f'/tables/counts/{key}', slot)
    if status == 200 and not body.get('stale'):
        return body['value']
    if status == 404 and body and body.get('stale') is False:
        return 0
    return None


def read_totals(worker: Worker, truth: Counter[str], slots: int,
                exact: bool) -> dict[str, int | None]:
    """Every key's total.  A key without an answer, or whose total is off (below the
    truth; with ``exact``, other than it), is read again until none is, for at most
    READ_TIMEOUT seconds (a write may be on its way)."""
    totals: dict[str, int | None] = dict.fromkeys(truth)

    def off() -> list[str]:
        return [key for key, total in totals.items() if total is None or total < truth[key]
                or (exact and total != truth[key])]

    def read_again() -> bool:
        for number, key in enumerate(off()):
            totals[key] = read_total(worker, key, number % slots)
        return not off()
    with contextlib.suppress(TimeoutError):
        wait_for(read_again, READ_TIMEOUT, 'every total to be answered and right',
                 interval=0.5)
    return totals


def compare(totals: dict[str, int | None], truth: Counter[str]) -> dict[str, int]:
    """Keys below the truth (and the records lost), above it (and the surplus), and
    without an answer."""
    answered = {key: total for key, total in totals.items() if total is not None}
    below = {key: truth[key] - total for key, total in answered.items() if total < truth[key]}
    above = {key: total - truth[key] for key, total in answered.items() if total > truth[key]}
    return {'keys_below': len(below), 'lost': sum(below.values()),
            'keys_above': len(above), 'surplus': sum(above.values()),
            'keys_exact': len(answered) - len(below) - len(above),
            'unanswered': len(totals) - len(answered)}


def verdict(guarantee: str, counts: dict[str, int], problems: list[str]) -> bool:
    """Whether the guarantee held and could be checked."""
    held = counts['keys_below'] == 0 and (guarantee != 'exactly_once' or
                                          counts['keys_above'] == 0)
    return held and counts['unanswered'] == 0 and not problems


# -- one guarantee ---------------------------------------------------------------------


def soak_one(args: argparse.Namespace, broker: Broker, root: Path,
             guarantee: str) -> dict[str, Any]:
    """A fresh app under ``guarantee``: load, faults, catch-up, totals; what happened."""
    rng = random.Random(f'{args.seed}:{guarantee}')
    directory = root / guarantee
    directory.mkdir()
    bootstrap = broker.bootstrap_servers
    app = f'soak-{run_id()}-{guarantee.replace("_", "-")}'
    topic = f'{app}-source'
    module = write_app(directory, APP_SOURCE.format(app=app, guarantee=guarantee, topic=topic,
                                                    partitions=PARTITIONS), 'soakapp')
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        create_topic(admin, topic, PARTITIONS)
    finally:
        admin.close()
    faults = schedule(rng, args.duration, args.slot_kills, args.main_kills)
    progress(f'{guarantee}: {len(faults)} faults at '
             + ', '.join(f'{fault.at:g}s {fault.kind}' for fault in faults))
    unit = Unit(directory, module, bootstrap, args.workers)
    load = Load(bootstrap, topic, load_keys(args.keys), args.rate)
    chaos = Chaos(unit, broker, rng)
    try:
        unit.worker.split_between(args.workers, START_TIMEOUT)
        load.start()
        chaos.start()
        chaos.run(faults)
        chaos.pause_until(args.duration)
        load.stop()
        return {**check(unit, load, chaos, bootstrap, app, topic, guarantee),
                'planned': [list(fault) for fault in faults]}
    except BaseException:
        progress(f'--- last lines of {unit.worker.log_path} ---\n{unit.worker.log_tail()}')
        raise
    finally:
        load.stop()
        unit.kill()


def check(unit: Unit, load: Load, chaos: Chaos, bootstrap: str, group: str, topic: str,
          guarantee: str) -> dict[str, Any]:
    """Wait for the worker to catch up, compare every total with the truth, stop it."""
    problems = unit.problems
    ends = end_offsets(bootstrap, topic)
    produced, in_topic = sum(load.truth.values()), sum(ends.values())
    if in_topic != produced:
        problems.append(f'the source topic holds {in_topic} records, {produced} were '
                        f'acknowledged: the truth is uncertain')
    stopped = chaos.elapsed()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        wait_for(lambda: caught_up(unit, admin, group, topic, ends), CATCH_UP_TIMEOUT,
                 'the worker to catch up', interval=0.5)
    except TimeoutError as exc:
        problems.append(f'hang: {exc}')
    finally:
        admin.close()
    caught_up_s = round(chaos.elapsed() - stopped, 1)
    totals = read_totals(unit.worker, load.truth, unit.workers, guarantee == 'exactly_once')
    counts = compare(totals, load.truth)
    if counts['unanswered']:
        problems.append(f'no fresh answer for {counts["unanswered"]} keys')
    exit_code = unit.stop()
    if exit_code != 0:
        problems.append(f'the worker exited with {exit_code} on TERM at the end')
    logs = unit.logs()
    return {'guarantee': guarantee, 'passed': verdict(guarantee, counts, problems),
            'injected': dict(chaos.injected), 'broker_down_s': chaos.broker_down_s,
            'main_exits': unit.exits, 'events': chaos.events,
            'produced': produced, 'in_topic': in_topic, 'produce_failures': load.failed,
            'keys': len(load.truth), **counts, 'caught_up_s': caught_up_s,
            'exit_code': exit_code, 'tracebacks': logs.count('Traceback'),
            'slot_restarts': logs.count('restarting it in'), 'problems': problems,
            'below_truth': {key: [totals[key], load.truth[key]] for key in load.truth
                            if totals[key] is not None and totals[key] < load.truth[key]}}


# -- reporting -------------------------------------------------------------------------


def summarize(args: argparse.Namespace, result: dict[str, Any]) -> None:
    exactly = result['guarantee'] == 'exactly_once'
    say(f'{result["guarantee"]} (seed {args.seed}): {args.duration:g}s of load, '
        f'{args.workers} slots, {PARTITIONS} partitions, {args.keys} keys, {args.rate} '
        f'records/s')
    rows: list[tuple[str, Any, str]] = [
        (FAULTS['slot'], result['injected'].get('slot', 0), ''),
        (FAULTS['main'], result['injected'].get('main', 0), 'started again each time'),
        (FAULTS['broker'], result['injected'].get('broker', 0),
         f'down {result["broker_down_s"]:g}s'),
        ('main process exited on its own', len(result['main_exits']),
         ', '.join(map(str, result['main_exits']))),
        ('slots restarted by the main process', result['slot_restarts'], ''),
        ('records produced (acknowledged)', result['produced'],
         f'{result["in_topic"]} in the topic, {result["produce_failures"]} sends failed'),
        ('keys below the truth (lost)', result['keys_below'],
         f'{result["lost"]} records; must be 0'),
        ('keys above the truth (duplicates)', result['keys_above'],
         f'surplus {result["surplus"]}' + ('; must be 0' if exactly else '; allowed')),
        ('keys exactly right', result['keys_exact'], f'of {result["keys"]}'),
        ('caught up after the load (s)', result['caught_up_s'], ''),
        ('exit code on TERM at the end', result['exit_code'], ''),
    ]
    for label, value, note in rows:
        say(f'  {label:<38}{value!s:>8}   {note}'.rstrip())
    for problem in result['problems']:
        say(f'  PROBLEM: {problem}')
    say(f'  {"PASS" if result["passed"] else "FAIL"}')


# -- the whole soak ----------------------------------------------------------------------


def soak(args: argparse.Namespace, root: Path) -> bool:
    """Every guarantee asked for, on one broker; whether all passed."""
    began = time.monotonic()
    results = []
    with own_broker() as broker:
        for guarantee in args.guarantees:
            results.append(soak_one(args, broker, root, guarantee))
    seconds = round(time.monotonic() - began, 1)
    for result in results:
        summarize(args, result)
    say(f'soak: {seconds:g}s in all')
    emit_json('soak', {'seed': args.seed, 'duration_s': args.duration, 'workers': args.workers,
                       'partitions': PARTITIONS, 'keys': args.keys, 'rate': args.rate,
                       'total_s': seconds, 'runs': results})
    return all(result['passed'] for result in results)


def run_in(keep: Path | None, body: Callable[[Path], bool]) -> bool:
    """Run ``body`` in ``keep`` (emptied first) or a temporary directory, which is removed
    only if it passed."""
    if keep is not None:
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(parents=True)
    root = keep or Path(tempfile.mkdtemp(prefix='bench-soak-'))
    passed = False
    try:
        passed = body(root)
    finally:
        if passed and keep is None:
            shutil.rmtree(root, ignore_errors=True)
        else:
            say(f'logs: {root}')
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--guarantee', choices=[*GUARANTEES, 'both'], default='both')
    parser.add_argument('--duration', type=float, default=120.0,
                        help='seconds of load per guarantee (120)')
    parser.add_argument('--seed', type=int, default=None,
                        help='draws the faults\' order, moments and slots (random if not given; '
                             'printed)')
    parser.add_argument('--workers', type=int, default=3, help='slots of the worker (3)')
    parser.add_argument('--rate', type=int, default=200, help='records a second (200)')
    parser.add_argument('--keys', type=int, default=600, help='distinct keys (600)')
    parser.add_argument('--slot-kills', type=int, default=6, help='slots killed (6)')
    parser.add_argument('--main-kills', type=int, default=2,
                        help='main processes killed (2)')
    parser.add_argument('--keep', type=Path, default=None,
                        help='keep the workers\' logs in this directory (emptied first)')
    args = parser.parse_args()
    args.seed = args.seed if args.seed is not None else random.randrange(10_000)
    args.guarantees = GUARANTEES if args.guarantee == 'both' else (args.guarantee,)
    progress(f'soak: seed {args.seed}')
    if not run_in(args.keep, lambda root: soak(args, root)):
        raise SystemExit(1)


if __name__ == '__main__':
    raise SystemExit(run_main(main))
