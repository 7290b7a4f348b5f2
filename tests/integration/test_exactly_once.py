"""Exactly-once processing against a real broker: slots killed at random moments, a
broker restart, a zombie slot and an agent that raises leave every table total and
every sink output exactly as often as its input."""

import contextlib
import json
import os
import random
import shutil
import signal

import kafka_broker
import pytest
from apps import Load, assert_each_output_once, wait_for_counts
from harness import Worker, consume_committed, wait_for, write_app
from kafka import KafkaProducer

#: Counts each key and forwards each record's id; raises once on the record ``boom``
#: after its output was sent and its count written.
APP = '''
import pathlib
import runner
from runner.errors import RunnerError

app = runner.App({app!r}, processing_guarantee='exactly_once', session_timeout=6,
                 heartbeat_timeout=600, graceful_timeout=10)
source = app.topic({source!r}, partitions=4)
sink = app.topic({sink!r}, partitions=4)
counts = app.Table('counts', default=int)
RAISED = pathlib.Path({raised!r})


@app.agent(source, sink=[sink], concurrency=2)
def count(stream):
    for event in stream.events():
        counts[event.key] += 1
        yield event.value
        if event.value == 'boom' and not RAISED.exists():
            RAISED.touch()
            raise RunnerError('boom')       # stops the slot (another error stops a partition)
'''

def exactly_once_app(tmp_path, names):
    return write_app(tmp_path, APP.format(raised=str(tmp_path / 'raised'), **names))


def working(tmp_path, names, workers, bootstrap, count, rate):
    """The app, a one-slot worker ``first`` of it, and a load of ``count`` records that
    the worker has begun to process."""
    app = exactly_once_app(tmp_path, names)
    first = workers(app, 'first')
    first.wait_ready()
    load = Load(bootstrap, names['source'], count, rate)
    wait_for(lambda: sum(first.state()['processed'].values()) > 100, 30, 'records processed')
    return app, first, load


def slot_pid(worker, slot):
    state = worker.state(slot)
    return state['pid'] if state else None


@pytest.mark.long
def test_slots_killed_at_random_and_a_broker_restart_count_each_record_exactly_once(
        tmp_path, names):
    rng = random.Random(11)
    with kafka_broker.Broker() as broker:
        bootstrap = broker.bootstrap_servers
        worker = Worker.for_app(tmp_path, exactly_once_app(tmp_path, names), bootstrap,
                                extra=['-w', '2'])
        with worker:
            worker.split_between(2)
            load = Load(bootstrap, names['source'], 4000)
            kills, restarted = 0, False
            while load.running or kills < 8:
                moved_on(load, worker, rng.randrange(150, 400))
                if not restarted and kills == 4:
                    broker.restart(down=2)
                    restarted = True
                    continue
                pid = slot_pid(worker, rng.randrange(2))
                if pid is not None:
                    kill(pid)
                    kills += 1
            load.finish()
            assert restarted
            wait_for_counts(worker, dict(load.truth), timeout=180)
            assert_each_output_once(bootstrap, names['sink'], load.ids)


def moved_on(load, worker, records):
    """Wait until ``records`` more records were acknowledged (a random moment of the load),
    or once the load is over, until both slots answer again."""
    mark = len(load.ids)
    wait_for(lambda: len(load.ids) >= mark + records or (
        not load.running and all(worker.state(slot) for slot in range(2))), 120,
        'the load to move on')


def kill(pid):
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_a_zombie_slot_cannot_commit_once_its_successor_started(
        tmp_path, names, workers, kafka_bootstrap):
    app, first, load = working(tmp_path, names, workers, kafka_bootstrap, 2000, rate=200)
    zombie = slot_pid(first, 0)
    os.kill(zombie, signal.SIGSTOP)          # frozen inside an open transaction
    copy = tmp_path / 'second-data' / 'slot-0'
    copy.mkdir(parents=True)
    shutil.copy(first.datadir / 'slot-0' / 'identity', copy / 'identity')
    second = workers(app, 'second')           # the same slot, started elsewhere
    second.wait_ready()
    os.kill(zombie, signal.SIGCONT)
    wait_for(lambda: first.proc.poll() is not None, 60, 'the zombie to stop')
    assert first.proc.returncode == 70       # its only slot stopped with 73, not restarted
    assert 'exited with code 73' in first.log()
    load.finish()
    wait_for_counts(second, dict(load.truth), timeout=120)
    assert_each_output_once(kafka_bootstrap, names['sink'], load.ids)


def test_an_agent_that_raises_mid_transaction_leaves_no_trace(
        tmp_path, names, workers, kafka_bootstrap):
    worker = workers(exactly_once_app(tmp_path, names))
    worker.wait_ready()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks='all')
    values = [f'id-{n}' for n in range(200)] + ['boom'] + [f'id-{n}' for n in range(200, 400)]
    for value in values:
        producer.send(names['source'], key=b'k00', value=json.dumps(value).encode())
    producer.flush(30)
    producer.close(10)
    wait_for(lambda: 'stopped on' in worker.log(), 60, 'the agent to raise')
    wait_for_counts(worker, {'k00': len(values)}, timeout=120)
    assert_each_output_once(kafka_bootstrap, names['sink'], values)


def test_a_worker_joining_and_leaving_under_load_changes_no_total_and_no_output(
        tmp_path, names, workers, kafka_bootstrap):
    app, first, load = working(tmp_path, names, workers, kafka_bootstrap, 3000, rate=150)
    second = workers(app, 'second')
    wait_for(lambda: (s := second.state()) and s['ready'] and s['assignment'], 60,
             'the second worker to take partitions over')
    wait_for(lambda: sum(second.state()['processed'].values()) > 100, 30,
             'the second worker to process')
    assert second.stop()[0] == 0              # leaves for good, mid-load
    load.finish()
    wait_for_counts(first, dict(load.truth), timeout=120)
    assert_each_output_once(kafka_bootstrap, names['sink'], load.ids)
    assert 'Traceback' not in first.log() + second.log()


#: Counts and forwards like APP; the first time it meets the record ``slow`` it takes
#: longer than the transaction timeout (10 s) while the other partitions go on sending.
SLOW_APP = '''
import pathlib
import time
import runner

app = runner.App({app!r}, processing_guarantee='exactly_once', session_timeout=6)
source = app.topic({source!r}, partitions=4)
sink = app.topic({sink!r}, partitions=4)
counts = app.Table('counts', default=int)
SLOWED = pathlib.Path({slowed!r})


@app.agent(source, sink=[sink], concurrency=2)
def count(stream):
    for event in stream.events():
        counts[event.key] += 1
        yield event.value
        if event.value == 'slow' and not SLOWED.exists():
            SLOWED.touch()
            time.sleep(30)
'''


def test_a_transaction_the_broker_aborts_after_its_timeout_is_processed_again_once(
        tmp_path, names, workers, kafka_bootstrap):
    """Whichever way the slot learns of the broker's abort (a fenced producer: it starts
    again; or kafka-python's new epoch: it rereads in-process), it goes on and every
    output is committed once."""
    worker = workers(write_app(tmp_path, SLOW_APP.format(slowed=str(tmp_path / 'slowed'),
                                                         **names)))
    worker.wait_ready()
    [pid] = worker.slot_pids(1)
    load = Load(kafka_bootstrap, names['source'], 3000, rate=100)
    wait_for(lambda: len(load.ids) > 200, 30, 'the load to be under way')
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks='all')
    producer.send(names['source'], key=b'slow', value=b'"slow"').get(30)
    producer.close()
    load.finish()
    wait_for_counts(worker, {**load.truth, 'slow': 1}, timeout=120)
    assert_each_output_once(kafka_bootstrap, names['sink'], [*load.ids, 'slow'])
    log = worker.log()
    assert worker.proc.poll() is None
    if 'exited with code' in log:       # the producer was fenced: the slot started again
        assert 'exited with code 70: the broker aborted the open transaction' in log
        assert log.count('exited with code') == 1   # started again once, not given up on
        assert worker.slot_pids(1) != [pid]
    else:                               # kafka-python took the new epoch: reread in-process
        assert 'aborting the transaction' in log and worker.slot_pids(1) == [pid]


#: Sends each record's id, then raises once on ``boom``: the policy (retry or dead letter)
#: takes the record, and its first output must leave no trace.
SEND_THEN_RAISE_APP = '''
import pathlib
import runner

app = runner.App({app!r}, processing_guarantee='exactly_once')
source = app.topic({source!r}, partitions=2)
sink = app.topic({sink!r}, partitions=2)
RAISED = pathlib.Path({raised!r})


@app.agent(source, {policy})
def forward(stream):
    for value in stream:
        app.send(sink, key=value, value=value)
        if value == 'boom' and not RAISED.exists():
            RAISED.touch()
            raise ValueError('boom')
'''


@pytest.mark.parametrize('policy', ['retries=1', "on_error='dead_letter'"])
def test_what_a_failed_record_sent_is_never_committed(tmp_path, names, workers, kafka_bootstrap,
                                                      policy):
    """The record is tried again (its output then appears once) or dead-lettered (its
    output never appears): either way the output of the failed try is dropped."""
    worker = workers(write_app(tmp_path, SEND_THEN_RAISE_APP.format(
        raised=str(tmp_path / 'raised'), policy=policy, **names)))
    worker.wait_ready()
    values = [f'id-{n}' for n in range(50)] + ['boom'] + [f'id-{n}' for n in range(50, 100)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks='all')
    for value in values:
        producer.send(names['source'], key=b'k', value=json.dumps(value).encode())
    producer.flush(30)
    producer.close(10)
    wait_for(lambda: (tmp_path / 'raised').exists(), 60, 'the agent to raise')
    expected = values if policy.startswith('retries') else [v for v in values if v != 'boom']
    assert_each_output_once(kafka_bootstrap, names['sink'], expected)
    if 'boom' not in expected:
        outputs = [json.loads(r.value) for r in consume_committed(kafka_bootstrap, names['sink'])]
        assert 'boom' not in outputs
        letters = consume_committed(kafka_bootstrap, f'{names["app"]}-testapp.forward-dlq')
        assert [json.loads(r.value) for r in letters] == ['boom']
#: Counts and forwards like APP; one record in 100 takes 0.5 to 2.5 s before its output,
#: often longer than a revocation waits for it (its transaction is then aborted).
SLOW_NOW_AND_THEN_APP = '''
import time
import zlib
import runner

app = runner.App({app!r}, processing_guarantee='exactly_once', session_timeout=6,
                 revoke_timeout=1)
source = app.topic({source!r}, partitions=4)
sink = app.topic({sink!r}, partitions=4)
counts = app.Table('counts', default=int)


@app.agent(source, sink=[sink], concurrency=2)
def count(stream):
    for event in stream.events():
        counts[event.key] += 1
        crc = zlib.crc32(event.value.encode())
        if crc % 100 == 0:
            time.sleep(0.5 + crc // 100 % 21 / 10)
        yield event.value
'''


@pytest.mark.long
def test_slow_records_while_a_worker_leaves_and_returns_and_slots_die_give_each_output_once(
        tmp_path, names, workers, kafka_bootstrap):
    rng = random.Random(23)
    app = write_app(tmp_path, SLOW_NOW_AND_THEN_APP.format(**names))
    first = workers(app, 'first')
    first.wait_ready()
    load = Load(kafka_bootstrap, names['source'], 5000, rate=100)
    rounds = 0
    while load.running:
        second = workers(app, f'second-{rounds}', datadir=tmp_path / 'second-data')
        taking_partitions(second)                 # the leaver is back, with its state
        acknowledged(load, rng.randrange(50, 200))
        second.signal(signal.SIGTERM)             # its partitions move to the first
        acknowledged(load, rng.randrange(20, 300))    # 0.2 to 3 s later ...
        pid = slot_pid(first, 0)
        if pid is not None:
            kill(pid)                             # ... the survivor's slot dies
        assert second.wait(90) == 0
        rounds += 1
    load.finish()
    assert rounds >= 3
    wait_for_counts(first, dict(load.truth), timeout=120)
    assert_each_output_once(kafka_bootstrap, names['sink'], load.ids)


def taking_partitions(worker):
    wait_for(lambda: (s := worker.state()) and s['ready'] and s['assignment'], 60,
             f'{worker.log_path.stem} to take partitions over')


def acknowledged(load, records):
    """Wait until ``records`` more records of the load were acknowledged (or it is over)."""
    mark = len(load.ids)
    wait_for(lambda: len(load.ids) >= mark + records or not load.running, 60,
             'the load to move on')
