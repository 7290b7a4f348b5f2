"""Agent logic checked with runner.testing instead of a broker and worker processes: the
same apps and assertions as the integration tests they were (moved from
tests/integration/test_processing_core.py, test_bad_records.py and test_tables.py)."""

import collections
import importlib.util

import pytest
from harness import write_app

import runner.testing


def load_app(directory, source, name='testapp'):
    """The app of ``source``, written and imported as module ``name`` (so its agents are
    named as a worker names them), not left in ``sys.modules``."""
    module = write_app(directory, source, name)
    spec = importlib.util.spec_from_file_location(module, directory / f'{module}.py')
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded.app


def committed_to_the_end(t, topic, sent):
    """The run's committed offsets of ``topic`` are one past the last record sent to each
    of its partitions."""
    ends = {}
    for record in sent:
        ends[record.partition] = record.offset + 1
    return {tp.partition: offset for tp, offset in t.committed.items()
            if tp.topic == topic} == ends


RE_KEYED_APP = '''
import runner

app = runner.App({app!r})
words = app.topic({source!r}, partitions=2, value_serializer='str')
upper = app.topic({sink!r}, partitions=2, key_serializer='json', value_serializer='str')


@app.agent(words, sink=[upper])
def shout(stream):
    for word in stream:
        yield word.upper()
'''


def test_a_generator_agent_keys_its_outputs_as_the_sink_topic_encodes_keys(tmp_path, names):
    with runner.testing.run(load_app(tmp_path, RE_KEYED_APP.format(**names))) as t:
        for key, value in [('k1', 'a'), ('k2', 'b')]:
            t.send(names['source'], key=key, value=value)
        outputs = t.outputs(names['sink'])
        # decoded as the sink's JSON keys: a key sent as the source's plain text would
        # come back as bytes, undecodable
        assert sorted((r.key, r.value) for r in outputs) == [('k1', 'A'), ('k2', 'B')]


CATCHING_APP = '''
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6)
words = app.topic({source!r}, partitions=2, value_serializer='str')
counts = app.Table('counts', default=int)


@app.agent(words)
def count(stream):
    while True:
        try:
            for word in stream:
                if word.startswith('bad'):
                    raise ValueError(word)
                counts[word] += 1
            return
        except ValueError as exc:
            counts[str(exc)] += 1           # then go on with the stream
'''


def words(count, first=0):
    return [f'w{n % 20:02d}' for n in range(first, first + count)]


def test_an_agent_that_catches_an_error_and_iterates_again_goes_on(tmp_path, names):
    with runner.testing.run(load_app(tmp_path, CATCHING_APP.format(**names))) as t:
        good = words(300)
        mixed = good[:100] + ['bad1'] + good[100:200] + ['bad2', 'bad3'] + good[200:]
        sent = [t.send(names['source'], key=w, value=w) for w in mixed]
        truth = collections.Counter(good)
        truth.update(['bad1', 'bad2', 'bad3'])
        assert {word: t.table('counts')[word] for word in truth} == truth
        t.commit()
        assert committed_to_the_end(t, names['source'], sent)
        assert t.errors == []                     # the slot would have gone on: exit 0


WINDOW_APP = '''
import runner

app = runner.App({app!r}, commit_interval=0.2, session_timeout=6,
                 processing_guarantee={guarantee!r})
clicks = app.topic({source!r}, partitions=1)
per_window = app.Table('clicks', default=int, partitions=1).tumbling(10, expires=20)


@app.agent(clicks)
def count(stream):
    for key, _ in stream.items():
        per_window[key] += 1
'''

GUARANTEES = pytest.mark.parametrize('guarantee', ['at_least_once', 'exactly_once'])


@GUARANTEES
def test_windowed_counts_expire(tmp_path, names, guarantee):
    app = load_app(tmp_path, WINDOW_APP.format(guarantee=guarantee, **names))
    with runner.testing.run(app) as t:
        def produce(items, timestamp_ms):
            for key, value in items:
                t.send(names['source'], key=key, value=value, timestamp=timestamp_ms / 1000)
            t.commit()                   # a slot takes a checkpoint every commit_interval

        def windows_of(key):             # as GET /tables/clicks/<key> gives them
            windows = t.table('clicks').windows(key)
            return [{'start': start, 'end': start + 10, 'value': value}
                    for start, value in windows] or None
        produce([('a', 1), ('a', 1)], timestamp_ms=1_000_000)
        produce([('a', 1)], timestamp_ms=1_005_000)
        produce([('a', 1)], timestamp_ms=1_012_000)
        assert windows_of('a') == [
            {'start': 1000.0, 'end': 1010.0, 'value': 3},
            {'start': 1010.0, 'end': 1020.0, 'value': 1}]
        produce([('b', 1)], timestamp_ms=1_035_000)
        assert windows_of('a') == [{'start': 1010.0, 'end': 1020.0, 'value': 1}]
        assert windows_of('b') == [{'start': 1030.0, 'end': 1040.0, 'value': 1}]
        produce([('b', 1)], timestamp_ms=1_060_000)
        assert windows_of('a') is None
        changelog = t.outputs(f"{names['app']}-clicks-changelog")
        assert {r.key for r in changelog if r.value is None} >= {('a', 1000.0), ('a', 1010.0)}
