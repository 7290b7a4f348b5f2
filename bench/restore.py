"""Cold restore of a table from its changelog, and a restart on intact state, vs raw baselines.

    python bench/restore.py [--records M] [--leveldb-batch B]

Fills the changelog of table ``counts`` (4 partitions, compacted) directly with M
distinct keys → JSON 1, each in the partition its key hashes to (murmur2), then:

* raw read: ``baseline_consumer.py`` reading the changelog from beginning to end
  with ``assign()`` and kafka-python's defaults, doing nothing with the records;
* cold restore: a worker on an empty data directory (the app's source topic is
  empty), timed from process start to ``/ready`` = 200; the replay rate is the
  records of the "recovered" log lines over the longest recovery time;
* restart: TERM (exit 0), then a worker on the same data directory, timed to
  ``/ready`` = 200, with the records it replayed;
* LevelDB: plyvel ``WriteBatch`` puts of M small keys in batches of B.

Uses ``$KAFKA_BOOTSTRAP_SERVERS`` if set, else starts a broker of its own.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Any

import plyvel
from common import (
    Worker,
    cpu_seconds,
    create_topic,
    delete_run_topics,
    dir_size_mb,
    emit_json,
    kafka_bootstrap,
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
    write_app,
)
from kafka import KafkaAdminClient

PARTITIONS = 4
#: Keys looked up over HTTP after each start, to see the restored values are there.
SAMPLE = 20

APP_SOURCE = '''\
import runner

app = runner.App({app!r})
source = app.topic({topic!r}, partitions={partitions})
counts = app.Table('counts', default=int, partitions={partitions})


@app.agent(source)
def count(stream):
    for key, _ in stream.items():
        counts[key] += 1
'''


def make_keys(count: int) -> list[bytes]:
    return [f'k{n:07d}'.encode() for n in range(count)]


def fill_changelog(bootstrap: str, changelog: str, keys: list[bytes]) -> float:
    """Write ``key → 1`` for every key into its murmur2 partition (kafka-python's default
    partitioner, as the table's); returns the seconds taken."""
    return timed_produce(bootstrap, changelog, ((key, b'1') for key in keys))


def missing_values(worker: Worker, keys: list[bytes]) -> list[str]:
    """Sampled keys whose value is not 1 over ``GET /tables/counts/<key>``."""
    sample = random.Random(0).sample(keys, min(SAMPLE, len(keys)))
    wrong = []
    for key in sample:
        status, body = worker.get(f'/tables/counts/{key.decode()}')
        if status != 200 or body.get('value') != 1:
            wrong.append(key.decode())
    return wrong


def start_and_stop(workdir: Path, module: str, bootstrap: str, datadir: Path, name: str,
                   keys: list[bytes]) -> dict[str, Any]:
    """Start a worker, time it to ready, look at what it recovered, stop it warm."""
    with Worker.for_app(workdir, module, bootstrap, name, datadir=datadir) as worker:
        to_ready = worker.wait_ready(max(120.0, len(keys) / 2000))
        pid = worker.slot_pids(1)[0]
        cpu = cpu_seconds(pid)
        recovered = worker.recoveries()
        missing = missing_values(worker, keys)
        rss = peak_rss_mb(pid)
        exit_code, stop_seconds = worker.stop()
    records = sum(records for _, _, records, _ in recovered)
    seconds = max((seconds for _, _, _, seconds in recovered), default=0.0)
    return {'start_to_ready_s': round(to_ready, 3), 'replayed': records,
            'recovery_s': seconds, 'replay_rate': rate(records, seconds),
            'slot_cpu_at_ready_s': round(cpu, 3),
            'partitions_recovered': len(recovered), 'missing_sampled_values': missing,
            'peak_rss_mb': rss, 'stop_exit_code': exit_code, 'stop_s': round(stop_seconds, 3)}


def leveldb_puts(keys: list[bytes], batch_size: int, path: Path) -> dict[str, Any]:
    """plyvel WriteBatch puts of every key (value ``1``), ``batch_size`` keys a batch."""
    db = plyvel.DB(str(path), create_if_missing=True)
    try:
        began = time.monotonic()
        for start in range(0, len(keys), batch_size):
            with db.write_batch() as batch:
                for key in keys[start:start + batch_size]:
                    batch.put(b'd' + key, b'1')
        seconds = time.monotonic() - began
    finally:
        db.close()
    return {'seconds': round(seconds, 3), 'rate': rate(len(keys), seconds),
            'size_mb': dir_size_mb(path)}


def summarize(count: int, fill_seconds: float, raw: dict, cold: dict, warm: dict,
              leveldb: dict, tables_mb: float) -> dict[str, Any]:
    """Print the human summary; returns the numbers for the JSON line."""
    results = {
        'records': count, 'partitions': PARTITIONS, 'fill_s': round(fill_seconds, 3),
        'fill_rate': rate(count, fill_seconds), 'raw_read_rate': raw['rate'],
        'leveldb_put_rate': leveldb['rate'], 'restore_rate': cold['replay_rate'],
        'restore_wall_rate': rate(count, cold['start_to_ready_s']),
        'cold_start_to_ready_s': cold['start_to_ready_s'],
        'restart_start_to_ready_s': warm['start_to_ready_s'],
        'restart_replayed': warm['replayed'],
        'ratio_restore_raw_read': ratio(cold['replay_rate'], raw['rate']),
        'ratio_restore_leveldb': ratio(cold['replay_rate'], leveldb['rate']),
        'raw_read_records_per_cpu_s': rate(count, raw['cpu_s']),
        'restore_records_per_cpu_s': rate(count, cold['slot_cpu_at_ready_s']),
        'tables_dir_mb': tables_mb, 'raw': raw, 'cold': cold, 'restart': warm,
        'leveldb': leveldb,
    }
    say(f'cold restore: ready {cold["start_to_ready_s"]:.1f}s after start; replayed '
        f'{cold["replayed"]:,} records in {cold["recovery_s"]:.1f}s = '
        f'{cold["replay_rate"]:,} records/s ({results["restore_wall_rate"]:,}/s start to ready)')
    say(f'  raw kafka-python read: {raw["rate"]:,} records/s -> restore at '
        f'{results["ratio_restore_raw_read"]:.2f}x')
    say(f'  plyvel WriteBatch puts: {leveldb["rate"]:,} puts/s -> restore at '
        f'{results["ratio_restore_leveldb"]:.2f}x')
    say(f'  CPU: raw read {results["raw_read_records_per_cpu_s"]:,} records per CPU second, '
        f'restore {results["restore_records_per_cpu_s"]:,} (slot CPU from start to ready)')
    say(f'restart on intact state: ready {warm["start_to_ready_s"]:.1f}s after start, replayed '
        f'{warm["replayed"]:,} records')
    say(f'tables on disk: {tables_mb} MiB (plain LevelDB of the same keys: '
        f'{leveldb["size_mb"]} MiB); slot peak RSS {cold["peak_rss_mb"]} MiB (cold), '
        f'{warm["peak_rss_mb"]} MiB (restart); raw reader {raw["peak_rss_mb"]} MiB')
    for problem in problems(count, cold, warm):
        say(f'WRONG: {problem}')
    return results


def problems(count: int, cold: dict, warm: dict) -> list[str]:
    """What did not go as a correct restore must go."""
    found = []
    if cold['replayed'] != count:
        found.append(f'the cold restore replayed {cold["replayed"]} records, not {count}')
    if warm['replayed']:
        found.append(f'the restart on intact state replayed {warm["replayed"]} records, not 0')
    for name, run in (('cold', cold), ('restart', warm)):
        if run['partitions_recovered'] != PARTITIONS:
            found.append(f'{name}: {run["partitions_recovered"]} "recovered" log lines, '
                         f'expected {PARTITIONS}')
        if run['missing_sampled_values']:
            found.append(f'{name}: sampled keys without value 1: {run["missing_sampled_values"]}')
        if run['stop_exit_code'] != 0:
            found.append(f'{name}: the worker exited with {run["stop_exit_code"]} on TERM')
    return found


def benchmark(args: argparse.Namespace) -> None:
    tag = run_id()
    app = f'bench-restore-{tag}'
    changelog = f'{app}-counts-changelog'
    keys = make_keys(args.records)
    with kafka_bootstrap() as bootstrap, scratch_dir('bench-restore-') as workdir:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            create_topic(admin, f'{app}-source', PARTITIONS)
            create_topic(admin, changelog, PARTITIONS, {'cleanup.policy': 'compact'})
            progress(f'writing {args.records:,} records to {changelog} ...')
            fill_seconds = fill_changelog(bootstrap, changelog, keys)
            say(f'restore: {args.records:,} changelog records ({PARTITIONS} partitions) written '
                f'in {fill_seconds:.1f}s')
            progress('raw read of the changelog ...')
            raw = run_baseline_consumer(bootstrap, changelog,
                                        timeout=max(120.0, args.records / 2000))
            module = write_app(workdir, APP_SOURCE.format(
                app=app, topic=f'{app}-source', partitions=PARTITIONS), 'restoreapp')
            datadir = workdir / 'data'
            progress('cold restore ...')
            cold = start_and_stop(workdir, module, bootstrap, datadir, 'cold', keys)
            tables_mb = dir_size_mb(datadir / 'slot-0' / 'tables')
            progress('restart on intact state ...')
            warm = start_and_stop(workdir, module, bootstrap, datadir, 'restart', keys)
            progress('LevelDB puts ...')
            leveldb = leveldb_puts(keys, args.leveldb_batch, workdir / 'leveldb')
            results = summarize(args.records, fill_seconds, raw, cold, warm, leveldb, tables_mb)
        finally:
            delete_run_topics(admin, tag)
            admin.close()
    emit_json('restore', {'leveldb_batch': args.leveldb_batch, **results})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--records', type=int, default=1_000_000, help='changelog records')
    parser.add_argument('--leveldb-batch', type=int, default=1000,
                        help='puts per WriteBatch in the LevelDB baseline')
    benchmark(parser.parse_args())


if __name__ == '__main__':
    raise SystemExit(run_main(main))
