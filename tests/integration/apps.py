"""The apps the integration tests run, and helpers to read what they did."""

import collections
import json
import random
import threading
import time

from harness import consume, consume_committed, wait_for, write_app
from kafka import KafkaProducer

FORWARD_APP = '''
import pathlib, time
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6, max_inflight={max_inflight})
source = app.topic({source!r}, partitions={partitions})
sink = app.topic({sink!r}, partitions={partitions})


@app.agent(source, sink=[sink], concurrency={concurrency})
def forward(stream):
    for event in stream.events():
        {body}
        yield {{'key': event.key, 'value': event.value,
                'partition': event.partition, 'offset': event.offset}}
'''

COUNT_APP = '''
import time
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6,
                 processing_guarantee={guarantee!r})
words = app.topic({source!r}, partitions={partitions})
counts = app.Table('counts', default=int, partitions={table_partitions})


@app.agent(words, concurrency=2)
def count(stream):
    for word in stream:
        {body}
        counts[word] += 1
'''

VOCABULARY = [f'w{n:03d}' for n in range(60)]


def forward_app(tmp_path, names, body='pass', partitions=4, concurrency=2, max_inflight=1000):
    """An app whose agent forwards every event to the sink as JSON (optionally running
    ``body`` first)."""
    return write_app(tmp_path, FORWARD_APP.format(body=body, partitions=partitions,
                                                  concurrency=concurrency,
                                                  max_inflight=max_inflight, **names))


def count_app(tmp_path, names, body='pass', partitions=4, table_partitions=None,
              guarantee='at_least_once'):
    """An app that counts words (record values) in table ``counts``."""
    return write_app(tmp_path, COUNT_APP.format(
        body=body, partitions=partitions, table_partitions=table_partitions or partitions,
        guarantee=guarantee, **names))


def outputs(kafka_bootstrap, topic, count=0, timeout=60, until=None):
    """Decoded sink records; ``until`` sees the decoded list."""
    def done(records):
        return until([json.loads(r.value) for r in records]) if until else len(records) >= count
    return [json.loads(r.value) for r in consume(kafka_bootstrap, topic, timeout=timeout,
                                                 until=done)]


def some_words(count, seed=1):
    rng = random.Random(seed)
    return [rng.choice(VOCABULARY) for _ in range(count)]


def lookup(worker, word, slot=0, table='counts'):
    """(status, body) of ``GET /tables/<table>/<word>`` on one slot."""
    return worker.get(f'/tables/{table}/{word}', slot)


def counts_of(worker, words, slot=0, table='counts', fresh=False):
    """The values of ``words`` as one slot answers them (0 for a key it does not have);
    with ``fresh``, None for a key answered from a stale copy (a standby's, or one still
    recovering): it says nothing of what the owner counted."""
    return {word: _count(*lookup(worker, word, slot, table), fresh)[0] for word in words}


def _count(status, body, fresh):
    """(value, how it was answered) of one lookup."""
    if status != 200:
        return 0, f'status {status}'
    if body.get('stale'):
        return (None if fresh else body['value']), f'stale, slot {body.get("slot")}'
    return body['value'], f'slot {body.get("slot")}'


def wait_for_counts(worker, truth, timeout=60, slot=0, table='counts', fresh=False):
    """Wait until the counts of ``truth``'s words equal it (with ``fresh``, as their owners
    answer: a stale copy's answer does not count); on timeout, fail naming the words that
    are off and how each was answered (more: processed twice, fewer: lost or not yet
    processed)."""
    try:
        wait_for(lambda: counts_of(worker, truth, slot, table, fresh) == truth, timeout,
                 'every count to reach the truth')
    except TimeoutError:
        found = {word: _count(*lookup(worker, word, slot, table), fresh) for word in truth}
        off = {word: f'{found[word][0]} for {count} ({found[word][1]})'
               for word, count in sorted(truth.items()) if found[word][0] != count}
        raise AssertionError(f'{len(off)} of {len(truth)} counts are off: {off}') from None


KEYS = [f'k{n:02d}' for n in range(40)]
#: A record of the load outlasts the longest broker outage of the tests and its restart.
OUTLAST_MS = 300_000


class Load:
    """Sends ``count`` records ``(key, id)`` at ``rate`` a second on a thread; ``truth``
    counts what the broker acknowledged per key."""

    def __init__(self, bootstrap, topic, count, rate=100):
        self.truth = collections.Counter()
        self.ids = []
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks='all', retries=20,
                                       linger_ms=5, delivery_timeout_ms=OUTLAST_MS)
        self._topic, self._count, self._rate = topic, count, rate
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        began = time.monotonic()
        for number in range(self._count):
            time.sleep(max(0.0, began + number / self._rate - time.monotonic()))
            key = KEYS[number % len(KEYS)]
            self._producer.send(self._topic, key=key.encode(),
                                value=json.dumps(f'id-{number}').encode()).add_callback(
                lambda _meta, key=key, number=number: self._acked(key, number))

    def _acked(self, key, number):
        self.truth[key] += 1
        self.ids.append(f'id-{number}')

    @property
    def running(self):
        return self._thread.is_alive()

    def finish(self):
        self._thread.join(120)
        self._producer.flush(OUTLAST_MS / 1000)
        self._producer.close(10)


def assert_each_output_once(bootstrap, sink, ids):
    """Every id is in the committed outputs of ``sink`` once (read again until all have
    appeared: a transaction's outputs show once its commit markers are written)."""
    def outputs():
        found = collections.Counter(json.loads(record.value)
                                    for record in consume_committed(bootstrap, sink))
        return found if set(ids) <= set(found) else None
    try:
        found = wait_for(outputs, 60, 'every output to be committed')
    except TimeoutError:
        found = collections.Counter(json.loads(record.value)
                                    for record in consume_committed(bootstrap, sink))
    twice = {value: n for value, n in found.items() if n > 1}
    missing = set(ids) - set(found)
    assert not twice and not missing, (f'{len(twice)} outputs seen more than once '
                                       f'({sorted(twice)[:5]}...), {len(missing)} missing '
                                       f'({sorted(missing)[:10]}...)')
