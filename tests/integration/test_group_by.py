"""Counting by another key than the record's: refused when written directly (it would be
split across partitions), exact through ``stream.group_by`` and its repartition topic."""

import collections
import os
import signal

import pytest
from apps import counts_of, wait_for_counts
from harness import committed, end_offsets, produce, wait_for, write_app

BY_USER_APP = '''
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6,
                 processing_guarantee={guarantee!r})
orders = app.topic({source!r}, partitions=4)
totals = app.Table('totals', default=int{table_partitions})


@app.agent(orders, concurrency=2)
def total(stream):
    for order in {stream}:
        totals[order['user']] += 1
'''

USERS = [f'user-{n:02d}' for n in range(12)]


def by_user_app(tmp_path, names, grouped, guarantee='at_least_once', table_partitions=None):
    """Orders keyed by order id, totalled per user: through ``stream.group_by`` or not."""
    stream = "stream.group_by(lambda order: order['user'])" if grouped else 'stream'
    partitions = '' if table_partitions is None else f', partitions={table_partitions}'
    return write_app(tmp_path, BY_USER_APP.format(stream=stream, guarantee=guarantee,
                                                  table_partitions=partitions, **names))


def orders(first, count):
    """(order id, order) pairs, ``count`` of them from order number ``first``."""
    return [(f'order-{n}', {'user': USERS[n * 7 % len(USERS)]}) for n in range(first,
                                                                         first + count)]


def test_a_write_of_another_key_than_the_records_stops_with_one_line_naming_group_by(
        tmp_path, names, workers, kafka_bootstrap):
    worker = workers(by_user_app(tmp_path, names, grouped=False))
    worker.wait_ready()
    produce(kafka_bootstrap, names['source'], orders(0, 10), partition=0)
    assert worker.wait(60) == 70
    lines = worker.log().splitlines()
    assert not any('Traceback' in line for line in lines)
    assert lines[-1].startswith("runner: no slot is running: slot 0 stopped: exited with code "
                                "78: table 'totals': key 'user-")
    assert 're-key the stream with stream.group_by(key_fn)' in lines[-1]


GUARANTEES = pytest.mark.parametrize('guarantee', ['at_least_once', 'exactly_once'])


def totals_of(worker, slot=0):
    return counts_of(worker, USERS, slot, 'totals')


@GUARANTEES
def test_totals_by_another_key_through_group_by_are_exact_over_two_slots_and_a_restart(
        tmp_path, names, workers, kafka_bootstrap, admin, guarantee):
    app = by_user_app(tmp_path, names, grouped=True, guarantee=guarantee, table_partitions=3)
    worker = workers(app, extra=('-w', '2'))
    worker.split_between(2)
    repartition = f"{names['app']}-testapp.total-repartition"
    [described] = admin.describe_topics([repartition])
    assert len(described['partitions']) == 3            # the table's count, not the source's
    first = orders(0, 1200)
    produce(kafka_bootstrap, names['source'], first)
    truth = collections.Counter(order['user'] for _, order in first)
    wait_for(lambda: totals_of(worker) == truth, 90, 'the totals of the first orders')
    if guarantee == 'exactly_once':                      # a crash: nothing is counted twice
        second = orders(1200, 3000)
        produce(kafka_bootstrap, names['source'], second)
        wait_for(lambda: sum(totals_of(worker).values()) > sum(truth.values()), 60,
                 'the second orders to be counted')
        for pid in worker.slot_pids(2):
            os.kill(pid, signal.SIGKILL)
        worker.proc.send_signal(signal.SIGKILL)
        worker.wait(30)
    else:                       # a warm stop once all is committed, then more orders
        for topic in (names['source'], repartition):
            ends = end_offsets(kafka_bootstrap, topic)
            wait_for(lambda t=topic, e=ends: committed(admin, names['app'], t) == e, 60,
                     f'{topic} to be committed to its end')
        assert worker.stop()[0] == 0
        second = orders(1200, 3000)
    truth.update(order['user'] for _, order in second)
    again = workers.raw(worker.args, worker.port, 'again')     # the same ports, data
    again.split_between(2)
    if guarantee == 'at_least_once':
        # Sent once both slots hold their partitions: at-least-once may count a record
        # twice when its partition moves before its commit, as the slots' start moves some.
        produce(kafka_bootstrap, names['source'], second)
    for slot in range(2):
        wait_for_counts(again, truth, 120, slot, 'totals')
    assert 'Traceback' not in again.log()
