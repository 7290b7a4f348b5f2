"""Table queries across producers and hosts: partitioners, odd keys, two hosts, paging,
and answers that say "not known yet" rather than "no such key"."""

import collections
import json
import urllib.error
import urllib.parse
import urllib.request

from harness import Worker, free_port, produce, run_cli, wait_for, write_app

from runner.app.partitioners import crc32_partition, murmur2_partition

TABLE_APP = '''
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6)
orders = app.topic({source!r}, partitions=4, value_serializer='str'{partitioner})
totals = app.Table('totals', default=int)
recent = app.Table('recent', default=int).tumbling(3600)


@app.agent(orders, concurrency=2)
def total(stream):
    for customer in stream:
        totals[customer] += 1
        recent[customer] += 1
'''


def table_app(tmp_path, names, partitioner=''):
    return write_app(tmp_path, TABLE_APP.format(
        partitioner=f', partitioner={partitioner!r}' if partitioner else '', **names))


def produce_placed(bootstrap, topic, keys, place, partitions=4):
    """Send each key (value = key) to the partition ``place`` gives it, as a librdkafka
    producer would."""
    by_partition = collections.defaultdict(list)
    for key in keys:
        by_partition[place(key.encode(), partitions)].append((key, key))
    for number, items in by_partition.items():
        produce(bootstrap, topic, items, partition=number, encode=str.encode)


def answer(worker, key, slot=0, table='totals'):
    return worker.get(f'/tables/{table}/{urllib.parse.quote(key, safe="")}', slot)


def value_of(worker, key, slot=0, table='totals'):
    """A key's count as one slot answers it (windows summed), or None if not 200."""
    status, body = answer(worker, key, slot, table)
    if status != 200:
        return None
    return body['value'] if table == 'totals' else sum(w['value'] for w in body['value'])


def all_found(worker, truth, slots=(0, 1), table='totals'):
    """Every key answered 200 with its count by every slot named."""
    return all(value_of(worker, key, slot, table) == count
               for key, count in truth.items() for slot in slots)


def test_keys_placed_by_crc32_are_found_from_every_slot(tmp_path, names, workers,
                                                        kafka_bootstrap):
    worker = workers(table_app(tmp_path, names, 'crc32'), extra=('-w', '2'))
    worker.split_between(2)
    keys = [f'customer-{n}' for n in range(50)]
    produce_placed(kafka_bootstrap, names['source'], keys, crc32_partition)
    truth = dict.fromkeys(keys, 1)
    wait_for(lambda: all_found(worker, truth), 60, 'every key from both slots')
    wait_for(lambda: all_found(worker, truth, table='recent'), 60, 'every key\'s window')
    for key in keys:
        found = answer(worker, key)[1]
        assert found['partition'] == crc32_partition(key.encode(), 4)
        assert 'misplaced' not in found                  # found where the partitioner says


def test_a_key_placed_by_another_partitioner_than_declared_is_still_found(
        tmp_path, names, workers, kafka_bootstrap):
    worker = workers(table_app(tmp_path, names), extra=('-w', '2'))     # murmur2 declared
    worker.split_between(2)
    keys = [f'customer-{n}' for n in range(50)]
    produce_placed(kafka_bootstrap, names['source'], keys, crc32_partition)   # but crc32 used
    truth = dict.fromkeys(keys, 1)
    wait_for(lambda: all_found(worker, truth), 60, 'every key found by asking the owners')
    misplaced = [key for key in keys if crc32_partition(key.encode(), 4) != murmur2_partition(
        key.encode(), 4)]
    assert misplaced and all(answer(worker, key, slot)[1]['misplaced']
                             for key in misplaced for slot in (0, 1))
    assert answer(worker, 'never-sent')[0] == 404 and answer(worker, 'never-sent', 1)[0] == 404
    assert 'its producers place keys with another partitioner' in worker.log()


def test_keys_with_odd_characters_are_forwarded_intact(tmp_path, names, workers,
                                                       kafka_bootstrap):
    worker = workers(table_app(tmp_path, names), extra=('-w', '2'))
    worker.split_between(2)
    keys = ['a b', 'ü-ñ', '50%', 'x/y', 'what?', 'tag#1', '%2F', 'plus+sign']
    produce(kafka_bootstrap, names['source'], [(k, k) for k in keys], encode=str.encode)
    truth = dict.fromkeys(keys, 1)
    wait_for(lambda: all_found(worker, truth), 60, 'every odd key from both slots')
    served = {answer(worker, key, slot)[1]['served_by'] for key in keys for slot in (0, 1)}
    assert len(served) == 2                      # half of them were forwarded
    assert all(answer(worker, key, slot)[1]['key'] == key for key in keys for slot in (0, 1))


def test_two_hosts_forward_to_each_other(tmp_path, names, kafka_bootstrap):
    app = table_app(tmp_path, names)
    first = Worker.for_app(tmp_path, app, kafka_bootstrap, 'host1', host='127.0.0.1')
    second = Worker.for_app(tmp_path, app, kafka_bootstrap, 'host2', host='0.0.0.0',
                            extra=('--web-advertise', '127.0.0.2'))
    second.host = '127.0.0.2'
    with first, second:
        wait_for(lambda: first.state() and second.state() and first.state()['assignment']
                 and second.state()['assignment'] and first.state()['ready']
                 and second.state()['ready'], 60, 'both hosts to share the partitions')
        keys = [f'customer-{n}' for n in range(40)]
        produce(kafka_bootstrap, names['source'], [(k, k) for k in keys], encode=str.encode)
        truth = dict.fromkeys(keys, 1)
        for host in (first, second):
            wait_for(lambda host=host: all_found(host, truth, slots=(0,)), 60,
                     f'every key from {host.host}')
        served = {answer(host, key)[1]['served_by'] for key in keys for host in (first, second)}
        assert served == {f'127.0.0.1:{first.port}', f'127.0.0.2:{second.port}'}
        assert f'other members reach this slot at http://127.0.0.2:{second.port}/' in \
            second.log()


def test_pages_walk_every_key_once_in_key_order(tmp_path, names, workers, kafka_bootstrap):
    worker = workers(table_app(tmp_path, names))
    worker.wait_ready()
    keys = [f'c{n:03d}' for n in range(250)]
    produce(kafka_bootstrap, names['source'], [(k, k) for k in keys], encode=str.encode)
    wait_for(lambda: worker.state(0, '/tables/totals?limit=1000')['keys'] == keys, 60,
             'every key listed')
    for table in ('totals', 'recent'):
        seen, after = [], None
        while True:
            query = '?limit=100' + (f'&after={urllib.parse.quote(after)}' if after else '')
            page = worker.state(0, f'/tables/{table}{query}')
            seen += page['keys']
            after = page['next']
            if after is None:
                break
            assert len(page['keys']) == 100
        assert seen == keys, table
    assert worker.get('/tables/totals?limit=0')[0] == 400
    assert worker.get('/tables/totals?limit=abc')[0] == 400


def test_before_the_tables_are_open_queries_say_try_again(tmp_path, names):
    app = table_app(tmp_path, names)
    nowhere = f'127.0.0.1:{free_port()}'
    worker = Worker.for_app(tmp_path, app, nowhere, 'nobroker', extra=('--broker-timeout=30',))
    with worker:
        wait_for(lambda: worker.get('/health')[0] == 200, 30, 'the web server')
        for path in ('/tables', '/tables/totals', '/tables/totals/someone'):
            try:
                urllib.request.urlopen(f'http://127.0.0.1:{worker.port}{path}', timeout=5)
                raise AssertionError(f'{path} answered 200 before the tables were open')
            except urllib.error.HTTPError as error:
                assert (error.code, error.headers['Retry-After']) == (503, '1'), path


def test_send_places_keys_with_the_topic_s_partitioner(tmp_path, names, kafka_bootstrap,
                                                       admin):
    app = table_app(tmp_path, names, 'crc32')
    admin.create_topics({names['source']: {'num_partitions': 4, 'replication_factor': 1}})
    for key in ('alpha', 'beta', 'gamma', 'delta'):
        result = run_cli(['-A', app, '-b', kafka_bootstrap, 'send', names['source'], 'v',
                          '-k', key], tmp_path)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)['partition'] == crc32_partition(key.encode(), 4)
