"""The processing core under stress: stuck agents across rebalances, long backlogs,
topics with different partition counts, and table reads while partitions move."""

import collections
import re
import signal
import threading

from apps import counts_of
from harness import committed, end_offsets, produce, wait_for, write_app

STUCK_APP = '''
import collections, pathlib, threading, time
import runner

app = runner.App({app!r}, commit_interval=0.3, session_timeout=6, revoke_timeout=1.5,
                 assignor='eager')     # every partition is revoked, the stuck one too
words = app.topic({source!r}, partitions=4, value_serializer='str')
counts = app.Table('counts', default=int)
STUCK = pathlib.Path({stuck!r})
OVERLAPS = pathlib.Path({overlaps!r})
inside = collections.Counter()
lock = threading.Lock()


@app.agent(words, concurrency=2)
def count(stream):
    for event in stream.events():
        with lock:
            inside[event.partition] += 1
            if inside[event.partition] > 1:
                with OVERLAPS.open('a') as overlaps:
                    overlaps.write(f'{{event.partition}}@{{event.offset}}\\n')
        try:
            counts[event.value] += 1   # the thread now holds the task's guard
            if event.value == 'stuck' and not STUCK.exists():
                STUCK.touch()
                time.sleep(5)          # well past revoke_timeout
        finally:
            with lock:
                inside[event.partition] -= 1
'''


def test_stuck_agent_across_rebalance_loses_nothing(tmp_path, names, workers, kafka_bootstrap):
    stuck, overlaps = tmp_path / 'stuck', tmp_path / 'overlaps'
    app = write_app(tmp_path, STUCK_APP.format(stuck=str(stuck), overlaps=str(overlaps),
                                               **names))
    worker = workers(app)
    worker.wait_ready()
    keys = [f'k{n:02d}' for n in range(40)]
    first = [keys[n % 40] for n in range(1500)]
    produce(kafka_bootstrap, names['source'], [(w, w) for w in first], encode=str.encode)
    produce(kafka_bootstrap, names['source'], [('stuck', 'stuck')], encode=str.encode)
    wait_for(stuck.exists, 30, 'an agent to be stuck inside a record')
    worker.signal(signal.SIGTTIN)                       # a second slot: the group rebalances
    second = [keys[(n * 7) % 40] for n in range(1500)]
    produce(kafka_bootstrap, names['source'], [(w, w) for w in second], encode=str.encode)
    truth = collections.Counter(first + second + ['stuck'])
    wait_for(lambda: 'abandoning' in worker.log(), 30, 'the busy task to be abandoned')
    worker.split_between(2)
    wait_for(lambda: counts_of(worker, truth) == truth, 90,
             'every count to reach the truth')
    assert counts_of(worker, truth, slot=1) == truth
    assert not overlaps.exists(), overlaps.read_text()


SLOW_APP = '''
import time
import runner

app = runner.App({app!r}, commit_interval=0.5, session_timeout=6)
words = app.topic({source!r}, partitions=1, value_serializer='str')
counts = app.Table('counts', default=int)


@app.agent(words)
def count(stream):
    for word in stream:
        counts[word] += 1
        time.sleep(0.001)
'''


def test_backlog_with_a_busy_agent_commits_every_few_intervals(tmp_path, names, workers,
                                                               kafka_bootstrap, admin):
    admin.create_topics({names['source']: {'num_partitions': 1, 'replication_factor': 1}})
    produce(kafka_bootstrap, names['source'],
            [(f'k{n % 50}', f'k{n % 50}') for n in range(20000)], encode=str.encode)
    worker = workers(write_app(tmp_path, SLOW_APP.format(**names)))
    worker.wait_ready()

    def offset():
        return committed(admin, names['app'], names['source']).get(0, 0)
    for _ in range(5):                  # 0.5 s commit interval; each advance within 4 s
        before = offset()
        wait_for(lambda before=before: offset() > before, 4, 'the committed offset to advance')
    assert offset() < 20000, 'the backlog was gone before the test could watch it'


UNEVEN_APP = '''
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6)
clicks = app.topic({source!r}, partitions=8, value_serializer='str')
orders = app.topic({sink!r}, partitions=4, value_serializer='str')
totals = app.Table('totals', default=int)


@app.agent(clicks)
def click(stream):
    for _ in stream:
        pass


@app.agent(orders, concurrency=2)
def order(stream):
    for customer in stream:
        totals[customer] += 1
'''


def test_topics_with_different_partition_counts_answer_every_key_from_any_slot(
        tmp_path, names, workers, kafka_bootstrap):
    worker = workers(write_app(tmp_path, UNEVEN_APP.format(**names)), extra=('-w', '3'))
    worker.split_between(3)
    customers = [f'c{n:02d}' for n in range(60)]
    placed = [customers[(n * 11) % 60] for n in range(1800)]
    produce(kafka_bootstrap, names['source'], [(c, c) for c in placed], encode=str.encode)
    produce(kafka_bootstrap, names['sink'], [(c, c) for c in placed], encode=str.encode)
    truth = collections.Counter(placed)
    for slot in range(3):
        wait_for(lambda slot=slot: counts_of(worker, truth, slot, 'totals') == truth, 60,
                 f'slot {slot} to answer every total right')
    answers = [worker.get(f'/tables/totals/{c}', slot)[1] for c in customers for slot in range(3)]
    assert all(answer['stale'] is False for answer in answers)
    listings = [worker.state(slot, '/tables')['tables'][0] for slot in range(3)]
    assert sorted(n for listing in listings for n in listing['active']) == [0, 1, 2, 3]
    for listing in listings:
        assert listing['partitions'] == 4
        assert not set(map(int, listing['standby'])) & set(listing['active'])


MOVING_APP = '''
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6)
words = app.topic({source!r}, partitions=8, value_serializer='str')
counts = app.Table('counts', default=int)
recent = app.Table('recent', default=int).tumbling(60, expires=3600)


@app.agent(words, concurrency=2)
def count(stream):
    for word in stream:
        counts[word] += 1
        recent[word] += 1
'''


def test_table_reads_while_partitions_move_never_crash_a_slot(tmp_path, names, workers,
                                                              kafka_bootstrap):
    worker = workers(write_app(tmp_path, MOVING_APP.format(**names)), extra=('-w', '2'))
    worker.split_between(2)
    words = [f'w{n % 300}' for n in range(30000)]
    produce(kafka_bootstrap, names['source'], [(w, w) for w in words], encode=str.encode)
    wait_for(lambda: counts_of(worker, ['w1'], 1) == {'w1': 100}, 60, 'the counts')
    stop = threading.Event()
    statuses: list[int] = []

    def hammer(path_of):
        n = 0
        while not stop.is_set():
            statuses.append(worker.get(path_of(n), 1)[0])
            n += 1
    readers = [threading.Thread(target=hammer, args=(path,)) for path in (
        lambda n: '/tables/counts?limit=10', lambda n: f'/tables/counts/w{n % 300}',
        lambda n: f'/tables/recent/w{n % 300}', lambda n: '/tables/recent?limit=10')]
    for reader in readers:
        reader.start()
    try:
        for _ in range(3):                      # partitions move away from slot 1 and back
            slot1 = worker.state(1)['pid']
            worker.signal(signal.SIGTTOU)
            wait_for(lambda pid=slot1: f'slot 1 (pid {pid}) ' in worker.log(), 60,
                     'slot 1 to stop')
            worker.signal(signal.SIGTTIN)
            worker.split_between(2)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    log = worker.log()
    assert 'killed by signal' not in log
    assert len(re.findall(r'slot 1 \(pid \d+\) exited with code 0', log)) == 3
    assert 200 in statuses and set(statuses) <= {0, 200, 404, 502, 503}
    assert sum(end_offsets(kafka_bootstrap, names['source']).values()) == 30000
