"""Reading records: the raw kafka-python consume loop with and without runner's leaner
reading of records (``runner.kafka.records``), side by side.

Produces N JSON records (``{"key": K, "n": I}``, K one of D distinct keys, 4 partitions)
once, then runs ``baseline_consumer.py`` as a group member counting them, alternating
the sides in every round (the order turned by one each round):

* raw: plain kafka-python (with runner's bug workarounds, as in ``wordcount.py``);
* lean: the same loop with the leaner reading installed;
* raw+json, lean+json: the same, also decoding each value with ``json.loads`` and
  counting each key in a dict.

Prints the median, minimum and maximum rate of each side and its records per CPU second,
and the lean/raw ratios; last, one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

from common import (
    KafkaAdminClient,
    create_topic,
    delete_run_topics,
    emit_json,
    kafka_bootstrap,
    median,
    progress,
    rate,
    ratio,
    run_baseline_consumer,
    run_id,
    run_main,
    say,
    timed_produce,
)

PARTITIONS = 4
SIDES = {'raw': [], 'lean': ['--lean-reading'], 'raw+json': ['--json-count'],
         'lean+json': ['--lean-reading', '--json-count']}


def make_records(count: int, keys: int, seed: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    names = [f'key{n:05d}' for n in range(keys)]
    chosen = (rng.choice(names) for _ in range(count))
    return [(key.encode(), json.dumps({'key': key, 'n': n}).encode())
            for n, key in enumerate(chosen)]


def run_side(bootstrap: str, topic: str, count: int, group: str, extra: list[str]) -> dict:
    report = run_baseline_consumer(bootstrap, topic,
                                   ['--group', group, '--count', str(count), *extra],
                                   timeout=max(120.0, count / 2000))
    return {'rate': report['rate'], 'cpu_s': report['cpu_s'],
            'records_per_cpu_s': rate(count, report['cpu_s'])}


def summary(runs: list[dict]) -> dict[str, Any]:
    rates = [run['rate'] for run in runs]
    return {'rate': round(median(rates)), 'min': min(rates), 'max': max(rates),
            'records_per_cpu_s': round(median(run['records_per_cpu_s'] for run in runs)),
            'runs': runs}


def benchmark(args: argparse.Namespace) -> None:
    tag = run_id()
    topic = f'bench-decode-{tag}'
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    with kafka_bootstrap() as bootstrap:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            create_topic(admin, topic, PARTITIONS)
            seconds = timed_produce(bootstrap, topic, make_records(args.records, args.keys,
                                                                   args.seed))
            say(f'decode: {args.records:,} JSON records ({args.keys:,} keys, {PARTITIONS} '
                f'partitions) produced in {seconds:.1f}s')
            order = list(SIDES)
            for index in range(1, args.rounds + 1):
                progress(f'round {index} of {args.rounds}: {", ".join(order)} ...')
                for side in order:
                    runs[side].append(run_side(bootstrap, topic, args.records,
                                               f'bench-decode-{tag}-{side}-{index}', SIDES[side]))
                say(f'round {index}: ' + ' | '.join(f'{side} {runs[side][-1]["rate"]:,}'
                                                    for side in SIDES) + ' records/s')
                order = order[1:] + order[:1]
        finally:
            delete_run_topics(admin, tag)
            admin.close()
    results: dict[str, Any] = {side: summary(side_runs) for side, side_runs in runs.items()}
    for side, numbers in results.items():
        say(f'{side}: median {numbers["rate"]:,} records/s (min {numbers["min"]:,}, max '
            f'{numbers["max"]:,}), {numbers["records_per_cpu_s"]:,} per CPU second')
    for work in ('', '+json'):
        lean, raw = results[f'lean{work}'], results[f'raw{work}']
        found = results[f'lean{work}/raw{work}'] = {
            'rate': ratio(lean['rate'], raw['rate']),
            'records_per_cpu_s': ratio(lean['records_per_cpu_s'], raw['records_per_cpu_s'])}
        say(f'lean{work} / raw{work}: {found["rate"]:.2f}x the rate, '
            f'{found["records_per_cpu_s"]:.2f}x the records per CPU second')
    emit_json('decode', {'records': args.records, 'keys': args.keys, 'rounds': args.rounds,
                         'seed': args.seed, **results})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--records', type=int, default=300_000, help='records to produce')
    parser.add_argument('--keys', type=int, default=10_000, help='distinct keys')
    parser.add_argument('--rounds', type=int, default=3, help='runs of each side')
    parser.add_argument('--seed', type=int, default=1)
    benchmark(parser.parse_args())


if __name__ == '__main__':
    raise SystemExit(run_main(main))
