"""A slot's Prometheus metrics: names, types and labels as scraped, and records counted
per batch by the streams."""

import time
from types import SimpleNamespace

from kafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

import runner
from runner.config import Settings
from runner.main.publisher import PublishedFile, scrape_targets
from runner.reports import LAST_EXIT_ENV, RESTARTS_ENV
from runner.runtime.context import AgentContext
from runner.runtime.metrics import SlotCollector
from runner.runtime.queues import Inbox, Stopped
from runner.runtime.slot import Slot
from runner.runtime.stream import Stream
from runner.state.globals import GlobalReader
from runner.state.manager import StateManager

TP0, TP1 = TopicPartition('orders', 0), TopicPartition('orders', 1)
TASK = SimpleNamespace(enter=lambda: None, leave=lambda: None)
TOPIC = SimpleNamespace(value_codec=SimpleNamespace(loads=lambda value: value))


def fake_agent(name, processed, counts):
    return SimpleNamespace(agent=SimpleNamespace(name=name), processed=lambda: processed,
                           policy=SimpleNamespace(counts=counts))


def scraped(slot):
    content_type, body = slot.metrics.scrape()
    assert content_type.startswith('text/plain; version=')
    return {family.name: family for family in text_string_to_metric_families(body.decode())}


def samples(family):
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for sample in family.samples}


def slot_of(tmp_path, monkeypatch, environ=None):
    for name, value in (environ or {}).items():
        monkeypatch.setenv(name, value)
    slot = Slot(runner.App('metered'), Settings(datadir=str(tmp_path)))
    slot._agents = [fake_agent('metered.count', {TP0: 5, TP1: 7},
                               {'failed': 3, 'dead_lettered': 1, 'skipped': 0, 'retried': 2})]
    slot._consumer = SimpleNamespace(lag=lambda: {TP0: 4, TP1: 0}, backlog=lambda: {TP0: 9},
                                     rebalances=2)
    return slot


def test_a_slot_exports_its_counts_with_prometheus_names_types_and_labels(tmp_path,
                                                                          monkeypatch):
    families = scraped(slot_of(tmp_path, monkeypatch))
    kinds = {name: family.type for name, family in families.items() if name.startswith('runner_')}
    assert kinds == {
        'runner_records_processed': 'counter', 'runner_records_failed': 'counter',
        'runner_records_retried': 'counter', 'runner_records_dead_lettered': 'counter',
        'runner_records_skipped': 'counter', 'runner_consumer_lag_records': 'gauge',
        'runner_records_queued': 'gauge', 'runner_rebalances': 'counter',
        'runner_kafka_reachable': 'gauge', 'runner_slot_ready': 'gauge',
        'runner_slot_restarts': 'counter', 'runner_checkpoint_duration_seconds': 'histogram',
        'runner_offsets_committed': 'counter', 'runner_changelog_records_sent': 'counter',
        'runner_transactions': 'counter', 'runner_partitions_revoked': 'counter',
        'runner_partitions_assigned': 'counter', 'runner_batch_duration_seconds': 'histogram',
        'runner_record_age_seconds': 'histogram', 'runner_partitions_kept': 'counter',
        'runner_rebalance_handover_seconds': 'histogram'}
    agent = (('agent', 'metered.count'),)
    assert samples(families['runner_records_processed']) == {
        ('runner_records_processed_total', (*agent, ('partition', '0'), ('topic', 'orders'))): 5,
        ('runner_records_processed_total', (*agent, ('partition', '1'), ('topic', 'orders'))): 7}
    assert samples(families['runner_records_failed']) == {
        ('runner_records_failed_total', agent): 3}
    assert samples(families['runner_records_retried']) == {
        ('runner_records_retried_total', agent): 2}
    assert samples(families['runner_consumer_lag_records']) == {
        ('runner_consumer_lag_records', (('partition', '0'), ('topic', 'orders'))): 4,
        ('runner_consumer_lag_records', (('partition', '1'), ('topic', 'orders'))): 0}
    assert samples(families['runner_records_queued']) == {
        ('runner_records_queued', (('partition', '0'), ('topic', 'orders'))): 9}
    assert samples(families['runner_rebalances']) == {('runner_rebalances_total', ()): 2}
    assert samples(families['runner_kafka_reachable']) == {('runner_kafka_reachable', ()): 1}
    assert 'runner_slot_last_exit_code' not in families       # a first start


def test_a_restarted_slot_exports_its_restarts_and_its_predecessors_exit_code(tmp_path,
                                                                              monkeypatch):
    slot = slot_of(tmp_path, monkeypatch, {RESTARTS_ENV: '3', LAST_EXIT_ENV: '-9'})
    slot.status.kafka_lost = 12.0
    families = scraped(slot)
    assert samples(families['runner_slot_restarts']) == {('runner_slot_restarts_total', ()): 3}
    assert samples(families['runner_slot_last_exit_code']) == {
        ('runner_slot_last_exit_code', ()): -9}
    assert samples(families['runner_kafka_reachable']) == {('runner_kafka_reachable', ()): 0}


def test_a_slot_before_its_consumer_starts_exports_no_consumer_metrics(tmp_path, monkeypatch):
    slot = slot_of(tmp_path, monkeypatch)
    slot._consumer = None
    assert 'runner_consumer_lag_records' not in scraped(slot)


def test_the_collector_reads_the_environment_it_is_given():
    collector = SlotCollector(SimpleNamespace(), list, lambda: None,
                              environ={RESTARTS_ENV: '1'})
    assert collector._restarts == 1 and collector._last_exit is None


# -- counting in the stream, once per batch ---------------------------------------------

def stream_of(inbox):
    slot = SimpleNamespace(producer=SimpleNamespace(transactional=False))
    return Stream(TOPIC, inbox, AgentContext(slot), policy=None)


def queue_records(inbox, tp, offsets):
    inbox.put(tp, [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset,
                                   value=offset, timestamp=1000 * offset) for offset in offsets])


def test_a_stream_counts_the_records_of_each_batch_it_finishes_per_partition():
    inbox = Inbox()
    for tp in (TP0, TP1):
        inbox.assign(tp, TASK, held=False)
    queue_records(inbox, TP0, range(3))
    queue_records(inbox, TP1, range(10, 12))
    queue_records(inbox, TP0, range(3, 5))
    stream = stream_of(inbox)
    records = iter(stream)
    assert [next(records) for _ in range(3)] == [0, 1, 2]
    assert stream.processed == {}                   # the batch is not finished yet
    assert [next(records) for _ in range(2)] == [10, 11]
    assert stream.processed == {TP0: 3}
    assert [next(records) for _ in range(2)] == [3, 4]
    inbox.close(drain=True)
    assert list(records) == []
    assert stream.processed == {TP0: 5, TP1: 2}


def one_batch(count):
    """An inbox with one batch of ``count`` records of TP0, a stream of it, its iterator."""
    inbox = Inbox()
    inbox.assign(TP0, TASK, held=False)
    queue_records(inbox, TP0, range(count))
    stream = stream_of(inbox)
    return inbox, stream, iter(stream)


def test_a_stream_times_each_batch_it_finishes_once_with_its_last_records_timestamp():
    inbox = Inbox()
    inbox.assign(TP0, TASK, held=False)
    queue_records(inbox, TP0, range(3))
    queue_records(inbox, TP0, range(3, 5))
    inbox.close(drain=True)
    timed = []
    slot = SimpleNamespace(producer=SimpleNamespace(transactional=False))
    stream = Stream(TOPIC, inbox, AgentContext(slot), None, timing=
                    lambda taken_at, timestamp: timed.append((taken_at, timestamp)))
    assert list(stream) == [0, 1, 2, 3, 4]
    assert [timestamp for _, timestamp in timed] == [2000, 4000]
    assert timed[0][0] <= timed[1][0]


def test_batch_timing_observes_the_duration_and_the_age_of_the_last_record(
        tmp_path, monkeypatch):
    slot = slot_of(tmp_path, monkeypatch)
    timing = slot.metrics.batch_timing('metered.count')
    now = time.time()
    timing(time.monotonic() - 0.5, int((now - 30) * 1000))
    timing(time.monotonic(), -1)                    # a record without a timestamp
    families = scraped(slot)
    agent = (('agent', 'metered.count'),)
    durations = samples(families['runner_batch_duration_seconds'])
    assert durations['runner_batch_duration_seconds_count', agent] == 2
    assert 0.5 <= durations['runner_batch_duration_seconds_sum', agent] < 60
    ages = samples(families['runner_record_age_seconds'])
    assert ages['runner_record_age_seconds_count', agent] == 1
    assert 30 <= ages['runner_record_age_seconds_sum', agent] < 90


def test_a_record_tried_again_is_counted_once_with_its_batch():
    inbox, stream, records = one_batch(3)
    inbox.close(drain=True)
    assert next(records) == 0
    assert next(records) == 1                       # the agent raises on it: tried again
    stream.retry()
    assert list(stream) == [1, 2]
    assert stream.processed == {TP0: 3}


def test_a_batch_revoked_midway_counts_only_the_records_handed_out():
    inbox, stream, records = one_batch(5)
    assert [next(records) for _ in range(2)] == [0, 1]
    inbox.revoke([TP0])
    inbox.close(drain=True)
    assert list(records) == []
    assert stream.processed == {TP0: 2}


def test_a_partition_stopped_at_a_record_counts_the_records_before_it():
    _, stream, records = one_batch(4)
    assert [next(records) for _ in range(3)] == [0, 1, 2]
    stream.stop_partition(Stopped('a', stream.unfinished, 'raised'))     # at offset 2
    assert stream.processed == {TP0: 2}


def test_a_slot_with_tables_exports_their_size_on_disk_and_what_recovery_has_left(
        tmp_path, monkeypatch):
    table = runner.App('metered').Table('counts', default=int, partitions=2)
    state = StateManager([table], tmp_path / 'state', FakeReader)
    store = state.stores.open((table.changelog.name, 1))
    store.write([(b'word', b'1')], 'id-1', 1)
    state.recover([(table.changelog.name, 0)])
    slot = slot_of(tmp_path, monkeypatch)
    slot._state = state
    families = scraped(slot)
    [(name, labels)] = samples(families['runner_table_size_bytes'])
    assert labels == (('partition', '1'), ('table', 'counts'))
    assert samples(families['runner_table_size_bytes'])[name, labels] > 0
    assert samples(families['runner_table_partitions_recovering']) == {
        ('runner_table_partitions_recovering', ()): 1}
    assert samples(families['runner_table_recovery_remaining_records']) == {
        ('runner_table_recovery_remaining_records', ()): 42}
    state.stores.release((table.changelog.name, 1))


def test_a_slot_with_global_tables_exports_what_each_has_read_and_whether_it_is_loaded(
        tmp_path, monkeypatch):
    app = runner.App('metered')
    prices, rates = app.GlobalTable('prices'), app.GlobalTable('rates')
    reader = GlobalReader(Settings(), 'c', [prices, rates], tmp_path, {}, print)
    reader.read.update(prices=120, rates=3)
    slot = slot_of(tmp_path, monkeypatch)
    slot._global_tables = reader
    families = scraped(slot)
    assert samples(families['runner_global_table_records_read']) == {
        ('runner_global_table_records_read_total', (('table', 'prices'),)): 120,
        ('runner_global_table_records_read_total', (('table', 'rates'),)): 3}
    assert samples(families['runner_global_tables_loaded']) == {
        ('runner_global_tables_loaded', ()): 0}
    reader.loaded.set()
    assert samples(scraped(slot)['runner_global_tables_loaded']) == {
        ('runner_global_tables_loaded', ()): 1}


class FakeReader:
    """Stands in for the changelog reader thread: 42 records left to recover."""

    def __init__(self, stores, on_recovered):
        pass

    def recover(self, keys, request):
        pass

    def remaining(self, requests):
        return 42 if requests else 0


# -- the main process's target file for Prometheus ----------------------------------------

def test_the_target_file_lists_every_slot_that_has_a_web_address():
    rows = [{'slot': 0, 'pid': 10, 'web': '127.0.0.1:6066'},
            {'slot': 1, 'pid': 11, 'web': None},               # starting: no server yet
            {'slot': 2, 'pid': None, 'web': None},             # in its backoff
            {'slot': 3, 'pid': 13, 'web': '127.0.0.1:6069'}]
    assert scrape_targets('metered', rows) == [
        {'targets': ['127.0.0.1:6066'], 'labels': {'runner_app': 'metered', 'runner_slot': '0'}},
        {'targets': ['127.0.0.1:6069'], 'labels': {'runner_app': 'metered', 'runner_slot': '3'}}]


def test_a_published_file_is_replaced_only_when_its_text_changes_and_warns_once(
        tmp_path, caplog):
    path = tmp_path / 'run' / 'targets.json'
    published = PublishedFile(path, 'the targets are out of date')
    published.publish('[1]')                        # its directory is not there yet
    published.publish('[2]')
    assert [r.getMessage().endswith('the targets are out of date until it can be written')
            for r in caplog.records] == [True]
    path.parent.mkdir()
    published.publish('[2]')                        # tried again, though unchanged
    assert path.read_text() == '[2]'
    written = path.stat().st_ino
    published.publish('[2]')
    assert path.stat().st_ino == written            # unchanged: not replaced
    published.remove()
    assert not path.exists()
