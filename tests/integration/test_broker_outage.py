"""The broker goes away for longer than any Kafka timeout: slots stay up (not ready), keep
their state and resume when it is back; past ``broker_outage_limit`` a slot exits, and
the main process keeps starting it until Kafka answers again."""

import json
import re
import threading

import kafka_broker
import pytest
from apps import Load, assert_each_output_once, counts_of, wait_for_counts
from harness import Worker, wait_for, write_app

APP = '''
import runner

app = runner.App({app!r}, commit_interval=0.5, session_timeout=6)
source = app.topic({source!r}, partitions=4)
counts = app.Table('counts', default=int)


@app.agent(source, concurrency=2)
def count(stream):
    for event in stream.events():
        counts[event.key] += 1
'''

#: Three times every Kafka timeout a slot had (30 s) before it survived outages.
OUTAGE = 90


def meanwhile(check):
    """Run ``check()`` on a thread of its own while the test stops the broker (which must
    be started again from the thread that started it: it dies with that thread); returns
    a list that gets what it raised, if anything."""
    raised = []

    def run():
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            raised.append(exc)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, raised


def slot_reasons(worker, slots):
    return [(worker.get('/ready', slot)[1] or {}).get('reason', '') for slot in range(slots)]


def status_of(worker):
    return json.loads((worker.log_path.parent / 'w.pid.json').read_text())


@pytest.mark.long
def test_a_broker_outage_under_load_loses_nothing_and_restarts_no_slot(tmp_path, names):
    with kafka_broker.Broker() as broker:
        bootstrap = broker.bootstrap_servers
        app = write_app(tmp_path, APP.format(**names))
        worker = Worker.for_app(tmp_path, app, bootstrap,
                                extra=['-w', '2', '--pidfile', str(tmp_path / 'w.pid')])
        with worker:
            worker.split_between(2)
            pids = worker.slot_pids(2)
            load = Load(bootstrap, names['source'], 6000, rate=100)
            wait_for(lambda: len(load.ids) > 1500, 60, 'the load to be under way')

            def while_away():
                wait_for(lambda: all(r.startswith('waiting for Kafka')
                                     for r in slot_reasons(worker, 2)), 10,
                         'both slots to say they wait for Kafka')
                wait_for(lambda: status_of(worker)['waiting_for_kafka'], 10, 'the status')
                assert status_of(worker)['state'] == 'degraded'
                assert all(worker.get('/health', slot)[0] == 200 for slot in range(2))
            thread, raised = meanwhile(while_away)
            broker.restart(down=OUTAGE)
            thread.join(30)
            assert not raised, raised
            load.finish()
            wait_for_counts(worker, dict(load.truth), timeout=120, fresh=True)
            assert worker.slot_pids(2) == pids                 # no slot was restarted
            assert 'exited with code' not in worker.log()
            wait_for(lambda: not status_of(worker)['waiting_for_kafka'], 10, 'the status')
            log = worker.log()
            kafka_lines = re.findall(r'(?:WARNING|ERROR) kafka\.', log)
            assert len(kafka_lines) < 20, kafka_lines     # not ~1,000 a minute per slot
            assert log.count('Kafka cannot be reached; the slot keeps its state') == 2
            summaries = re.findall(r'Kafka was away for (\d+)s; (\d+) connection errors? of '
                                   r'the Kafka client kept at debug level', log)
            assert len(summaries) == 2 and all(int(away) >= OUTAGE - 10 for away, _ in summaries)


@pytest.mark.long
def test_an_outage_past_the_limit_restarts_slots_until_kafka_is_back(tmp_path, names):
    with kafka_broker.Broker() as broker:
        bootstrap = broker.bootstrap_servers
        app = write_app(tmp_path, APP.format(**names))
        (tmp_path / 'limits.yaml').write_text('broker_outage_limit: 5\nbroker_timeout: 2\n')
        worker = Worker.for_app(tmp_path, app, bootstrap,
                                extra=['-c', str(tmp_path / 'limits.yaml'),
                                       '--pidfile', str(tmp_path / 'w.pid')])
        with worker:
            worker.wait_ready()
            load = Load(bootstrap, names['source'], 500, rate=200)
            load.finish()
            wait_for_counts(worker, dict(load.truth), timeout=60)
            truth = load.truth

            def while_away():
                # exits 69 after 5 s, then each start gives up after 2 s: more than the
                # five failed starts after which a slot that cannot start is given up on
                # (backoffs of 1+2+4+8+16 s: the broker stays away about a minute)
                wait_for(lambda: worker.log().count('restarting it in') >= 6, 180,
                         'the slot to exit and be started again and again')
                assert worker.proc.poll() is None
                wait_for(lambda: status_of(worker)['waiting_for_kafka'], 10, 'the status')
            broker.restart(down=while_away)     # back once the slot was restarted 6 times
            load = Load(bootstrap, names['source'], 500, rate=200)
            load.finish()
            truth = truth + load.truth
            worker.wait_ready(timeout=120)
            wait_for(lambda: all(found >= truth[key] for key, found
                                 in counts_of(worker, truth).items()), 120,
                     'no count below the truth')       # at least once: none lost


#: Counts and forwards each record under exactly-once, committing every 0.1 s (its default).
EXACTLY_ONCE_APP = '''
import runner

app = runner.App({app!r}, processing_guarantee='exactly_once', session_timeout=6)
source = app.topic({source!r}, partitions=4)
sink = app.topic({sink!r}, partitions=4)
counts = app.Table('counts', default=int)


@app.agent(source, sink=[sink], concurrency=2)
def count(stream):
    for event in stream.events():
        counts[event.key] += 1
        yield event.value
'''


@pytest.mark.long
def test_an_exactly_once_outage_longer_than_the_transaction_timeout_is_ridden_out(
        tmp_path, names):
    with kafka_broker.Broker() as broker:
        bootstrap = broker.bootstrap_servers
        app = write_app(tmp_path, EXACTLY_ONCE_APP.format(**names))
        worker = Worker.for_app(tmp_path, app, bootstrap, extra=['-w', '2'])
        with worker:
            worker.split_between(2)
            pids = worker.slot_pids(2)
            load = Load(bootstrap, names['source'], 4000, rate=100)
            wait_for(lambda: len(load.ids) > 500, 60, 'the load to be under way')

            def while_away():
                wait_for(lambda: all(r.startswith('waiting for Kafka')
                                     for r in slot_reasons(worker, 2)), 15,
                         'both slots to say they wait for Kafka')
            thread, raised = meanwhile(while_away)
            broker.restart(down=30)         # the open transactions outlive their 10 s
            thread.join(30)
            assert not raised, raised
            load.finish()
            # the outputs first: one acknowledged to the load and never committed is lost
            # (its offset and its count are committed with it), whatever a lookup says
            assert_each_output_once(bootstrap, names['sink'], load.ids)
            wait_for_counts(worker, dict(load.truth), timeout=120, fresh=True)
            assert worker.slot_pids(2) == pids                 # no slot was restarted
            assert 'exited with code' not in worker.log()
