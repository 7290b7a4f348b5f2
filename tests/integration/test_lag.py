"""``runner lag``: the group's committed offset, the end offset and the lag of every partition
it reads, agreeing with Kafka's own ``kafka-consumer-groups.sh --describe``."""

import json
import shutil
import subprocess

import kafka_broker
from harness import committed, produce, run_cli, wait_for, write_app
from kafka import KafkaAdminClient

APP = '''
import runner
app = runner.App({app!r}, commit_interval=0.2)
source = app.topic({source!r}, partitions=3, value_serializer='str')
counts = app.Table('counts', default=int)

@app.agent(source)
def count(stream):
    for word in stream:
        counts[word] += 1
'''


def kafkas_own_describe(bootstrap: str, group: str) -> dict[tuple[str, int], tuple]:
    """(topic, partition) → (current offset, log end offset, lag) as Kafka's tool says."""
    java = shutil.which('java')
    libs = kafka_broker.ensure_jars()
    out = subprocess.run([java, '-cp', f'{libs}/*',
                          'org.apache.kafka.tools.consumer.group.ConsumerGroupCommand',
                          '--bootstrap-server', bootstrap, '--describe', '--group', group],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    rows = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0] == group:
            rows[(fields[1], int(fields[2]))] = tuple(
                None if value == '-' else int(value) for value in fields[3:6])
    return rows


def test_lag_agrees_with_kafka_s_own_tool(tmp_path, names, workers, kafka_bootstrap):
    module = write_app(tmp_path, APP.format(**names))
    worker = workers(module)
    worker.wait_ready()
    produce(kafka_bootstrap, names['source'], [(f'w{n % 7}', f'w{n % 7}') for n in range(300)],
            encode=str.encode)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        wait_for(lambda: sum(committed(admin, names['app'], names['source']).values()) == 300,
                 60, 'every record committed')
    finally:
        admin.close()
    worker.stop()
    produce(kafka_bootstrap, names['source'], [(f'late{n}', f'late{n}') for n in range(40)],
            encode=str.encode)                 # read by nobody: the lag
    result = run_cli(['-A', module, '-b', kafka_bootstrap, 'lag', '--json'], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    ours = {(r['topic'], r['partition']): (r['committed'], r['end'], r['lag']) for r in rows}
    theirs = kafkas_own_describe(kafka_bootstrap, names['app'])
    source = {key: value for key, value in ours.items() if key[0] == names['source']}
    assert len(source) == 3 and sum(lag for _, _, lag in source.values()) == 40
    assert {key: ours[key] for key in theirs} == theirs
    assert set(source) <= set(theirs)
    table = run_cli(['-A', module, '-b', kafka_bootstrap, 'lag'], tmp_path)
    assert table.returncode == 0 and f'{names["source"]}' in table.stdout
    assert any(line.split()[-2:] == ['total', '40'] for line in table.stdout.splitlines()
               if line.startswith(names['source']))


def test_lag_of_an_unreachable_broker_is_one_line(tmp_path, names):
    module = write_app(tmp_path, APP.format(**names))
    result = run_cli(['-A', module, '-b', f'127.0.0.1:{kafka_broker.free_port()}',
                      '--broker-timeout', '2', 'lag'], tmp_path)
    assert result.returncode == 69, result.stderr
    assert 'Traceback' not in result.stderr and len(result.stderr.strip().splitlines()) == 1

