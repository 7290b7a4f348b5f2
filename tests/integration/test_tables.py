"""Tables against the real broker: exact counts, recovery, standby replicas, queries, windows."""

import collections
import re
import signal

import pytest
from apps import VOCABULARY, count_app, counts_of, lookup, some_words
from harness import (
    Worker,
    end_offsets,
    free_port,
    murmur2_partition,
    produce,
    run_cli,
    wait_for,
)


def same_answer(worker, word):
    """Both slots' answer for ``word`` when they agree and are not stale, else None."""
    first, second = lookup(worker, word, 0), lookup(worker, word, 1)
    return first if first == second and first[0] == 200 else None


GUARANTEES = pytest.mark.parametrize('guarantee', ['at_least_once', 'exactly_once'])


@GUARANTEES
def test_counts_equal_the_truth_and_any_slot_answers_any_key(tmp_path, names, workers,
                                                             kafka_bootstrap, guarantee):
    worker = workers(count_app(tmp_path, names, guarantee=guarantee), extra=('-w', '2'))
    worker.split_between(2)
    words = some_words(3000)
    produce(kafka_bootstrap, names['source'], [(w, w) for w in words])
    truth = collections.Counter(words)
    wait_for(lambda: counts_of(worker, truth) == truth, 60, 'counts to reach the truth')
    owners = set()
    for word in truth:
        first = wait_for(lambda w=word: same_answer(worker, w), 30, f'both slots to agree on {word}')
        status, body = first
        assert status == 200 and body['value'] == truth[word] and body['stale'] is False
        assert body['partition'] in range(4)
        owners.add(body['served_by'])
    assert len(owners) == 2
    assert lookup(worker, 'never-seen')[0] == 404
    listing = worker.state(0, '/tables')
    assert listing['tables'][0]['name'] == 'counts' and len(listing['tables'][0]['active']) == 2
    assert sorted(map(int, listing['tables'][0]['standby'])) == sorted(set(range(4)) - set(
        listing['tables'][0]['active']))


def test_kill_9_of_a_slot_never_undercounts_and_recovers_its_state(tmp_path, names, workers,
                                                                  kafka_bootstrap):
    worker = workers(count_app(tmp_path, names, body='time.sleep(0.0005)'), extra=('-w', '2'))
    first, _ = worker.split_between(2)
    words = some_words(6000, seed=2)
    produce(kafka_bootstrap, names['source'], [(w, w) for w in words[:3000]])
    wait_for(lambda: sum(counts_of(worker, VOCABULARY[:10]).values()) > 0, 30, 'counting')
    import os
    os.kill(first, signal.SIGKILL)
    produce(kafka_bootstrap, names['source'], [(w, w) for w in words[3000:]])
    truth = collections.Counter(words)
    wait_for(lambda: (worker.state(0) or {}).get('pid') not in (None, first), 60,
             'slot 0 to restart')

    def settled():
        found = counts_of(worker, truth)
        return all(found[w] >= truth[w] for w in truth) and found
    found = wait_for(settled, 90, 'every count to reach the truth')
    assert all(found[w] >= truth[w] for w in truth)
    restarted = worker.state(0)['pid']
    assert {p for _, p, _, _ in worker.recoveries(restarted)} == set(
        worker.state(0, '/tables')['tables'][0]['active'])


def test_a_restart_with_intact_state_replays_only_the_tail(tmp_path, names, workers,
                                                          kafka_bootstrap, admin):
    app = count_app(tmp_path, names, partitions=2)
    changelog = f"{names['app']}-counts-changelog"
    first = workers(app, 'a')
    first.wait_ready()
    words = some_words(2000, seed=3)
    produce(kafka_bootstrap, names['source'], [(w, w) for w in words])
    truth = collections.Counter(words)
    wait_for(lambda: counts_of(first, truth) == truth, 60, 'the first counts')
    first.signal(signal.SIGTERM)
    assert first.wait(60) == 0
    after_first = changelog_end(kafka_bootstrap, changelog)

    other = workers(app, 'b')
    other.wait_ready()
    more = some_words(40, seed=4)
    produce(kafka_bootstrap, names['source'], [(w, w) for w in more])
    truth.update(more)
    wait_for(lambda: counts_of(other, truth) == truth, 60, 'the counts after the tail')
    other.signal(signal.SIGTERM)
    assert other.wait(60) == 0
    tail = changelog_end(kafka_bootstrap, changelog) - after_first
    assert 0 < tail < after_first

    again = workers.raw(first_args(first, app, kafka_bootstrap), first.port, 'a-again')
    again.wait_ready()
    assert counts_of(again, truth) == truth
    assert sum(records for _, _, records, _ in again.recoveries()) == tail


def first_args(worker, app, bootstrap):
    return ['-A', app, '-b', bootstrap, '-p', str(worker.port), '-D', str(worker.datadir),
            '-l', 'info']


def changelog_end(bootstrap, topic):
    return sum(end_offsets(bootstrap, topic).values())


def test_a_deleted_changelog_makes_the_slot_rebuild(tmp_path, names, workers, kafka_bootstrap,
                                                   admin):
    app = count_app(tmp_path, names, partitions=1)
    changelog = f"{names['app']}-counts-changelog"
    worker = workers(app, 'a')
    worker.wait_ready()
    produce(kafka_bootstrap, names['source'], [('w000', 'w000')] * 5)
    wait_for(lambda: counts_of(worker, ['w000']) == {'w000': 5}, 60, 'five counted')
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    admin.delete_topics([changelog])
    wait_for(lambda: changelog not in admin.list_topics(), 30, 'the changelog to be deleted')
    again = workers.raw(first_args(worker, app, kafka_bootstrap), worker.port, 'a-again')
    again.wait_ready()
    assert 'the changelog topic was deleted and created again' in again.log()
    assert lookup(again, 'w000')[0] == 404
    produce(kafka_bootstrap, names['source'], [('w000', 'w000')])
    wait_for(lambda: counts_of(again, ['w000']) == {'w000': 1}, 60, 'a count from scratch')


def fill_changelog(bootstrap, topic, keys, partitions):
    """Write ``key → 1`` for every key straight into a table's changelog, in its partition."""
    by_partition = collections.defaultdict(list)
    for key in keys:
        by_partition[murmur2_partition(key.encode(), partitions)].append((key, 1))
    for number, items in by_partition.items():
        produce(bootstrap, topic, items, partition=number)


def test_standby_takeover_reads_under_a_hundredth_of_a_cold_restore(tmp_path, names, kafka_bootstrap,
                                                        admin):
    app = count_app(tmp_path, names, partitions=4)
    changelog = f"{names['app']}-counts-changelog"
    admin.create_topics({changelog: {'num_partitions': 4, 'replication_factor': 1,
                                     'configs': {'cleanup.policy': 'compact'}}})
    keys = [f'k{n:06d}' for n in range(60000)]
    fill_changelog(kafka_bootstrap, changelog, keys, 4)
    doomed = Worker.for_app(tmp_path, app, kafka_bootstrap, 'doomed')
    survivor = Worker.for_app(tmp_path, app, kafka_bootstrap, 'survivor')
    try:
        doomed.wait_ready(120)
        survivor.wait_ready(120)
        wait_for(lambda: len(doomed.state(0)['assignment']) == 2
                 and len(survivor.state(0)['assignment']) == 2
                 and doomed.get('/ready')[0] == 200 and survivor.get('/ready')[0] == 200, 60,
                 'the partitions to be split')
        moving = set(doomed.state(0, '/tables')['tables'][0]['active'])
        ends = end_offsets(kafka_bootstrap, changelog)
        wait_for(lambda: standby_positions(survivor) == {p: ends[p] for p in moving}, 60,
                 'the standby replicas to catch up')
        cold_records = sum(ends[p] for p in moving)     # what a cold restore reads
        assert cold_records > 20000
        seen_before = len(survivor.recoveries())
        doomed.signal(signal.SIGKILL)

        def taken_over():
            return {p: (n, s) for _, p, n, s in survivor.recoveries()[seen_before:]
                    if p in moving}
        warm = wait_for(lambda: len(taken_over()) == 2 and taken_over(), 60,
                        'the survivor to take over')
        assert sum(n for n, _ in warm.values()) < cold_records / 100   # (times: bench/restore.py)
        key = next(k for k in keys if (survivor.state(0, f'/tables/counts/{k}') or {})
                   .get('partition') in moving)
        assert survivor.get(f'/tables/counts/{key}')[1]['value'] == 1
    finally:
        doomed.kill()
        survivor.kill()


def standby_positions(worker):
    """Standby partition → changelog offset reached, from ``GET /tables``."""
    standby = worker.state(0, '/tables')['tables'][0]['standby']
    return {int(number): offset for number, offset in standby.items()}


def test_ready_says_how_much_is_left_while_recovering(tmp_path, names, kafka_bootstrap, admin):
    app = count_app(tmp_path, names, partitions=1)
    changelog = f"{names['app']}-counts-changelog"
    admin.create_topics({changelog: {'num_partitions': 1, 'replication_factor': 1,
                                     'configs': {'cleanup.policy': 'compact'}}})
    fill_changelog(kafka_bootstrap, changelog, [f'k{n:06d}' for n in range(150000)], 1)
    worker = Worker.for_app(tmp_path, app, kafka_bootstrap)
    reasons = []
    try:
        def ready():
            status, body = worker.get('/ready')
            if body:
                reasons.append(body['reason'])
            return status == 200
        wait_for(ready, 120, 'recovery to finish', interval=0.01)
        counts = [int(m[1]) for m in (re.fullmatch(
            r'recovering tables counts\[0\]: (\d+) changelog records remaining', reason)
            for reason in reasons) if m]
        assert counts and counts[0] > 0, reasons            # right from its first answer
        assert counts == sorted(counts, reverse=True) and counts[0] <= 150000
        assert not [reason for reason in reasons if not re.fullmatch(
            r'starting|joining the consumer group|recovering tables counts\[0\]: (reading '
            r'where their changelogs end|\d+ changelog records remaining)|processing', reason)]
        assert worker.get('/tables/counts/k000123')[1]['value'] == 1
    finally:
        worker.kill()


def test_a_table_must_have_its_source_topics_partitions(tmp_path, names, kafka_bootstrap):
    app = count_app(tmp_path, names, partitions=4, table_partitions=3)
    result = run_cli(['-A', app, '-b', kafka_bootstrap, '-p', str(free_port()), '-D',
                      str(tmp_path / 'd'), '-l', 'error'], tmp_path)
    assert result.returncode == 78, result.stderr
    assert result.stderr.strip() == (
        f"runner: slot 0 could not start: table 'counts' has 3 partitions but agent "
        f"testapp.count updates it from topic {names['source']!r} with 4; tables must be "
        'co-partitioned with their source topics')
