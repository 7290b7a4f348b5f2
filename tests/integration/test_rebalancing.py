"""Rebalancing without stopping the world: members that keep their identity across
restarts, stops for good that leave at once, cooperative assignment that revokes only
what moves, and a member fenced for sharing another's identity."""

import collections
import os
import re
import shutil
import signal

import pytest
from apps import counts_of, wait_for_counts
from harness import committed, consume, end_offsets, produce, wait_for, write_app
from kafka.admin import NewPartitions

#: A long session timeout: a member that did not leave would keep its partitions 30 s.
APP = '''
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=30)
words = app.topic({source!r}, partitions=4, value_serializer='str')
counts = app.Table('counts', default=int)


@app.agent(words, concurrency=2)
def count(stream):
    for word in stream:
        counts[word] += 1
'''

REBALANCED = re.compile(r'\[(\d+)\] \[slot \d+\] INFO runner\.runtime\.consumer: rebalance to '
                        r'generation (\d+): revoked (.*?)(?: \(handed over in \S+\))?, '
                        r'assigned (.*?), kept')


def rebalances(worker):
    """(pid, generation, revoked, assigned) of every rebalance line in a worker's log."""
    def partitions(text):
        return set() if text == 'none' else set(text.split(', '))
    return [(int(m[1]), int(m[2]), partitions(m[3]), partitions(m[4]))
            for m in REBALANCED.finditer(worker.log())]


def send_words(bootstrap, topic, count, seed):
    words = [f'w{(n * seed) % 97:02d}' for n in range(count)]
    produce(bootstrap, topic, [(w, w) for w in words], encode=str.encode)
    return collections.Counter(words)


def split(*members):
    """Wait until the members are ready and share the 4 partitions evenly."""
    def settled():
        states = [member.state() for member in members]
        if all(s and s['ready'] and len(s['assignment']) == 4 // len(members) for s in states):
            return states
        return None
    return wait_for(settled, 60, 'the partitions to be shared evenly')


def test_a_restarted_slot_rejoins_as_the_same_member_and_nothing_moves(
        tmp_path, names, workers, kafka_bootstrap, admin):
    app = write_app(tmp_path, APP.format(**names))
    first, second = workers(app, 'first'), workers(app, 'second')
    before_first, before_second = split(first, second)
    settled = len(rebalances(first))
    truth = send_words(kafka_bootstrap, names['source'], 2000, 7)
    wait_for_counts(first, truth)
    ends = end_offsets(kafka_bootstrap, names['source'])
    wait_for(lambda: committed(admin, names['app'], names['source']) == ends, 30,
             'every record to be committed')     # so the KILL makes no duplicates
    os.kill(before_second['pid'], signal.SIGKILL)
    again = wait_for(lambda: (s := second.state()) and s['pid'] != before_second['pid']
                     and s['ready'] and s, 60, 'the slot to be back')
    truth += send_words(kafka_bootstrap, names['source'], 2000, 11)
    wait_for_counts(first, truth)
    assert again['assignment'] == before_second['assignment']
    assert again['group']['generation'] == before_second['group']['generation']
    after_first = first.state()
    assert after_first['group']['generation'] == before_first['group']['generation']
    assert after_first['rebalances'] == before_first['rebalances']
    assert rebalances(first)[settled:] == []


def test_a_stop_for_good_hands_the_partitions_over_at_once(tmp_path, names, workers):
    app = write_app(tmp_path, APP.format(**names))
    first = workers(app, 'first', extra=('-w', '2'))
    second = workers(app, 'second')

    def owned(*slots):
        states = [worker.state(slot) for worker, slot in slots]
        if all(s and s['ready'] for s in states):
            return sum(len(s['assignment']) for s in states)
        return None
    wait_for(lambda: owned((first, 0), (first, 1), (second, 0)) == 4
             and second.state()['assignment'], 60, 'three members sharing the partitions')
    second.stop()
    wait_for(lambda: owned((first, 0), (first, 1)) == 4, 10,
             "the stopped worker's partitions to move (the session timeout is 30 s)")
    assert 'left group' in second.log()
    first.signal(signal.SIGTTOU)                  # one slot fewer, for good too
    wait_for(lambda: owned((first, 0)) == 4, 10, "the retired slot's partitions to move")


def test_partitions_that_stay_are_never_revoked_when_a_member_joins_or_leaves(
        tmp_path, names, workers, kafka_bootstrap):
    app = write_app(tmp_path, APP.format(**names))
    first = workers(app, 'first')
    wait_for(lambda: (s := first.state()) and s['ready'] and len(s['assignment']) == 4, 60,
             'one member with every partition')
    truth = send_words(kafka_bootstrap, names['source'], 2000, 7)
    second = workers(app, 'second')
    _, joined = split(first, second)
    kept = set(first.state()['assignment'])
    revoked = set().union(*(r for _, _, r, _ in rebalances(first)))
    assert revoked == set(joined['assignment']) and not revoked & kept
    truth += send_words(kafka_bootstrap, names['source'], 2000, 11)
    second.stop()
    wait_for(lambda: len(first.state()['assignment']) == 4, 10, 'the partitions to come back')
    revoked = set().union(*(r for _, _, r, _ in rebalances(first)))
    assert revoked == set(joined['assignment'])
    wait_for_counts(first, truth)


@pytest.mark.long
def test_slots_restarted_one_after_another_do_not_rebalance_the_group(
        tmp_path, names, workers, kafka_bootstrap, admin):
    app = write_app(tmp_path, APP.format(**names))
    worker = workers(app, extra=('-w', '3'))
    worker.split_between(3)
    generation = worker.state()['group']['generation']
    settled = len(rebalances(worker))
    truth = collections.Counter()
    for index in range(3):
        truth += send_words(kafka_bootstrap, names['source'], 1000, 7 + index)
        wait_for_counts(worker, truth)
        ends = end_offsets(kafka_bootstrap, names['source'])
        wait_for(lambda ends=ends: committed(admin, names['app'], names['source']) == ends, 30,
                 'every record to be committed')     # so the KILL makes no duplicates
        pid = worker.state(index)['pid']
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda i=index, p=pid: (s := worker.state(i)) and s['pid'] != p and s['ready'],
                 60, f'slot {index} to be back')
    worker.signal(signal.SIGHUP)                  # and a rolling restart of all three
    wait_for(lambda: 'rolling restart done' in worker.log(), 90, 'the rolling restart')
    worker.split_between(3)
    after = worker.state()['group']['generation']
    truth += send_words(kafka_bootstrap, names['source'], 1000, 13)
    wait_for_counts(worker, truth)
    restarts = rebalances(worker)[settled:]
    assert all(not revoked for _, _, revoked, _ in restarts), restarts
    # Six processes rejoined as who they were.  (The group leader rejoining at the same
    # moment as another member may cost one rebalance, which moves nothing.)
    assert after - generation <= 1, restarts
    assert {worker.state(i)['group']['generation'] for i in range(3)} == {after}


def test_a_member_fenced_by_a_copy_of_its_identity_stops_instead_of_committing(
        tmp_path, names, workers, kafka_bootstrap):
    app = write_app(tmp_path, APP.format(**names))
    first = workers(app, 'first')
    wait_for(lambda: (s := first.state()) and s['ready'] and s['assignment'], 60, 'a member')
    copy = tmp_path / 'second-data' / 'slot-0'
    copy.mkdir(parents=True)
    shutil.copy(first.datadir / 'slot-0' / 'identity', copy / 'identity')
    second = workers(app, 'second')            # the same identity: a copied data directory
    wait_for(lambda: 'another member joined group' in first.log(), 60, 'the older to be fenced')
    assert 'Traceback' not in first.log()
    wait_for(lambda: (first.state(0, '/') is None), 30, 'the fenced slot to stop')
    truth = send_words(kafka_bootstrap, names['source'], 2000, 7)
    wait_for(lambda: (s := second.state()) and s['ready'], 60, 'the newer member to work')
    wait_for_counts(second, truth)
    assert 'slot 0 stopped: exited with code 73: another member joined group' in first.log()
    assert first.wait(30) == 70                  # its only slot: no slot is left running


GROWING_APP = '''
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6)
events = app.topic({source!r}, value_serializer='str')
words = app.topic({words!r}, value_serializer='str')
sink = app.topic({sink!r}, partitions=1, value_serializer='str')
counts = app.Table('counts', default=int)


@app.agent(events, sink=[sink])
def forward(stream):
    for event in stream.events():
        yield f'{{event.partition}}'


@app.agent(words)
def count(stream):
    for word in stream:
        counts[word] += 1
'''


def test_new_partitions_are_processed_unless_their_keys_would_miss_their_tables(
        tmp_path, names, workers, kafka_bootstrap, admin):
    words = names['source'] + '-words'
    admin.create_topics({topic: {'num_partitions': 4, 'replication_factor': 1}
                         for topic in (names['source'], words)})
    worker = workers(write_app(tmp_path, GROWING_APP.format(words=words, **names)),
                     extra=('-w', '2'))
    worker.split_between(2)
    truth = send_words(kafka_bootstrap, words, 500, 7)
    wait_for(lambda: counts_of(worker, truth) == truth, 60, 'the counts')
    admin.create_partitions({names['source']: NewPartitions(total_count=6)})
    for partition in range(6):
        produce(kafka_bootstrap, names['source'], [(None, 'x')], partition=partition,
                encode=str.encode)

    def forwarded():
        return {record.value.decode() for record in consume(
            kafka_bootstrap, names['sink'], timeout=1, until=lambda found: False)}
    wait_for(lambda: forwarded() == {str(p) for p in range(6)}, 60,
             'records of the new partitions to be processed, without a restart')
    worker.split_between(2)
    admin.create_partitions({words: NewPartitions(total_count=6)})
    reason = f"topic {words!r} has 6 partitions, its tables 4"
    for slot in (0, 1):
        wait_for(lambda s=slot: reason in worker.get('/ready', s)[1]['reason'], 60,
                 f'slot {slot} to say why it is not ready')
    produce(kafka_bootstrap, names['source'], [(None, 'x')], partition=5, encode=str.encode)
    wait_for(lambda: len(consume(kafka_bootstrap, names['sink'], 7, timeout=5)) == 7, 30,
             'the other topic to be processed still')
    assert 'Traceback' not in worker.log()
