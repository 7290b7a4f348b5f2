"""Records an agent cannot process: they never stop the slot or stall other partitions, and
none is dropped without being dead-lettered (or counted as skipped) and logged."""

import collections
import json

import pytest
from apps import counts_of, wait_for_counts
from harness import (
    committed,
    consume,
    end_offsets,
    free_port,
    produce,
    run_cli,
    wait_for,
    write_app,
)
from kafka import KafkaProducer
from kafka.admin import NewTopic

POLICY_APP = '''
import pathlib
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6)
words = app.topic({source!r}, partitions=4)
counts = app.Table('counts', default=int)
BROKEN = pathlib.Path({broken!r})
tried = set()


@app.agent(words, concurrency=2, on_error={on_error!r}, retries=2, retry_backoff=0.05)
def count(stream):
    for event in stream.events():
        if event.value == 'nokey':          # a record without a key, anywhere:
            counts[event.key] += 1          # a None key is refused by the table
        counts[event.value] += 1            # taken back when the record fails
        if event.value == 'flaky' and event.offset not in tried:
            tried.add(event.offset)
            raise ConnectionError('flaky service')
        if event.value == 'bad' or BROKEN.exists() and event.value.startswith('fix'):
            raise ValueError(f'cannot handle {{event.value}}')
'''

LARGE_OUTPUT_APP = '''
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6)
source = app.topic({source!r}, partitions=2)
sink = app.topic({sink!r}, partitions=2)


@app.agent(source, sink=[sink])
def grow(stream):
    for value in stream:
        yield 'x' * (5 * 1024 * 1024) if value == 'huge' else value
'''


def policy_app(tmp_path, names, on_error):
    return write_app(tmp_path, POLICY_APP.format(on_error=on_error,
                                                 broken=str(tmp_path / 'broken'), **names))


def words(count, first=0):
    return [f'w{n % 20:02d}' for n in range(first, first + count)]


def all_committed(admin, bootstrap, names):
    """Wait until the group has committed every partition of the source to its end."""
    ends = end_offsets(bootstrap, names['source'])
    wait_for(lambda: committed(admin, names['app'], names['source']) == ends, 30,
             'the source to be committed to its end')


def dead_letters(bootstrap, topic, count):
    return [{'value': record.value, **{k: v.decode() for k, v in record.headers}}
            for record in consume(bootstrap, topic, count, timeout=30)]


def test_a_record_that_cannot_be_decoded_is_dead_lettered_and_other_partitions_flow(
        tmp_path, names, workers, kafka_bootstrap, admin):
    worker = workers(policy_app(tmp_path, names, 'stop'))
    worker.wait_ready()
    pid = worker.slot_pids(1)
    before = words(200)
    produce(kafka_bootstrap, names['source'], [(w, w) for w in before])
    produce(kafka_bootstrap, names['source'], [('k', b'{not json')], partition=0,
            encode=lambda value: value)
    after = words(400, 200)
    produce(kafka_bootstrap, names['source'], [(w, w) for w in after])
    wait_for_counts(worker, collections.Counter(before + after))
    all_committed(admin, kafka_bootstrap, names)
    [letter] = dead_letters(kafka_bootstrap, f'{names["app"]}-testapp.count-dlq', 1)
    assert letter['value'] == b'{not json'
    assert letter['runner-reason'] == 'unreadable'
    assert letter['runner-topic'] == names['source'] and letter['runner-partition'] == '0'
    assert letter['runner-error'].startswith('SerializationError: not JSON')
    state = worker.state()
    assert state['agents']['testapp.count'] == {
        'failed': 0, 'dead_lettered': 1, 'skipped': 0, 'retried': 0}
    [shown] = state['errors']                  # the status page's "Errors and dead letters"
    assert (shown['agent'], shown['action']) == ('testapp.count', 'dead_lettered')
    assert shown['record'].startswith(f'{names["source"]}[0]@')
    assert shown['error'].startswith('unreadable: SerializationError: not JSON')
    assert worker.slot_pids(1) == pid          # never restarted


@pytest.mark.parametrize('on_error', ['dead_letter', 'skip'])
def test_an_agent_that_raises_follows_its_policy_and_nothing_else_is_lost(
        tmp_path, names, workers, kafka_bootstrap, admin, on_error):
    worker = workers(policy_app(tmp_path, names, on_error))
    worker.wait_ready()
    pid = worker.slot_pids(1)
    good = words(600)
    mixed = good[:300] + ['bad', 'flaky', 'nokey'] + good[300:] + ['bad']
    produce(kafka_bootstrap, names['source'],
            [(None if w == 'nokey' else w, w) for w in mixed])
    truth = collections.Counter(good + ['flaky'])
    truth.update({'bad': 0, 'nokey': 0})          # their writes were taken back
    wait_for_counts(worker, truth)
    all_committed(admin, kafka_bootstrap, names)
    counts = worker.state()['agents']['testapp.count']
    # 'bad' twice and 'nokey' once: each tried three times (retries=2), raising each time;
    # 'flaky' twice, raising once
    assert counts == {'failed': 3 * 3 + 1, 'dead_lettered': 3 if on_error == 'dead_letter' else 0,
                      'skipped': 3 if on_error == 'skip' else 0, 'retried': 3 * 2 + 1}
    assert worker.slot_pids(1) == pid
    assert worker.log().count('trying it again') == 7
    actions = collections.Counter(event['action'] for event in worker.state()['errors'])
    set_aside = {'dead_letter': 'dead_lettered', 'skip': 'skipped'}[on_error]
    assert actions == {'retried': 7, set_aside: 3}
    if on_error == 'dead_letter':
        letters = dead_letters(kafka_bootstrap, f'{names["app"]}-testapp.count-dlq', 3)
        assert sorted(json.loads(letter['value']) for letter in letters) == ['bad', 'bad', 'nokey']
        assert {letter['runner-reason'] for letter in letters} == {'raised'}
        assert sum(letter['runner-error'].startswith('TypeError') for letter in letters) == 1


def test_an_output_too_large_for_the_producer_is_dead_lettered(
        tmp_path, names, workers, kafka_bootstrap, admin):
    worker = workers(write_app(tmp_path, LARGE_OUTPUT_APP.format(**names)))
    worker.wait_ready()
    values = [f'v{n}' for n in range(100)]
    produce(kafka_bootstrap, names['source'], [(v, v) for v in values[:50] + ['huge']
                                               + values[50:]])
    out = consume(kafka_bootstrap, names['sink'], 100, timeout=30)
    assert sorted(json.loads(record.value) for record in out) == sorted(values)
    [letter] = dead_letters(kafka_bootstrap, f'{names["app"]}-testapp.grow-dlq', 1)
    assert letter['runner-reason'] == 'refused' and json.loads(letter['value']) == 'huge'
    all_committed(admin, kafka_bootstrap, names)


def test_dead_letters_are_listed_and_replayed_once_after_a_fix(
        tmp_path, names, workers, kafka_bootstrap, admin):
    (tmp_path / 'broken').touch()
    app = policy_app(tmp_path, names, 'dead_letter')
    worker = workers(app)
    worker.wait_ready()
    fixes = [f'fix{n}' for n in range(5)]
    produce(kafka_bootstrap, names['source'], [(w, w) for w in fixes + words(50)])
    produce(kafka_bootstrap, names['source'], [('k', b'{not json')], partition=0,
            encode=lambda value: value)
    wait_for_counts(worker, collections.Counter(words(50)))
    all_committed(admin, kafka_bootstrap, names)
    cli = ['-A', app, '-b', kafka_bootstrap, 'dlq']
    listed = run_cli([*cli, 'count'], tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 6 and sum('raised: ValueError: cannot handle fix' in line
                                   for line in lines) == 5
    (tmp_path / 'broken').unlink()                       # the fix
    replayed = run_cli([*cli, 'count', '--replay'], tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    [skipped, summary] = replayed.stdout.splitlines()
    assert skipped.startswith(f'runner: not replayed: {names["source"]}[0]@')
    assert skipped.endswith('unreadable: its value still cannot be decoded')
    assert summary == ('runner: sent 5 dead letters of testapp.count back to their topic; '
                       '1 cannot be processed (not replayed)')
    wait_for_counts(worker, collections.Counter(fixes + words(50)))
    again = run_cli([*cli, 'count', '--replay'], tmp_path)
    assert again.stdout == 'runner: sent 0 dead letters of testapp.count back to their topic\n'
    assert all(line.endswith('(replayed)') for line in
               run_cli([*cli, 'testapp.count'], tmp_path).stdout.splitlines())
    unknown = run_cli([*cli, 'nope'], tmp_path)
    assert unknown.returncode == 64 and unknown.stderr.count('\n') == 1
    assert counts_of(worker, fixes) == dict.fromkeys(fixes, 1)


def stopped_on_a_poison_record(tmp_path, names, workers, kafka_bootstrap, admin,
                               guarantee='at_least_once'):
    """Two slots of the default policy ('stop'), and one record on partition 1 of 4 that
    makes the agent raise every time: returns the worker, its pidfile, the slot pids and
    the poison record's offset once every other record is committed."""
    pidfile = tmp_path / 'w.pid'
    worker = workers(policy_app(tmp_path, names, 'stop'),
                     extra=('-w', '2', '--pidfile', str(pidfile),
                            '--processing-guarantee', guarantee))
    pids = worker.split_between(2)
    generation = worker.state()['group']['generation']
    before = words(200)
    produce(kafka_bootstrap, names['source'], [(w, w) for w in before])
    poison = end_offsets(kafka_bootstrap, names['source'])[1]
    produce(kafka_bootstrap, names['source'], [('bad', 'bad')], partition=1)
    produce(kafka_bootstrap, names['source'], [(w, w) for w in words(400, 200)])
    ends = end_offsets(kafka_bootstrap, names['source'])
    expected = {**ends, 1: poison}
    wait_for(lambda: committed(admin, names['app'], names['source']) == expected, 60,
             'every partition but the stopped one committed to its end, that one to the record')
    assert worker.state()['group']['generation'] == generation      # no rebalance
    return worker, pidfile, pids, poison


@pytest.mark.parametrize('guarantee', ['at_least_once', 'exactly_once'])
def test_a_record_that_keeps_failing_stops_its_partition_not_the_slot(
        tmp_path, names, workers, kafka_bootstrap, admin, guarantee):
    worker, pidfile, pids, offset = stopped_on_a_poison_record(
        tmp_path, names, workers, kafka_bootstrap, admin, guarantee)
    place = f'{names["source"]}:1'
    states = [worker.state(slot) for slot in range(2)]
    [stopped] = [state['stopped'][place] for state in states if state['stopped']]
    assert stopped['offset'] == offset and stopped['key'] == 'bad'
    assert stopped['agent'] == 'testapp.count'
    assert stopped['error'] == 'ValueError: cannot handle bad'
    assert all(worker.get('/ready', slot)[0] == 200 for slot in range(2))
    assert place in next(state for state in states if state['stopped'])['paused']
    produce(kafka_bootstrap, names['source'], [(w, w) for w in words(200, 600)])
    ends = end_offsets(kafka_bootstrap, names['source'])
    wait_for(lambda: committed(admin, names['app'], names['source']) == {**ends, 1: offset},
             60, 'the records sent after the stop committed, on every other partition')
    assert worker.slot_pids(2) == pids                         # no slot restarted
    log = worker.log()
    assert log.count(f'partition {place} stopped at offset {offset}') == 1
    assert 'Traceback' in log and 'ValueError: cannot handle bad' in log
    table = run_cli(['status', '--pidfile', str(pidfile)], tmp_path)
    assert table.returncode == 2, table.stderr
    assert ', degraded, 2 of 2 slots ready' in table.stdout
    assert f'{place} stopped at offset {offset}' in table.stdout
    assert json.loads(run_cli(['status', '--json', '--pidfile', str(pidfile)],
                              tmp_path).stdout)['state'] == 'degraded'


@pytest.mark.parametrize('guarantee', ['at_least_once', 'exactly_once'])
def test_skip_dead_letters_the_record_a_partition_stopped_at_and_it_goes_on(
        tmp_path, names, workers, kafka_bootstrap, admin, guarantee):
    worker, pidfile, pids, offset = stopped_on_a_poison_record(
        tmp_path, names, workers, kafka_bootstrap, admin, guarantee)
    cli = ['-A', 'testapp', '-b', kafka_bootstrap, 'skip', names['source'], '1']
    elsewhere = run_cli([*cli, str(offset + 1)], tmp_path)
    assert elsewhere.returncode == 1 and elsewhere.stderr.count('\n') == 1
    assert f'is stopped at offset {offset}, not {offset + 1}' in elsewhere.stderr
    skipped = run_cli([*cli, str(offset)], tmp_path)
    assert skipped.returncode == 0, skipped.stderr
    assert f'{names["source"]}[1]@{offset}' in skipped.stdout
    all_committed(admin, kafka_bootstrap, names)
    [letter] = dead_letters(kafka_bootstrap, f'{names["app"]}-testapp.count-dlq', 1)
    assert json.loads(letter['value']) == 'bad'
    assert letter['runner-reason'] == 'skipped by operator'
    assert letter['runner-error'] == 'ValueError: cannot handle bad'
    assert letter['runner-offset'] == str(offset)
    assert all(not worker.state(slot)['stopped'] for slot in range(2))
    assert worker.slot_pids(2) == pids
    assert 'skipped by operator' in worker.log()
    wait_for(lambda: run_cli(['status', '--pidfile', str(pidfile)], tmp_path).returncode == 0,
             10, 'the worker to be running again, not degraded')
    again = run_cli([*cli, str(offset)], tmp_path)
    assert again.returncode == 1 and 'is not stopped' in again.stderr


LARGE_INPUT_APP = '''
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6)
source = app.topic({source!r}, partitions=2, config={{'max.message.bytes': '6000000'}})
sink = app.topic({sink!r}, partitions=2)


@app.agent(source, sink=[sink], on_error='dead_letter')
def check(stream):
    for value in stream:
        if value.startswith('big'):
            raise ValueError('too big to handle')
        yield value
'''


def test_records_too_large_to_dead_letter_are_dead_lettered_cut_to_fit(
        tmp_path, names, workers, kafka_bootstrap, admin):
    worker = workers(write_app(tmp_path, LARGE_INPUT_APP.format(**names)))
    worker.wait_ready()
    pid = worker.slot_pids(1)
    big = 5 * 1024 * 1024
    failing = json.dumps('big' + 'x' * big).encode()
    unreadable = b'{' + b'y' * big
    values = [f'v{n}' for n in range(100)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks='all',
                             max_request_size=6_000_000)
    for n, value in enumerate(values[:50]):
        producer.send(names['source'], key=value.encode(), value=json.dumps(value).encode(),
                      partition=n % 2)
    producer.send(names['source'], key=b'k1', value=failing, partition=0)
    producer.send(names['source'], key=b'k2', value=unreadable, partition=1)
    for n, value in enumerate(values[50:]):
        producer.send(names['source'], key=value.encode(), value=json.dumps(value).encode(),
                      partition=n % 2)
    producer.flush(60)
    producer.close(10)
    out = consume(kafka_bootstrap, names['sink'], 100, timeout=60)
    assert sorted(json.loads(record.value) for record in out) == sorted(values)
    all_committed(admin, kafka_bootstrap, names)
    letters = dead_letters(kafka_bootstrap, f'{names["app"]}-testapp.check-dlq', 2)
    by_reason = {letter['runner-reason']: letter for letter in letters}
    assert sorted(by_reason) == ['raised', 'unreadable']
    for letter, original in ((by_reason['raised'], failing),
                             (by_reason['unreadable'], unreadable)):
        assert letter['runner-cut'] == 'value'
        assert letter['runner-value-size'] == str(len(original))
        assert 0 < len(letter['value']) <= 1024 * 1024
        assert original.startswith(letter['value'])
    assert worker.slot_pids(1) == pid          # never restarted
def test_an_agent_without_dead_letters_lists_none_whether_or_not_its_topic_exists(
        tmp_path, names, kafka_bootstrap, admin):
    app = policy_app(tmp_path, names, 'dead_letter')
    cli = ['-A', app, '-b', kafka_bootstrap, '--broker-timeout', '10', 'dlq', 'count']
    missing = run_cli(cli, tmp_path)                     # no worker ever created the topic
    admin.create_topics([NewTopic(f'{names["app"]}-testapp.count-dlq', 2, 1)])
    empty = run_cli(cli, tmp_path)
    for listed in (missing, empty):     # stderr may hold kafka-python's warnings under load
        assert (listed.returncode, listed.stdout) == (0, ''), listed.stderr
        assert 'runner:' not in listed.stderr and 'Traceback' not in listed.stderr
    replayed = run_cli([*cli, '--replay'], tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert 'sent 0 dead letters' in replayed.stdout


def test_dead_letters_without_a_broker_are_one_line_and_69_within_the_broker_timeout(
        tmp_path, names):
    app = policy_app(tmp_path, names, 'dead_letter')
    # the run's own deadline (25 s) is below kafka-python's default bootstrap wait (30 s)
    result = run_cli(['-A', app, '-b', f'127.0.0.1:{free_port()}', '--broker-timeout', '2',
                      'dlq', 'count'], tmp_path, timeout=25)
    assert result.returncode == 69, result.stderr
    assert result.stderr.startswith('runner: cannot reach Kafka at 127.0.0.1:')
    assert result.stderr.count('\n') == 1 and result.stdout == ''
