"""Timers on a real broker: every slot ticks; an on_leader timer ticks on exactly one slot
of two workers and moves to the other after a kill -9, never two at once; a timer's table
writes are checkpointed (read back from the changelog after a restart); a bad crontab
stops the start with one line."""

import itertools
import json
import os
import signal
import threading
import time

from harness import consume, run_cli, wait_for, write_app

BEAT_APP = '''
import os
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6)
source = app.topic({source!r}, partitions=4)
beats = app.topic({sink!r}, partitions=1)


@app.agent(source)
def idle(stream):
    for _ in stream:
        pass


@app.timer(0.5)
def beat():
    app.send(beats, value={{'pid': os.getpid()}})
'''

LEADER_APP = '''
import os
import time
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout={session})
source = app.topic({source!r}, partitions=4)


@app.agent(source)
def idle(stream):
    for _ in stream:
        pass


@app.timer(0.2, on_leader=True, name='lead')
def lead():
    began = time.time()
    time.sleep(0.3)                   # longer than its interval: the next tick is skipped
    line = f'{{os.getpid()}} {{began!r}} {{time.time()!r}}\\n'
    fd = os.open({ticks!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
'''

TABLE_APP = '''
import os
import time
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6)
source = app.topic({source!r}, partitions=2)
beats = app.Table('beats', default=int, partitions=2)


@app.agent(source)
def idle(stream):
    for _ in stream:
        pass


@app.timer(0.3)
def beat():
    seen = beats['n']
    beats['n'] = seen + 1
    time.sleep(0.2)                  # a stop comes in the middle of a tick, often
    with open({ticks!r}, 'a') as log:
        log.write(f'{{os.getpid()}} {{seen}}\\n')
'''

SESSION = 6


def ticks_of(path):
    """(pid, start, end) of every tick the leader app wrote, by start."""
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return sorted(((int(pid), float(start), float(end)) for pid, start, end in rows),
                  key=lambda row: row[1])


def test_a_timer_every_half_second_ticks_on_both_slots(tmp_path, names, workers,
                                                        kafka_bootstrap):
    app = write_app(tmp_path, BEAT_APP.format(**names))
    with workers(app, extra=('--workers', '2')) as worker:
        pids = set(worker.slot_pids(2))
        found = consume(kafka_bootstrap, names['sink'], timeout=60, until=lambda records: {
            json.loads(record.value)['pid'] for record in records} >= pids)
        assert {json.loads(record.value)['pid'] for record in found} >= pids
        for slot in (0, 1):
            counts = wait_for(lambda slot=slot: (worker.state(slot) or {}).get('timers'), 10,
                              'timer counts')
            assert counts[f'{app}.beat']['ticks'] >= 1
            assert counts[f'{app}.beat']['skipped'] == 0


class LeaderSamples:
    """The slots the workers' status says lead, as (pid, generation it leads from), in
    rounds that ask every worker of ``workers`` (a list the test may change) once, every
    50 ms."""

    def __init__(self, workers):
        self.rounds: list[set] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(workers,), daemon=True)
        self._thread.start()

    def _run(self, workers):
        while not self._stop.wait(0.05):
            states = [worker.state() for worker in list(workers)]
            self.rounds.append({(state['pid'], state['leader_generation'])
                                for state in states if state and state.get('leader')})

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        return self.rounds


def test_an_on_leader_timer_ticks_on_one_slot_and_moves_on_a_stop_and_after_a_kill(
        tmp_path, names, workers):
    ticks = tmp_path / 'ticks.log'
    app = write_app(tmp_path, LEADER_APP.format(session=SESSION, ticks=str(ticks), **names))
    one_slot = ('--workers', '1')
    pair = [workers(app, name='a', extra=one_slot)]
    pair[0].wait_ready()
    wait_for(lambda: ticks_of(ticks), 30, 'the first worker to tick')
    pair.append(workers(app, name='b', extra=one_slot))     # a rebalance while it leads
    samples = LeaderSamples(pair)
    try:
        leader, other = one_leader_of(ticks, pair)
        stopped_at = time.time()
        assert leader.stop()[0] == 0           # it leaves the group: the lead moves at once
        handed_over = first_tick_after(ticks, other, stopped_at) - stopped_at
        pair[:] = [other, workers(app, name='c', extra=one_slot, datadir=leader.datadir)]
        leader, other = one_leader_of(ticks, pair)
        killed_at = time.time()
        leader.proc.send_signal(signal.SIGKILL)          # its main process: no restart
        os.kill(leader.state_pid, signal.SIGKILL)
        took_over = first_tick_after(ticks, other, killed_at) - killed_at
        wait_for(lambda: any(pid == other.state_pid for seen in samples.rounds
                             for pid, _ in seen), 10, 'the status to say the successor leads')
    finally:
        rounds = samples.stop()
    leaders = list(dict.fromkeys(leader for seen in rounds for leader in seen))
    print(f'the lead moved {handed_over:.2f}s after a warm stop, {took_over:.2f}s after a '
          f'kill -9 (session timeout {SESSION}s); (slot, generation) leading, in turn: '
          f'{leaders}')
    assert handed_over < SESSION
    assert took_over < SESSION + 6        # the session, then a rebalance under load
    assert [seen for seen in rounds if len(seen) > 1] == []
    rows = ticks_of(ticks)
    assert len({pid for pid, _, _ in rows}) >= 3
    for before, after in itertools.pairwise(rows):
        assert before[2] <= after[1], f'two slots ticked at once: {before} and {after}'


def one_leader_of(ticks, pair):
    """Once both workers share the partitions in one generation and one of them says it
    leads, only that one ticks (ten ticks, each skipping the due time it ran over) while
    the generation stays; (leader, other).  A rebalance meanwhile (the load of a shared
    machine can cost a member its session) moves the lead rightly: then look again."""
    def settled():
        states = [worker.state() for worker in pair]
        if not all(state and state['ready'] and state['assignment'] for state in states):
            return None
        if len({state['group']['generation'] for state in states}) > 1 or \
                [state['leader'] for state in states].count(True) != 1:
            return None        # between two rounds of a rebalance, no one leads: not yet
        for worker, state in zip(pair, states, strict=True):
            worker.state_pid = state['pid']
        return states[0]['group']['generation']

    def generation_stayed(generation):
        return all((worker.state() or {}).get('group', {}).get('generation') == generation
                   for worker in pair)
    for _ in range(3):
        generation = wait_for(settled, 60, 'two workers sharing the partitions, one leading')
        since = time.time()
        wait_for(lambda since=since: len([row for row in ticks_of(ticks) if row[1] > since])
                 >= 10, 30, 'ten ticks after the workers settled')
        if generation_stayed(generation):
            break
    else:
        raise AssertionError('the group rebalanced three times while the test watched')
    leaders = {pid for pid, start, _ in ticks_of(ticks) if start > since}
    assert len(leaders) == 1, leaders
    leader, = (worker for worker in pair if worker.state_pid in leaders)
    assert leader.state()['leader'] is True
    assert leader.state()['timers']['lead']['skipped'] >= 1
    return leader, next(worker for worker in pair if worker is not leader)


def first_tick_after(ticks, worker, moment):
    """When ``worker``'s slot first ticked after ``moment`` (waited for)."""
    def first():
        return min((start for pid, start, _ in ticks_of(ticks)
                    if pid == worker.state_pid and start > moment), default=None)
    return wait_for(first, SESSION + 30, 'the other worker to take the lead')


def test_a_timers_table_writes_are_checkpointed_and_read_back(tmp_path, names, workers):
    ticks = tmp_path / 'ticks.log'
    app = write_app(tmp_path, TABLE_APP.format(ticks=str(ticks), **names))

    def seen():
        return [tuple(map(int, line.split())) for line in ticks.read_text().splitlines()] \
            if ticks.exists() else []
    with workers(app, name='a', extra=('--workers', '1')) as worker:
        wait_for(lambda: len(seen()) >= 5, 60, 'five ticks')
        code, _ = worker.stop()
        assert code == 0
    last = seen()[-1][1]
    counted = len(seen())
    assert [value for _, value in seen()] == list(range(counted))
    # Another data directory: the table comes back from its changelog, not the local store.
    with workers(app, name='b', extra=('--workers', '1')) as worker:
        wait_for(lambda: len(seen()) > counted, 60, 'a tick after the restart')
        pid, value = seen()[counted]
        assert pid == worker.state()['pid']
        assert value == last + 1


WARM_APP = '''
import time
import runner

app = runner.App({app!r}, session_timeout=6)
source = app.topic({source!r}, partitions=1)


@app.agent(source)
def idle(stream):
    for _ in stream:
        pass


@app.timer(0.3)
def slow():
    with open({ticks!r}, 'a') as log:
        log.write('start\\n')
    time.sleep(3)
    with open({ticks!r}, 'a') as log:
        log.write('end\\n')
'''


def test_a_warm_stop_waits_for_the_tick_under_way(tmp_path, names, workers):
    ticks = tmp_path / 'ticks.log'
    app = write_app(tmp_path, WARM_APP.format(ticks=str(ticks), **names))
    with workers(app, extra=('--workers', '1')) as worker:
        wait_for(lambda: ticks.exists() and 'start' in ticks.read_text(), 60, 'a tick to start')
        code, _ = worker.stop()
        assert code == 0
    assert ticks.read_text().split() == ['start', 'end']


def test_a_bad_crontab_stops_the_start_with_one_line(tmp_path, kafka_bootstrap):
    write_app(tmp_path, '''
        import runner
        app = runner.App('badcron')
        app.topic('x')

        @app.crontab('*/5 * * *')
        def tick():
            pass
        ''', name='badcron')
    done = run_cli(['-A', 'badcron', '-b', kafka_bootstrap], tmp_path)
    assert done.returncode == 78
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "crontab '*/5 * * *': not a valid cron expression" in lines[0]
