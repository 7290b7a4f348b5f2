"""``GET /metrics`` of a slot against the real broker: what checkpoints and transactions
did, and a slot's restart and the exit code of the process it replaced."""

import json
import os
import signal
import urllib.request

from apps import count_app, some_words
from harness import produce, wait_for
from prometheus_client.parser import text_string_to_metric_families

WORDS = 60


def scrape(worker, slot=0):
    """{sample name with its labels: value} of the slot's /metrics (None while it is down)."""
    try:
        with urllib.request.urlopen(f'http://{worker.host}:{worker.port + slot}/metrics',
                                    timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(samples, name):
    return sum(value for (sample, _), value in samples.items() if sample == name)


def test_a_slot_exports_its_transactions_checkpoints_tables_and_its_restart(
        tmp_path, names, workers, kafka_bootstrap):
    worker = workers(count_app(tmp_path, names, partitions=2, guarantee='exactly_once'))
    worker.wait_ready()
    produce(kafka_bootstrap, names['source'], ((word, word) for word in some_words(WORDS)))
    def counted_and_committed():
        found = scrape(worker)
        lags = [found.get(('runner_consumer_lag_records',
                           (('partition', str(p)), ('topic', names['source']))))
                for p in range(2)] if found else None
        return found if (found and lags == [0, 0]
                         and total(found, 'runner_records_processed_total') == WORDS
                         and total(found, 'runner_transactions_total') >= 1) else None
    samples = wait_for(counted_and_committed, 60, 'the words counted, committed, lag 0')
    assert samples['runner_transactions_total', (('outcome', 'committed'),)] >= 1
    assert samples.get(('runner_transactions_total', (('outcome', 'aborted'),)), 0) == 0
    assert total(samples, 'runner_changelog_records_sent_total') > 0
    assert total(samples, 'runner_offsets_committed_total') > 0
    assert samples['runner_checkpoint_duration_seconds_count', ()] >= 1
    assert total(samples, 'runner_table_size_bytes') > 0
    assert total(samples, 'runner_batch_duration_seconds_count') >= 1
    assert total(samples, 'runner_record_age_seconds_count') >= 1
    assert samples['runner_partitions_assigned_total', ()] == 2
    assert samples['runner_rebalances_total', ()] >= 1
    assert samples['runner_slot_restarts_total', ()] == 0
    assert ('runner_slot_last_exit_code', ()) not in samples

    os.kill(worker.state()['pid'], signal.SIGKILL)
    again = wait_for(lambda: (found := scrape(worker)) and found.get(
        ('runner_slot_restarts_total', ())) == 1 and found, 60, 'the restarted slot')
    assert again['runner_slot_last_exit_code', ()] == -signal.SIGKILL


def test_metrics_targets_lists_the_live_slots_without_a_pidfile(tmp_path, names, workers):
    targets = tmp_path / 'run' / 'targets.json'
    targets.parent.mkdir()
    worker = workers(count_app(tmp_path, names), extra=('-w', '2', '--metrics-targets',
                                                       str(targets)))
    def listed():
        try:
            return json.loads(targets.read_text())
        except (FileNotFoundError, ValueError):
            return None
    wait_for(lambda: len(listed() or ()) == 2, 60, 'both slots in the targets file')
    assert sorted(target['targets'][0] for target in listed()) == [
        f'127.0.0.1:{worker.port}', f'127.0.0.1:{worker.port + 1}']
    assert worker.stop()[0] == 0
    assert not targets.exists() and not list(tmp_path.glob('*.targets.json'))
