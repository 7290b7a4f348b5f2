"""Global tables: every slot holds the whole table, answers every key from its own copy
(never forwarding), joins a stream with it, and after a restart reads only what it missed."""

import collections
import contextlib
import json
import os
import random
import signal
import subprocess
import urllib.parse

import pytest
from harness import consume, debian_command, produce, run_cli, wait_for, write_app
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.protocol.admin import AlterClientQuotasRequest

from runner.app.partitioners import crc32_partition, murmur2_partition

RATES_APP = '''
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6,
                 processing_guarantee={guarantee!r})
source = app.topic({source!r}, partitions=4)
sink = app.topic({sink!r}, partitions=1)
rates = app.GlobalTable('rates', partitions=3)


@app.agent(source, sink=[sink])
def seen(stream):
    for _ in stream:
        yield sum(1 for _ in rates.keys())     # how many rates the agent can see
'''

JOIN_APP = '''
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6,
                 processing_guarantee={guarantee!r})
orders = app.topic({source!r}, partitions=4)
price_updates = app.topic({updates!r}, partitions=2)
prices = app.GlobalTable('prices', source=price_updates, partitions=3)
spent = app.Table('spent', default=int)


@app.agent(price_updates)
def set_price(stream):
    for item, price in stream.items():
        prices[item] = price


@app.agent(orders, concurrency=2)
def total(stream):
    for customer, order in stream.items():
        spent[customer] += prices[order['item']] * order['quantity']
'''

CHANGELOG_PARTITIONS = 3


def rates_app(tmp_path, names, guarantee='at_least_once'):
    return write_app(tmp_path, RATES_APP.format(guarantee=guarantee, **names))


def changelog(names, table='rates'):
    return f'{names["app"]}-{table}-changelog'


def fill_placed(bootstrap, topic, values, place):
    """Produce ``{key: value}`` to the partitions ``place`` gives the keys, as a producer
    with that partitioner (kafka-python's murmur2, librdkafka's crc32) would."""
    by_partition = collections.defaultdict(list)
    for key, value in values.items():
        by_partition[place(key.encode(), CHANGELOG_PARTITIONS)].append((key, value))
    for number, items in by_partition.items():
        produce(bootstrap, topic, items, partition=number,
                encode=lambda value: None if value is None else json.dumps(value).encode())


def lookup(worker, key, slot=0, table='rates'):
    return worker.get(f'/tables/{table}/{urllib.parse.quote(key, safe="")}', slot)


def answers_all(worker, truth, slots, table='rates'):
    """Every key answered 200 with its value by every slot named."""
    return all(lookup(worker, key, slot, table)[1].get('value') == value
               for key, value in truth.items() for slot in slots)


def described(worker, slot=0, table='rates'):
    return worker.state(slot, f'/tables/{table}')


@contextlib.contextmanager
def frozen(pids):
    """The processes stopped (SIGSTOP) for the block: they can answer nothing."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):    # killed for its silence meanwhile
                os.kill(pid, signal.SIGCONT)


def each_slot_answers_alone(worker, truth, count):
    """Every slot in turn answers every key itself, the others frozen (SIGSTOP), so a
    forwarded lookup would find no one to answer it."""
    for slot in range(count):
        pids = worker.slot_pids(count)
        with frozen([pid for number, pid in enumerate(pids) if number != slot]):
            for key, value in truth.items():
                status, body = lookup(worker, key, slot)
                assert (status, body['value'], body['stale']) == (200, value, False), key
                assert body['served_by'] == f'127.0.0.1:{worker.port + slot}'
            assert lookup(worker, 'never-written', slot)[0] == 404


def fill_by_kcat(bootstrap, topic, values, partitioner):
    """Produce ``{key: value}`` (values as JSON) with kcat, librdkafka's partitioner named
    ``partitioner`` placing the keys (``murmur2_random``: Java's and kafka-python's;
    ``consistent_random``, librdkafka's default: CRC32)."""
    lines = ''.join(f'{key}\t{json.dumps(value)}\n' for key, value in values.items())
    subprocess.run([debian_command('kcat'), '-P', '-b', bootstrap, '-t', topic, '-K', '\t',
                    '-X', f'topic.partitioner={partitioner}'],
                   input=lines, text=True, check=True, timeout=60)


def test_three_slots_each_answer_every_key_of_both_partitioners_without_forwarding(
        tmp_path, names, workers, kafka_bootstrap):
    worker = workers(rates_app(tmp_path, names), extra=('-w', '3'))
    worker.split_between(3)
    by_murmur2 = {f'm-{n}': n for n in range(20)}
    by_crc32 = {f'c-{n}': 100 + n for n in range(20)}
    fill_placed(kafka_bootstrap, changelog(names), by_murmur2, murmur2_partition)
    fill_placed(kafka_bootstrap, changelog(names), by_crc32, crc32_partition)
    truth = {**by_murmur2, **by_crc32}
    assert any(crc32_partition(k.encode(), 3) != murmur2_partition(k.encode(), 3)
               for k in by_crc32)
    wait_for(lambda: answers_all(worker, truth, range(3)), 60, 'every key from every slot')
    each_slot_answers_alone(worker, truth, 3)
    state = described(worker, 2)
    assert (state['global'], state['partitions'], state['read_since_start']) == (True, 3, 40)


def test_a_global_table_filled_by_kcat_with_both_partitioners_is_answered_whole_by_each_slot(
        tmp_path, names, workers, kafka_bootstrap):
    worker = workers(rates_app(tmp_path, names), extra=('-w', '3'))
    worker.split_between(3)
    by_murmur2 = {f'km-{n}': n for n in range(20)}
    by_crc32 = {f'kc-{n}': 100 + n for n in range(20)}
    fill_by_kcat(kafka_bootstrap, changelog(names), by_murmur2, 'murmur2_random')
    fill_by_kcat(kafka_bootstrap, changelog(names), by_crc32, 'consistent_random')
    truth = {**by_murmur2, **by_crc32}
    landed = {r.key.decode(): r.partition for r in consume(kafka_bootstrap, changelog(names), 40)}
    assert landed == {**{k: murmur2_partition(k.encode(), 3) for k in by_murmur2},
                      **{k: crc32_partition(k.encode(), 3) for k in by_crc32}}
    assert any(crc32_partition(k.encode(), 3) != murmur2_partition(k.encode(), 3)
               for k in by_crc32)
    wait_for(lambda: answers_all(worker, truth, range(3)), 60, 'every key from every slot')
    each_slot_answers_alone(worker, truth, 3)



@pytest.mark.parametrize('guarantee', ['at_least_once', 'exactly_once'])
def test_orders_joined_with_a_global_table_of_prices_give_the_right_totals(
        tmp_path, names, workers, kafka_bootstrap, guarantee):
    names = {**names, 'updates': f'prices-{names["app"]}'}
    app = write_app(tmp_path, JOIN_APP.format(guarantee=guarantee, **names))
    worker = workers(app, extra=('-w', '2'))
    worker.split_between(2)
    rng = random.Random(7)
    price_of = {f'item-{n}': rng.randint(1, 50) for n in range(30)}
    produce(kafka_bootstrap, names['updates'], [(item, 0) for item in price_of])
    produce(kafka_bootstrap, names['updates'], price_of.items())   # the last price wins
    wait_for(lambda: answers_all(worker, price_of, (0, 1), 'prices'), 60,
             'every price in both slots')
    orders = [(f'customer-{rng.randrange(12)}',
               {'item': rng.choice(list(price_of)), 'quantity': rng.randint(1, 4)})
              for _ in range(400)]
    truth = collections.Counter()
    for customer, order in orders:
        truth[customer] += price_of[order['item']] * order['quantity']
    produce(kafka_bootstrap, names['source'], orders)
    wait_for(lambda: answers_all(worker, dict(truth), (0,), 'spent'), 90,
             'every customer\'s total')


def test_a_restart_reads_only_what_was_written_while_down_and_sees_its_keys(
        tmp_path, names, workers, kafka_bootstrap):
    app = rates_app(tmp_path, names, 'exactly_once')
    datadir = tmp_path / 'data'
    first = workers(app, 'first', extra=('-w', '2'), datadir=datadir)
    first.split_between(2)
    before = {f'k-{n}': n for n in range(30)}
    fill_placed(kafka_bootstrap, changelog(names), before, murmur2_partition)
    wait_for(lambda: answers_all(first, before, (0, 1)), 60, 'every key in both slots')
    assert first.stop()[0] == 0
    changed = {'k-3': 333, 'k-7': 777, 'k-5': None}       # by their producer; None deletes
    added = {'new-1': 1, 'new-2': 2}                       # by another one
    fill_placed(kafka_bootstrap, changelog(names), changed, murmur2_partition)
    fill_placed(kafka_bootstrap, changelog(names), added, crc32_partition)
    while_down = {**changed, **added}
    del before['k-5'], while_down['k-5']
    second = workers(app, 'second', extra=('-w', '2'), datadir=datadir)
    second.split_between(2)
    for slot in (0, 1):
        assert described(second, slot)['read_since_start'] == len(while_down) + 1
        assert lookup(second, 'k-5', slot)[0] == 404
    assert answers_all(second, {**before, **while_down}, (0, 1))
    assert 'rebuilding global table' not in second.log()



def throttle(bootstrap, client_id, bytes_per_second):
    """Have the broker hold the fetches of ``client_id`` to this rate (a client quota)."""
    entry = AlterClientQuotasRequest.EntryData
    request = AlterClientQuotasRequest(entries=[entry(
        entity=[entry.EntityData(entity_type='client-id', entity_name=client_id)],
        ops=[entry.OpData(key='consumer_byte_rate', value=float(bytes_per_second),
                          remove=False)])], validate_only=False)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        [answer] = admin._manager.run(admin._manager.send, request).entries
        assert answer.error_code == 0, answer
    finally:
        admin.close()


def test_a_slot_is_ready_and_its_agents_start_only_once_its_global_tables_are_loaded(
        tmp_path, names, workers, kafka_bootstrap, admin):
    admin.create_topics([NewTopic(changelog(names), CHANGELOG_PARTITIONS, 1),
                         NewTopic(names['source'], 4, 1)])
    truth = {f'k-{n}': 'x' * 1000 for n in range(600)}
    fill_placed(kafka_bootstrap, changelog(names), truth, murmur2_partition)
    produce(kafka_bootstrap, names['source'], [('order', 1)])
    throttle(kafka_bootstrap, f'{names["app"]}-slot0-global', 50_000)   # loads in ~12 s
    worker = workers(rates_app(tmp_path, names))
    reasons = []

    def ready():
        status, body = worker.get('/ready')
        reasons.append(body and body['reason'])
        return status == 200
    wait_for(ready, 90, 'the slot to be ready')
    state = described(worker)
    assert (state['loaded'], state['read_since_start']) == (True, len(truth))
    [listed] = worker.state(0, '/tables')['global_tables']
    assert (listed['name'], listed['loaded'], listed['read_since_start']) == (
        'rates', True, len(truth))
    assert any(reason and reason.startswith('loading global tables rates: ')
               for reason in reasons)
    [record] = consume(kafka_bootstrap, names['sink'], count=1)
    assert json.loads(record.value) == len(truth)        # the agent saw every rate
    assert 'loaded global table rates: 600 records' in worker.log()


def test_a_rolling_restart_hands_the_global_tables_over_with_their_data_directories(
        tmp_path, names, workers, kafka_bootstrap):
    pidfile = tmp_path / 'runner.pid'
    worker = workers(rates_app(tmp_path, names), extra=('-w', '2', '--pidfile', str(pidfile)))
    old = worker.split_between(2)
    truth = {f'k-{n}': n for n in range(40)}
    fill_placed(kafka_bootstrap, changelog(names), truth, murmur2_partition)
    wait_for(lambda: answers_all(worker, truth, (0, 1)), 60, 'every key in both slots')
    result = run_cli(['restart', '--pidfile', str(pidfile), '--timeout', '120'], tmp_path,
                     timeout=150)
    assert result.returncode == 0, result.stderr
    assert not set(old) & set(worker.split_between(2))
    for slot in (0, 1):                 # the successors read on from where their slot was
        assert (described(worker, slot)['read_since_start'], described(worker, slot)['loaded']) \
            == (0, True)
    assert answers_all(worker, truth, (0, 1))
    fill_placed(kafka_bootstrap, changelog(names), {'after': 1}, crc32_partition)
    wait_for(lambda: answers_all(worker, {'after': 1}, (0, 1)), 60, 'a key written after')
