"""Stateful word count in ONE worker slot vs the raw kafka-python consume loop, on one topic.

    python bench/wordcount.py [--records N] [--repeat R] [--seed S] [--distinct D]
                              [--compare CHECKOUT] [--metrics-off] [--scrape]
                              [--exactly-once [--exactly-once-interval S]]

Produces N words (key = value = the word, D (2000) distinct, 4 partitions) once, then runs,
alternating, R times each (each side's median, and its spread: highest minus lowest over
the median):

* raw: ``baseline_consumer.py`` counting the records with a plain ``KafkaConsumer``
  (a group of its own), timed from its partition assignment;
* runner: a worker of an app with a ``counts`` table (``counts[word] += 1``), timed
  from ``/ready`` = 200 until the processed offsets of ``GET /`` reach N (processing
  rate), and until the group's committed offsets reach the end and sampled counts
  equal the truth (end-to-end rate); then every count is checked once;
* with ``--compare``: the same runner run from another checkout of this repository
  (an earlier commit, say), so two versions are measured side by side;
* with ``--metrics-off``: the same runner with its metrics made no-ops (:data:`METRICS_OFF`),
  so metrics on and off are measured side by side;
* with ``--scrape``: the same runner with ``GET /metrics`` asked every second while it
  runs, as Prometheus would, so the cost of the metrics is measured side by side;
* with ``--exactly-once``: the same app with ``processing_guarantee='exactly_once'``
  (its default commit interval, 0.1 s, or ``--exactly-once-interval``), so the cost
  of transactions is measured side by side with at-least-once.

Uses ``$KAFKA_BOOTSTRAP_SERVERS`` if set, else starts a broker of its own.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import random
import statistics
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import (
    REPO,
    Worker,
    committed,
    cpu_seconds,
    create_topic,
    delete_run_topics,
    emit_json,
    end_offsets,
    kafka_bootstrap,
    median,
    peak_rss_mb,
    progress,
    rate,
    ratio,
    run_baseline_consumer,
    run_id,
    run_main,
    say,
    scratch_dir,
    timed_produce,
    wait_for,
    write_app,
)
from kafka import KafkaAdminClient

PARTITIONS = 4
#: Distinct words, unless ``--distinct`` says otherwise.
VOCABULARY = 2000
#: Words whose counts are checked while timing the end-to-end rate (all are checked after).
SAMPLE = 50

APP_SOURCE = '''\
import runner

app = runner.App({app!r}{settings})
words = app.topic({topic!r}, partitions={partitions}, value_serializer='str')
counts = app.Table('counts', default=int, partitions={partitions})


@app.agent(words)
def count(stream):
    for word in stream:
        counts[word] += 1
'''
#: Put before the app of the ``metrics-off`` side: the slot's metrics become no-ops (no
#: batch timing, no clock read per batch, checkpoints and rebalances count nothing), as if
#: the runner had none; it is not scraped.  Imported in the slot before it starts.
METRICS_OFF = '''\
import contextlib

from prometheus_client.metrics import MetricWrapperBase

import runner.runtime.metrics as _metrics


class _Nothing:
    def labels(self, *_):
        return self

    def inc(self, *_):
        pass

    def observe(self, *_):
        pass

    def time(self):
        return contextlib.nullcontext()


_made = _metrics.SlotMetrics.__init__


def _made_off(self):
    _made(self)
    for name, value in list(vars(self).items()):
        if isinstance(value, MetricWrapperBase):
            setattr(self, name, _Nothing())


_metrics.SlotMetrics.__init__ = _made_off
_metrics.SlotMetrics.batch_timing = lambda self, agent: None
'''


def make_words(count: int, seed: int, distinct: int) -> list[str]:
    """``count`` words drawn uniformly from a fixed vocabulary of ``distinct`` words."""
    rng = random.Random(seed)
    vocabulary = [f'word{n:06d}' for n in range(distinct)]
    return [rng.choice(vocabulary) for _ in range(count)]


def run_raw(bootstrap: str, topic: str, count: int, group: str) -> dict[str, Any]:
    """One baseline run: the raw consume loop, in a process of its own."""
    report = run_baseline_consumer(bootstrap, topic, ['--group', group, '--count', str(count)],
                                   timeout=max(120.0, count / 2000))
    return {'rate': report['rate'], 'seconds': report['seconds'], 'cpu_s': report['cpu_s'],
            'records_per_cpu_s': rate(count, report['cpu_s']),
            'peak_rss_mb': report['peak_rss_mb']}


def processed_total(state: dict[str, Any], topic: str) -> int:
    """Sum of the processed offsets (next offset) in a ``GET /`` answer over ``topic``."""
    processed = state.get('processed', {})
    return sum(offset for name, offset in processed.items() if name.startswith(f'{topic}:'))


def counts_of(worker: Worker, words: list[str]) -> dict[str, int]:
    """The table's counts of ``words`` over HTTP (0 for a word it does not have)."""
    found = {}
    for word in words:
        status, body = worker.get(f'/tables/counts/{word}')
        found[word] = body['value'] if status == 200 else 0
    return found


def wrong_counts(worker: Worker, truth: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Every word whose count differs from the truth: word → (found, expected)."""
    found = counts_of(worker, list(truth))
    return {word: (found[word], expected) for word, expected in truth.items()
            if found[word] != expected}


@contextlib.contextmanager
def scraping(worker: Worker, interval: float = 1.0) -> Iterator[list[int]]:
    """Ask ``GET /metrics`` of the worker's slot every ``interval`` seconds in the block
    (as Prometheus would); the list it gives holds the number of answers, once it ends."""
    stop, answers = threading.Event(), [0]

    def scrape() -> None:
        while not stop.wait(interval):
            with (contextlib.suppress(OSError),
                  urllib.request.urlopen(f'http://{worker.host}:{worker.port}/metrics',
                                         timeout=5) as response):
                response.read()
                answers[0] += 1
    thread = threading.Thread(target=scrape, name='scraper', daemon=True)
    thread.start()
    try:
        yield answers
    finally:
        stop.set()
        thread.join()


def run_worker(bootstrap: str, admin: KafkaAdminClient, workdir: Path, topic: str,
               truth: dict[str, int], app: str, repo: Path,
               settings: dict[str, Any], scrape: bool = False,
               metrics_off: bool = False) -> dict[str, Any]:
    """One runner run: a fresh app (its own group and changelog) over the whole topic;
    with ``scrape``, its metrics asked for every second; with ``metrics_off``, none."""
    source = (METRICS_OFF if metrics_off else '') + APP_SOURCE.format(app=app, topic=topic, partitions=PARTITIONS,
                               settings=''.join(f', {k}={v!r}' for k, v in settings.items()))
    module = write_app(workdir, source, app.replace('-', '_'))
    with (Worker.for_app(workdir, module, bootstrap, app, repo=repo) as worker,
          scraping(worker) if scrape else contextlib.nullcontext([0]) as scrapes):
        timed = time_processing(worker, topic, sum(truth.values()))
        timed['end_to_end_s'] = wait_settled(worker, admin, app, topic, truth) - timed['ready_at']
        wrong = wrong_counts(worker, truth)
        rss = peak_rss_mb(timed['pid'])
        exit_code, stop_seconds = worker.stop()
    records = timed['records']
    return {'rate': rate(records, timed['processing_s']),
            'end_to_end_rate': rate(records, timed['end_to_end_s']),
            'records_per_cpu_s': rate(records, timed['cpu_s']),
            **{key: round(value, 3) for key, value in timed.items()
               if key.endswith('_s')},
            'processed_at_ready': timed['processed_at_ready'], 'peak_rss_mb': rss,
            'wrong_counts': len(wrong), 'wrong_examples': dict(list(wrong.items())[:5]),
            'changelog_records': sum(end_offsets(bootstrap, f'{app}-counts-changelog').values()),
            'stop_exit_code': exit_code, 'stop_s': round(stop_seconds, 3),
            'scrapes': scrapes[0]}


def time_processing(worker: Worker, topic: str, count: int) -> dict[str, Any]:
    """Wait for ``/ready``, then time the slot until its processed offsets reach ``count``.

    Records already processed when ``/ready`` said 200 are not counted in the rate.
    """
    start_to_ready = worker.wait_ready(120)
    ready_at = time.monotonic()
    state = worker.state()
    pid = state['pid']
    cpu_at_ready = cpu_seconds(pid)
    wait_for(lambda: processed_total(worker.state() or {}, topic) >= count,
             max(120.0, count / 2000), 'the worker to process every record', interval=0.05)
    at_ready = processed_total(state, topic)
    return {'pid': pid, 'ready_at': ready_at, 'start_to_ready_s': start_to_ready,
            'processing_s': time.monotonic() - ready_at,
            'cpu_s': cpu_seconds(pid) - cpu_at_ready,
            'records': count - at_ready, 'processed_at_ready': at_ready}


def wait_settled(worker: Worker, admin: KafkaAdminClient, group: str, topic: str,
                 truth: dict[str, int]) -> float:
    """Wait until the committed offsets reach the end and sampled counts equal the truth;
    returns the monotonic time it happened."""
    count = sum(truth.values())
    sample = random.Random(0).sample(sorted(truth), min(SAMPLE, len(truth)))
    expected = {word: truth[word] for word in sample}

    def settled() -> bool:
        return (sum(committed(admin, group, topic).values()) >= count
                and counts_of(worker, sample) == expected)
    wait_for(settled, 60, 'the committed offsets to reach the end and the counts the truth')
    return time.monotonic()


def side(runs: list[dict]) -> dict[str, Any]:
    """The medians of one runner's runs, and the spread of its rates and records per CPU
    second (highest minus lowest, over the median)."""
    return {'rate': round(median(r['rate'] for r in runs)),
            'rate_spread': spread([r['rate'] for r in runs]),
            'records_per_cpu_s_spread': spread([r['records_per_cpu_s'] for r in runs]),
            'end_to_end_rate': round(median(r['end_to_end_rate'] for r in runs)),
            'records_per_cpu_s': round(median(r['records_per_cpu_s'] for r in runs)),
            'start_to_ready_s': median(r['start_to_ready_s'] for r in runs),
            'peak_rss_mb': max(r['peak_rss_mb'] for r in runs),
            'wrong_counts': sum(r['wrong_counts'] for r in runs), 'runs': runs}


def summarize(count: int, vocabulary: int, produce_seconds: float, raws: list[dict],
              sides: dict[str, list[dict]]) -> dict:
    """Print the human summary; returns the numbers for the JSON line."""
    raw_rate = round(median(r['rate'] for r in raws))
    results: dict[str, Any] = {
        'records': count, 'vocabulary': vocabulary, 'partitions': PARTITIONS,
        'produce_s': round(produce_seconds, 3), 'produce_rate': rate(count, produce_seconds),
        'raw_rate': raw_rate,
        'raw_records_per_cpu_s': round(median(r['records_per_cpu_s'] for r in raws)),
        'raw_peak_rss_mb': max(r['peak_rss_mb'] for r in raws), 'raw_runs': raws,
    }
    say(f'median of {len(raws)}: raw kafka-python {raw_rate:,} records/s, '
        f'{results["raw_records_per_cpu_s"]:,} per CPU second, peak RSS '
        f'{results["raw_peak_rss_mb"]} MiB')
    for name, runs in sides.items():
        numbers = results[name] = side(runs)
        numbers['ratio_raw'] = ratio(numbers['rate'], raw_rate)
        say(f'{name}: {numbers["rate"]:,} records/s processed ({numbers["ratio_raw"]:.2f}x raw, '
            f'spread {numbers["rate_spread"]:.0%}), {numbers["end_to_end_rate"]:,} end to end, '
            f'{numbers["records_per_cpu_s"]:,} per CPU second (spread '
            f'{numbers["records_per_cpu_s_spread"]:.0%}), peak RSS {numbers["peak_rss_mb"]} MiB, '
            f'ready {numbers["start_to_ready_s"]}s after start')
        say(f'  {name} runs: records/s ' + ' · '.join(f'{r["rate"]:,}' for r in runs)
            + '; per CPU second ' + ' · '.join(f'{r["records_per_cpu_s"]:,}' for r in runs))
    for top, bottom in (('runner', 'compared'), ('exactly-once', 'runner'),
                        ('scraped', 'runner'), ('runner', 'metrics-off'),
                        ('scraped', 'metrics-off')):
        if top in sides and bottom in sides:
            results[f'ratios_{top}_{bottom}'] = versus(results[top], results[bottom],
                                                       f'{top} / {bottom}')
            results[f'paired_ratios_{top}_{bottom}'] = paired(sides[top], sides[bottom],
                                                              f'{top} / {bottom}')
    for problem in problems(sides):
        say(f'WRONG: {problem}')
    return results


def paired(top: list[dict], bottom: list[dict], label: str) -> dict[str, Any]:
    """The ratios of two sides run by run (run i of one with run i of the other, minutes
    apart: a load that drifts between rounds cancels out), their median and spread."""
    found: dict[str, Any] = {}
    for measure in ('rate', 'records_per_cpu_s'):
        ratios = [ratio(a[measure], b[measure]) for a, b in zip(top, bottom, strict=True)]
        found[measure] = {'median': median(ratios), 'spread': spread(ratios), 'runs': ratios}
    say(f'{label}, run by run: {found["rate"]["median"]:.3f}x the rate (spread '
        f'{found["rate"]["spread"]:.0%}), {found["records_per_cpu_s"]["median"]:.3f}x the '
        f'records per CPU second (spread {found["records_per_cpu_s"]["spread"]:.0%}; runs '
        + ' · '.join(f'{r:.3f}' for r in found['records_per_cpu_s']['runs']) + ')')
    return found


def spread(values: list[float]) -> float:
    """(highest - lowest) / median of ``values``: 0.1 is a spread of 10 % of the median."""
    middle = statistics.median(values)
    return round((max(values) - min(values)) / middle, 3) if middle else 0.0


def versus(top: dict[str, Any], bottom: dict[str, Any], label: str) -> dict[str, float]:
    """The ratios of two sides' medians, printed in one line."""
    found = {measure: ratio(top[measure], bottom[measure])
             for measure in ('rate', 'end_to_end_rate', 'records_per_cpu_s')}
    say(f'{label}: {found["rate"]:.3f}x the rate, {found["end_to_end_rate"]:.3f}x end to '
        f'end, {found["records_per_cpu_s"]:.3f}x the records per CPU second')
    return found


def problems(sides: dict[str, list[dict]]) -> list[str]:
    """What did not go as a correct run must go."""
    found = []
    for name, runs in sides.items():
        for index, run in enumerate(runs, 1):
            if run['wrong_counts']:
                found.append(f'{name} run {index}: {run["wrong_counts"]} counts differ from the '
                             f'truth after settling, e.g. {run["wrong_examples"]}')
            if run['stop_exit_code'] != 0:
                found.append(f'{name} run {index}: the worker exited with '
                             f'{run["stop_exit_code"]} on TERM')
    return found


def benchmark(args: argparse.Namespace) -> None:
    tag = run_id()
    topic = f'bench-words-{tag}'
    words = make_words(args.records, args.seed, args.distinct)
    truth = dict(collections.Counter(words))
    checkouts: dict[str, tuple[Path, dict[str, Any]]] = {'runner': (REPO, {})}
    if args.metrics_off:
        checkouts['metrics-off'] = (REPO, {})
    if args.scrape:
        checkouts['scraped'] = (REPO, {})
    if args.exactly_once:
        interval = {} if args.exactly_once_interval is None else {
            'commit_interval': args.exactly_once_interval}
        checkouts['exactly-once'] = (REPO, {'processing_guarantee': 'exactly_once',
                                            **interval})
    if args.compare:
        checkouts['compared'] = (Path(args.compare).resolve(), {})
    with kafka_bootstrap() as bootstrap, scratch_dir('bench-wordcount-') as workdir:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            progress(f'producing {args.records:,} words to {topic} ...')
            create_topic(admin, topic, PARTITIONS)
            produce_seconds = timed_produce(bootstrap, topic,
                                            ((data, data) for data in map(str.encode, words)))
            say(f'wordcount: {args.records:,} words ({len(truth)} distinct, {PARTITIONS} '
                f'partitions) produced in {produce_seconds:.1f}s')
            raws: list[dict] = []
            sides: dict[str, list[dict]] = {name: [] for name in checkouts}
            for index in range(1, args.repeat + 1):
                progress(f'run {index} of {args.repeat}: raw consumer, then '
                         f'{" and ".join(checkouts)} ...')
                raws.append(run_raw(bootstrap, topic, args.records, f'bench-raw-{tag}-{index}'))
                line = [f'raw {raws[-1]["rate"]:,}']
                for name, (repo, settings) in checkouts.items():
                    sides[name].append(run_worker(bootstrap, admin, workdir, topic, truth,
                                                  f'bench-wc-{tag}-{name}-{index}', repo,
                                                  settings, scrape=name == 'scraped',
                                                  metrics_off=name == 'metrics-off'))
                    line.append(f'{name} {sides[name][-1]["rate"]:,}')
                say(f'run {index}: {" | ".join(line)} records/s')
            results = summarize(args.records, args.distinct, produce_seconds, raws, sides)
        finally:
            delete_run_topics(admin, tag)
            admin.close()
    emit_json('wordcount', {'seed': args.seed, 'repeat': args.repeat,
                            'exactly_once_interval': args.exactly_once_interval,
                            'compared_checkout': args.compare, **results})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--records', type=int, default=500_000, help='words to produce')
    parser.add_argument('--repeat', type=int, default=3, help='runs of each side')
    parser.add_argument('--seed', type=int, default=1, help='random seed of the words')
    parser.add_argument('--distinct', type=int, default=VOCABULARY,
                        help=f'distinct words ({VOCABULARY})')
    parser.add_argument('--compare', metavar='CHECKOUT',
                        help='another checkout of runner to run side by side')
    parser.add_argument('--metrics-off', action='store_true',
                        help='also run it with the metrics made no-ops, side by side')
    parser.add_argument('--scrape', action='store_true',
                        help='also run it with GET /metrics asked every second, side by side')
    parser.add_argument('--exactly-once', action='store_true',
                        help='also run the app under exactly-once, side by side')
    parser.add_argument('--exactly-once-interval', type=float, metavar='S',
                        help='its commit interval (default: the runner\'s, 0.1 s)')
    benchmark(parser.parse_args())


if __name__ == '__main__':
    raise SystemExit(run_main(main))
