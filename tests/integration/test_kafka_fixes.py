"""Each kafka-python bug that runner/kafka/fixes.py works around, reproduced on the real
broker: the scenario goes wrong on plain kafka-python and right once patched; and the
leaner reading of records it installs reads what plain kafka-python reads."""

import json
import subprocess
import sys
from pathlib import Path

from harness import runner_env
from kafka import KafkaAdminClient, KafkaProducer

SCENARIOS = Path(__file__).with_name('kafka_bugs.py')
READER = Path(__file__).with_name('read_records.py')


def run(scenario, bootstrap, topic, patched):
    return last_line(SCENARIOS, [scenario, bootstrap, topic], patched)


def last_line(script, args, patched):
    """The JSON line a script prints, run in a process of its own (patched or not)."""
    result = subprocess.run([sys.executable, str(script), *args, *(['patched'] if patched else [])],
                            env=runner_env(), capture_output=True, text=True, timeout=120,
                            check=True)
    return json.loads(result.stdout.splitlines()[-1])


def test_a_resumed_partition_with_parked_records_is_fetched_again(kafka_bootstrap, topic_name):
    plain = run('parked', kafka_bootstrap, f'{topic_name}-plain', patched=False)
    assert plain == {'paused_partition_records': 5, 'other_records': 50}
    patched = run('parked', kafka_bootstrap, f'{topic_name}-patched', patched=True)
    assert patched == {'paused_partition_records': 50, 'other_records': 50}


def test_a_join_interrupted_by_a_poll_timeout_is_finished(kafka_bootstrap, topic_name):
    assert run('join', kafka_bootstrap, f'{topic_name}-plain', patched=False) == {
        'assigned': [0]}
    assert run('join', kafka_bootstrap, f'{topic_name}-patched', patched=True) == {
        'assigned': [0, 1]}



def test_a_fenced_member_is_told_at_its_next_poll(kafka_bootstrap, topic_name):
    assert run('fenced', kafka_bootstrap, f'{topic_name}-plain', patched=False) == {
        'raised': None, 'records': 10}
    assert run('fenced', kafka_bootstrap, f'{topic_name}-patched', patched=True) == {
        'raised': 'FencedInstanceIdError', 'records': 0}


def read(bootstrap, topic, isolation, patched):
    return last_line(READER, [bootstrap, topic, isolation], patched)


def transactions(bootstrap, topic):
    """Committed and aborted transactions over two partitions (one compressed), with plain
    records between them: headers, None and empty keys and values, a large value."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {'num_partitions': 2, 'replication_factor': 1}})
    admin.close()
    values = [b'', None, b'x' * 5000, json.dumps({'n': 1}).encode()]
    for compression, partition in ((None, 0), ('gzip', 1)):
        producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=compression,
                                 transactional_id=f'{topic}-{partition}', linger_ms=5)
        producer.init_transactions()
        for number, outcome in enumerate(['commit', 'abort', 'commit', 'abort', 'commit']):
            producer.begin_transaction()
            for n, value in enumerate(values * 5):
                producer.send(topic, partition=partition, value=value,
                              key=(None, f'{outcome}-{n}'.encode(), b'')[n % 4 % 3],
                              headers=[('h', b'v'), ('empty', b'')] if n % 2 else [])
            producer.flush()
            getattr(producer, f'{outcome}_transaction')()
        producer.close(10)
    plain = KafkaProducer(bootstrap_servers=bootstrap)
    for n in range(30):
        plain.send(topic, partition=n % 2, key=str(n).encode(), value=b'plain')
    plain.close(10)


def test_records_read_with_the_patches_are_those_kafka_python_reads(kafka_bootstrap,
                                                                    topic_name):
    transactions(kafka_bootstrap, topic_name)
    for isolation in ('read_committed', 'read_uncommitted'):
        plain = read(kafka_bootstrap, topic_name, isolation, patched=False)
        assert read(kafka_bootstrap, topic_name, isolation, patched=True) == plain
        keys = [record[6] for record in plain['records']]
        assert sum(key is not None and bytes.fromhex(key).startswith(b'abort')
                   for key in keys) == (0 if isolation == 'read_committed' else 2 * 2 * 5)
        assert len(keys) == 2 * (3 if isolation == 'read_committed' else 5) * 20 + 30
