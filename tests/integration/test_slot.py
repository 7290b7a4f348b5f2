"""One worker process against the real broker: commits, order, failures, signals."""

import os
import signal

from apps import forward_app, outputs
from harness import Worker, committed, free_port, produce, wait_for


def test_offsets_are_committed_exactly_up_to_what_was_processed(
        tmp_path, names, workers, kafka_bootstrap, admin):
    gate = tmp_path / 'gate'
    body = f"while event.value == 'block' and not pathlib.Path({str(gate)!r}).exists(): " \
           "time.sleep(0.01)"
    worker = workers(forward_app(tmp_path, names, body, partitions=1, concurrency=1))
    worker.wait_ready()
    produce(kafka_bootstrap, names['source'],
            [(None, i) for i in range(10)] + [(None, 'block')] + [(None, i) for i in range(5)])
    wait_for(lambda: committed(admin, names['app'], names['source']).get(0) == 10, 30,
             'the ten records before the blocked one to be committed')
    start = worker.get('/')[1]['uptime']
    wait_for(lambda: worker.get('/')[1]['uptime'] > start + 1.0, 10, 'five commit intervals')
    assert committed(admin, names['app'], names['source']) == {0: 10}
    assert worker.get('/')[1]['processed'] == {f'{names["source"]}:0': 10}
    gate.touch()
    wait_for(lambda: committed(admin, names['app'], names['source']).get(0) == 16, 30,
             'every record to be committed once the gate opens')


def test_order_is_kept_within_each_partition(tmp_path, names, workers, kafka_bootstrap):
    worker = workers(forward_app(tmp_path, names, partitions=4, concurrency=3))
    worker.wait_ready()
    produce(kafka_bootstrap, names['source'],
            [(f'k{n % 20}', n) for n in range(600)])
    seen = outputs(kafka_bootstrap, names['sink'], 600)
    assert sorted(item['value'] for item in seen) == list(range(600))
    by_key: dict[str, list[int]] = {}
    for item in seen:
        by_key.setdefault(item['key'], []).append(item['value'])
    for values in by_key.values():
        assert values == sorted(values)


def test_back_pressure_pauses_and_resumes_without_losing_records(
        tmp_path, names, workers, kafka_bootstrap):
    app = forward_app(tmp_path, names, body='time.sleep(0.0002)', partitions=2, concurrency=1,
                      max_inflight=30)
    worker = workers(app)
    worker.wait_ready()
    total = 4000
    produce(kafka_bootstrap, names['source'], [(f'k{n}', n) for n in range(total)])
    everything = set(range(total))
    seen = outputs(kafka_bootstrap, names['sink'], timeout=90,
                   until=lambda items: {item['value'] for item in items} >= everything)
    assert {item['value'] for item in seen} == everything


def test_two_workers_share_the_partitions(tmp_path, names, workers, kafka_bootstrap):
    app = forward_app(tmp_path, names, partitions=4)
    first, second = workers(app, 'a'), workers(app, 'b')
    first.wait_ready()
    second.wait_ready()

    def split():
        """Both ready and owning partitions, the four between them, in one read of each."""
        states = [first.state(), second.state()]
        return all(state and state['ready'] and state['assignment'] for state in states) and \
            sum(len(state['assignment']) for state in states) == 4
    wait_for(split, 30, 'the four partitions to be split between both workers')


def test_kill_9_loses_nothing(tmp_path, names, workers, kafka_bootstrap):
    app = forward_app(tmp_path, names, body='time.sleep(0.002)', partitions=4)
    doomed, survivor = workers(app, 'doomed'), workers(app, 'survivor')
    doomed.wait_ready()
    survivor.wait_ready()
    wait_for(lambda: doomed.get('/')[1]['assignment'], 30, 'the doomed worker to own partitions')
    total = 3000
    produce(kafka_bootstrap, names['source'], [(f'k{n}', n) for n in range(total)])
    wait_for(lambda: sum(int(v) for v in doomed.get('/')[1]['processed'].values()) > 100, 30,
             'the doomed worker to be mid-stream')
    doomed.signal(signal.SIGKILL)
    assert doomed.wait(10) == -signal.SIGKILL
    everything = set(range(total))
    seen = outputs(kafka_bootstrap, names['sink'], timeout=90,
                   until=lambda items: {item['value'] for item in items} >= everything)
    assert {item['value'] for item in seen} == everything


def test_an_agent_error_stops_its_partition_and_a_restart_retries_the_record(
        tmp_path, names, workers, kafka_bootstrap, admin):
    marker = tmp_path / 'failed-once'
    body = (f"if event.value == 'boom' and not pathlib.Path({str(marker)!r}).exists(): "
            f"pathlib.Path({str(marker)!r}).touch(); raise ValueError('boom')")
    worker = workers(forward_app(tmp_path, names, body, partitions=1, concurrency=2))
    worker.wait_ready()
    produce(kafka_bootstrap, names['source'], [(None, 1), (None, 'boom'), (None, 3)])
    wait_for(lambda: worker.state()['stopped'], 30, 'the partition to stop')
    wait_for(lambda: committed(admin, names['app'], names['source']) == {0: 1}, 30,
             'the records before the failed one to be committed')
    log = worker.log()
    assert f'raised on {names["source"]}[0]@1' in log
    assert 'Traceback' in log and 'ValueError: boom' in log
    worker.signal(signal.SIGHUP)                 # the fix is deployed (the marker)
    seen = outputs(kafka_bootstrap, names['sink'], 3)
    assert [item['value'] for item in seen] == [1, 'boom', 3]
    wait_for(lambda: committed(admin, names['app'], names['source']) == {0: 3}, 60,
             'the retried record to be committed')
    assert 'exited with code 70' not in worker.log() and worker.proc.poll() is None


def test_term_finishes_records_in_hand_and_exits_0(
        tmp_path, names, workers, kafka_bootstrap, admin):
    app = forward_app(tmp_path, names, body='time.sleep(0.05)', partitions=1, concurrency=1)
    worker = workers(app)
    worker.wait_ready()
    produce(kafka_bootstrap, names['source'], [(None, n) for n in range(40)])
    wait_for(lambda: worker.get('/')[1]['processed'], 30, 'processing to start')
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    done = committed(admin, names['app'], names['source'])[0]
    assert done > 1
    seen = outputs(kafka_bootstrap, names['sink'], done)
    assert [item['offset'] for item in seen] == list(range(done))
    assert 'warm shutdown requested' in worker.log()


def test_quit_exits_at_once_without_waiting_for_the_record_in_progress(tmp_path, names, workers,
                                                                        kafka_bootstrap):
    busy = tmp_path / 'busy'
    app = forward_app(tmp_path, names, body=f'pathlib.Path({str(busy)!r}).touch(); time.sleep(120)',
                      partitions=1, concurrency=1)
    worker = workers(app)
    worker.wait_ready()
    produce(kafka_bootstrap, names['source'], [(None, n) for n in range(5)])
    wait_for(busy.exists, 30, 'a record in progress')
    worker.signal(signal.SIGQUIT)
    assert worker.wait(30) == 0         # its record would take 120 s: QUIT did not wait for it


def test_usr1_dumps_every_thread_to_the_log(tmp_path, names, workers):
    worker = workers(forward_app(tmp_path, names))
    worker.wait_ready()
    worker.signal(signal.SIGUSR1)
    log = wait_for(lambda: 'end of stack dump of slot 0' in worker.log() and worker.log(), 10,
                   "the slot's stack dump (the main process dumps its own first)")
    assert 'stack dump of slot 0' in log
    assert log.count('Thread 0x') >= 4          # main, consumer, agents, web
    assert worker.get('/health')[0] == 200


def test_ready_is_503_while_joining_and_health_stays_200(tmp_path, names, workers):
    app = forward_app(tmp_path, names)
    source = tmp_path / f'{app}.py'      # a frozen member holds the group for 60 s, and its
    source.write_text(source.read_text().replace('session_timeout=6', 'session_timeout=60'))
    (tmp_path / 'frozen.yaml').write_text('heartbeat_timeout: 60\n')   # main does not kill it
    first = workers(app, 'first', extra=('-c', str(tmp_path / 'frozen.yaml')))
    first.wait_ready()
    [frozen] = first.slot_pids(1)
    os.kill(frozen, signal.SIGSTOP)     # the group cannot settle until its session expires
    try:
        second = workers(app, 'second')
        wait_for(lambda: second.get('/ready') == (503, {
            'ready': False, 'reason': 'joining the consumer group'}), 30,
            'the newcomer to say it is joining')
        assert second.get('/health') == (200, {'live': True, 'reason': 'running'})
    finally:
        os.kill(frozen, signal.SIGCONT)
    second.wait_ready()
    state = wait_for(lambda: (s := second.state())['assignment'] and s, 30,
                     'the partition that moves to the newcomer (a cooperative second round)')
    assert state['app'] == names['app'] and state['slot'] == 0
    assert state['group']['state'] == 'stable'


def test_ready_is_503_until_the_broker_answers(tmp_path, names, workers):
    app = forward_app(tmp_path, names)
    worker = Worker.for_app(tmp_path, app, f'127.0.0.1:{free_port()}', 'nobroker',
                            ['--broker-timeout=3'])
    try:
        wait_for(lambda: worker.get('/health')[0] == 200, 10, 'the web server')
        assert worker.get('/ready') == (503, {'ready': False, 'reason': 'starting'})
        assert worker.wait(30) == 69
        assert 'cannot reach Kafka' in worker.log()
    finally:
        worker.kill()
