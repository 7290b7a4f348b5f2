"""runner.testing: an app's agents and tables run in the test's thread, through the slot's
own code paths, with only Kafka and the threads replaced."""

import random

import greenlet
import pytest
from kafka.partitioner.default import DefaultPartitioner

import runner
import runner.testing
from runner.app import context
from runner.errors import ConfigError
from runner.testing import AgentError

pytest_plugins = ['runner.testing.pytest_plugin']


def counting_app(on_error='stop', retries=0, guarantee='at_least_once', partitions=4):
    """Counts words (record values); ``bad`` raises, ``flaky`` raises on its first try,
    ``forget`` deletes its key, ``echo`` is sent on to topic ``echoes``."""
    app = runner.App('counting', processing_guarantee=guarantee)
    words = app.topic('words', partitions=partitions, value_serializer='str')
    echoes = app.topic('echoes', partitions=partitions, value_serializer='str')
    counts = app.Table('counts', default=int)
    tried = set()

    @app.agent(words, name='count', on_error=on_error, retries=retries, retry_backoff=30)
    def count(stream):
        for event in stream.events():
            counts[event.key] += 1
            if event.value == 'echo':
                echoes.send(key=event.key, value='echo')
            if event.value == 'forget':
                del counts[event.key]
            if event.value == 'flaky' and event.offset not in tried:
                tried.add(event.offset)
                raise ConnectionError('flaky service')
            if event.value == 'bad':
                raise ValueError('cannot handle bad')
    return app


def test_a_send_is_processed_before_it_returns_and_tables_have_their_defaults():
    with runner.testing.run(counting_app()) as t:
        t.send('words', key='cat', value='seen')
        t.send('words', key='cat', value='seen')
        counts = t.table('counts')
        assert counts['cat'] == 2
        assert counts['dog'] == 0
        assert 'dog' not in counts
        assert dict(counts.items()) == {'cat': 2}


class SevenPartitions:
    """What kafka-python's partitioner asks of its cluster metadata: topic ``words``."""

    def topics(self):
        return {'words'}

    def partitions_for_topic(self, topic):
        return set(range(7))

    available_partitions_for_topic = partitions_for_topic


def test_keys_land_in_the_partition_kafka_pythons_default_partitioner_picks():
    rng = random.Random(21)
    with runner.testing.run(counting_app(partitions=7)) as t:
        for _ in range(300):
            key = ''.join(rng.choice('abcxyz0189-') for _ in range(rng.randrange(1, 20)))
            sent = t.send('words', key=key, value='seen')
            assert sent.partition == DefaultPartitioner().partition(
                'words', key, key.encode(), None, None, SevenPartitions())
            assert t.outputs('words') == []
        assert sum(t.table('counts').values()) == 300


def test_a_key_deleted_by_an_agent_is_gone_and_its_default_is_back():
    with runner.testing.run(counting_app()) as t:
        t.send('words', key='cat', value='seen')
        t.send('words', key='cat', value='forget')
        assert 'cat' not in t.table('counts')
        assert t.table('counts')['cat'] == 0
        t.commit()
        assert [(r.key, r.value) for r in t.outputs('counting-counts-changelog')] == [
            ('cat', None)]


def test_outputs_are_decoded_in_order_with_their_partitions():
    with runner.testing.run(counting_app()) as t:
        for key in ('a', 'b', 'c'):
            t.send('words', key=key, value='echo')
        outputs = t.outputs('echoes')
        assert [(r.key, r.value) for r in outputs] == [('a', 'echo'), ('b', 'echo'),
                                                       ('c', 'echo')]
        assert [r.partition for r in outputs] == [t.send('words', key=k, value='x').partition
                                                  for k in ('a', 'b', 'c')]
        assert t.outputs('words') == []          # what the test sent is not an output


def test_a_generator_agent_yields_to_its_topic_sinks_and_calls_its_function_sinks():
    app = runner.App('shouting')
    words = app.topic('words', partitions=2, value_serializer='str')
    upper = app.topic('upper', partitions=2, key_serializer='json', value_serializer='str')
    called = []

    @app.agent(words, sink=[upper, called.append])
    def shout(stream):
        for word in stream:
            yield word.upper()
    with runner.testing.run(app) as t:
        t.send('words', key='k1', value='a')
        t.send('words', key='k2', value='b')
        assert [(r.key, r.value) for r in t.outputs('upper')] == [('k1', 'A'), ('k2', 'B')]
        assert called == ['A', 'B']


def test_an_error_surfaces_with_its_record_and_stops_only_that_partition():
    with runner.testing.run(counting_app()) as t:
        bad = t.send('words', key='k1', value='seen')
        with pytest.raises(AgentError) as raised:
            t.send('words', key='k1', value='bad')
        error = raised.value
        assert error.agent == 'count'
        assert (error.record.key, error.record.value, error.record.partition,
                error.record.offset) == ('k1', 'bad', bad.partition, 1)
        assert isinstance(error.error, ValueError) and error.__cause__ is error.error
        assert 'cannot handle bad' in str(error)
        assert t.table('counts')['k1'] == 1          # the failed record's write is taken back
        assert t.stopped() == {('words', bad.partition): 1}
        t.send('words', key='k1', value='seen')      # waits behind the stopped record
        assert t.table('counts')['k1'] == 1
        other = next(f'k{n}' for n in range(2, 99)
                     if t.send('words', key=f'k{n}', value='seen').partition != bad.partition)
        assert t.table('counts')[other] == 1         # other partitions go on


def test_a_skipped_stop_dead_letters_the_record_and_the_partition_goes_on():
    with runner.testing.run(counting_app()) as t:
        with pytest.raises(AgentError):
            t.send('words', key='k1', value='bad')
        t.send('words', key='k1', value='seen')
        [(tp, offset)] = t.stopped().items()
        t.skip(tp.topic, tp.partition, offset)
        assert t.table('counts')['k1'] == 1
        [letter] = t.outputs('counting-count-dlq')
        assert letter.value == b'bad'
        assert dict(letter.headers)['runner-reason'] == b'skipped by operator'
        assert t.stopped() == {}


def test_retries_try_the_record_again_without_waiting_for_the_backoff():
    with runner.testing.run(counting_app(retries=1)) as t:
        t.send('words', key='k1', value='flaky')
        assert t.table('counts')['k1'] == 1
        assert t.counts()['count'] == {'failed': 1, 'dead_lettered': 0, 'skipped': 0,
                                       'retried': 1}
        assert t.errors == []


@pytest.mark.parametrize('on_error, dead_letters', [('dead_letter', 1), ('skip', 0)])
def test_the_agents_policy_sets_a_failing_record_aside_and_goes_on(on_error, dead_letters):
    with runner.testing.run(counting_app(on_error=on_error, retries=2)) as t:
        t.send('words', key='k1', value='bad')
        t.send('words', key='k1', value='seen')
        assert t.table('counts')['k1'] == 1
        letters = t.outputs('counting-count-dlq')
        assert len(letters) == dead_letters
        for letter in letters:
            assert dict(letter.headers)['runner-error'] == b'ValueError: cannot handle bad'
        assert t.counts()['count']['failed'] == 3      # the first try and two retries


def test_a_record_its_topic_cannot_decode_is_dead_lettered_and_never_reaches_the_agent():
    app = runner.App('decoding')
    orders = app.topic('orders', partitions=2)
    seen = []

    @app.agent(orders, name='take', on_error='stop')
    def take(stream):
        for order in stream:
            seen.append(order)          # noqa: PERF402 - one at a time, as they come
    with runner.testing.run(app) as t:
        t.send(orders, key='o1', value=b'{not json')
        t.send(orders, key='o1', value={'n': 1})
        assert seen == [{'n': 1}]
        [letter] = t.outputs('decoding-take-dlq')
        assert dict(letter.headers)['runner-reason'] == b'unreadable'


@pytest.mark.parametrize('guarantee, echoes', [('at_least_once', 2), ('exactly_once', 1)])
def test_what_a_failed_try_sent_is_kept_or_dropped_as_the_guarantee_says(guarantee, echoes):
    app = runner.App('guarantee', processing_guarantee=guarantee)
    words = app.topic('words', partitions=1, value_serializer='str')
    echo = app.topic('echo', partitions=1, value_serializer='str')
    tries = []

    @app.agent(words, retries=1, retry_backoff=0)
    def forward(stream):
        for word in stream:
            echo.send(value=word)
            tries.append(word)
            if len(tries) == 1:
                raise ConnectionError('first try fails')
    with runner.testing.run(app) as t:
        t.send('words', value='hello')
        assert len(t.outputs('echo')) == echoes


def by_user_app(grouped):
    """Orders keyed by order id, totalled per user: through ``stream.group_by`` or not."""
    app = runner.App('orders')
    orders = app.topic('orders', partitions=4)
    totals = app.Table('totals', default=int)

    if grouped:
        @app.agent(orders, name='total')
        def total(stream):
            for order in stream.group_by(lambda order: order['user']):
                totals[order['user']] += 1
    else:
        @app.agent(orders, name='total')
        def total(stream):
            for order in stream:
                totals[order['user']] += 1
    return app


USERS = [f'user-{n:02d}' for n in range(12)]


def test_a_write_of_another_partitions_key_is_refused_naming_group_by():
    with runner.testing.run(by_user_app(grouped=False)) as t:
        with pytest.raises(AgentError) as raised:
            for n in range(20):
                t.send('orders', key=f'order-{n}', value={'user': USERS[n * 7 % 12]})
        assert isinstance(raised.value.error, ConfigError)
        assert 're-key the stream with stream.group_by(key_fn)' in str(raised.value)
        assert raised.value.record.value['user'] in USERS
        with pytest.raises(RuntimeError, match='the run has stopped'):
            t.send('orders', key='order-99', value={'user': 'user-00'})


def test_group_by_totals_by_another_key_through_the_repartition_topic():
    with runner.testing.run(by_user_app(grouped=True)) as t:
        for n in range(60):
            t.send('orders', key=f'order-{n}', value={'user': USERS[n * 7 % 12]})
        assert {user: t.table('totals')[user] for user in USERS} == {user: 5 for user in USERS}
        forwarded = t.outputs('orders-total-repartition')
        assert len(forwarded) == 60
        assert all(record.key == record.value['user'] for record in forwarded)


def windowed_app():
    app = runner.App('clicks')
    clicks = app.topic('clicks', partitions=1)
    per_window = app.Table('clicks', default=int, partitions=1).tumbling(10, expires=20)

    @app.agent(clicks)
    def count(stream):
        for event in stream.events():
            per_window[event.key] += 1
    return app


def test_windowed_counts_are_read_per_window_and_expire_at_a_commit():
    start = runner.testing.START
    with runner.testing.run(windowed_app()) as t:
        t.send('clicks', key='a', value=1)
        t.send('clicks', key='a', value=1)
        t.advance(5)
        t.send('clicks', key='a', value=1)
        t.advance(7)
        t.send('clicks', key='a', value=1)
        table = t.table('clicks')
        assert table.windows('a') == [(start, 3), (start + 10, 1)]
        assert table.value_at('a', start + 12) == 1
        t.advance(23)
        t.send('clicks', key='b', value=1)
        t.commit()
        assert table.windows('a') == [(start + 10, 1)]
        assert table.windows('b') == [(start + 30, 1)]
        tombstones = [r.key for r in t.outputs('clicks-clicks-changelog') if r.value is None]
        assert tombstones == [('a', start)]


def test_a_window_read_outside_an_agent_says_what_to_call_instead():
    with runner.testing.run(windowed_app()) as t:
        t.send('clicks', key='a', value=1)
        table = t.table('clicks')
        for read in (table['a'].current, table['a'].value, lambda: table['a'].delta(10)):
            with pytest.raises(RuntimeError) as refused:
                read()
            assert str(refused.value) == (
                "clicks['a'] has no current event outside an agent: read "
                "clicks.value_at('a', timestamp), clicks['a'].now() (wall-clock time) "
                "or clicks.windows('a')")
        with pytest.raises(RuntimeError, match=r"^clicks\['a'\] is updated from agents only"):
            table['a'] += 1


def test_advance_runs_the_hooks_for_the_time_passed_and_commits_each_commit_interval():
    with runner.testing.run(counting_app(), commit_interval=10) as t:
        passed = []
        t.on_advance.append(lambda before, after: passed.append((before, after)))
        t.on_advance.append(lambda before, after: t.app.send('words', key='tick', value='x'))
        t.advance(4)
        assert passed == [(runner.testing.START, runner.testing.START + 4)]
        assert t.table('counts')['tick'] == 1         # what a hook sends is processed
        assert t.committed == {}
        t.advance(6)
        assert sum(t.committed.values()) == 2
        assert t.now == runner.testing.START + 10


def test_app_send_from_the_test_is_processed_before_it_returns(app_run):
    app = counting_app()
    t = app_run(app)
    app.send('words', key='k', value='seen')
    assert t.table('counts')['k'] == 1


def test_a_commit_commits_what_was_processed_and_stores_the_tables(tmp_path):
    app = counting_app()
    with runner.testing.run(app, datadir=tmp_path) as t:
        sent = [t.send('words', key=f'k{n}', value='seen') for n in range(10)]
        t.commit()
        ends = {}
        for record in sent:
            ends[('words', record.partition)] = record.offset + 1
        assert {(tp.topic, tp.partition): offset for tp, offset in t.committed.items()} == ends
    with runner.testing.run(app, datadir=tmp_path) as t:
        assert t.table('counts')['k3'] == 1          # read back from the store


def test_the_run_leaves_no_context_behind():
    app = counting_app()
    with runner.testing.run(app) as t:
        assert t.table('counts')['x'] == 0
    assert context._installed == []


def test_a_crash_stops_every_agent_as_a_slot_stops_rather_than_hang_on_its_guard():
    """An agent that returns inside a record keeps its task's guard, as in a slot: the other
    agents of the task must stop with it, not wait for that guard."""
    app = runner.App('crashing')
    first = app.topic('first', partitions=1, value_serializer='str')
    second = app.topic('second', partitions=1, value_serializer='str')
    counts = app.Table('counts', default=int)

    @app.agent(first, name='quits')
    def quits(stream):
        for word in stream:
            counts[word] += 1
            second.send(value=word)
            return

    @app.agent(second, name='counts')
    def count(stream):
        for word in stream:
            counts[word] += 1
    with runner.testing.run(app) as t:
        with pytest.raises(AgentError, match='returned while its stream was open') as raised:
            t.send('first', value='bye')
        assert raised.value.agent == 'quits' and raised.value.record.value == 'bye'
        assert raised.value.error is None


def test_an_agent_that_fails_as_it_starts_fails_the_run_and_leaves_nothing_behind():
    app = runner.App('starting')
    words = app.topic('words', partitions=1)
    counts = app.Table('counts', default=int)

    @app.agent(words)
    def count(stream):
        counts['x'] += 1          # outside any record: a slot refuses it and stops
        for word in stream:
            counts[word] += 1
    with pytest.raises(AgentError, match='can only be changed while processing a record'):
        runner.testing.run(app).__enter__()
    assert context._installed == []


def test_agent_instances_share_the_records_and_keep_each_partitions_order():
    app = runner.App('ordering')
    numbers = app.topic('numbers', partitions=3)
    seen = []

    @app.agent(numbers, concurrency=3)
    def note(stream):
        for event in stream.events():
            seen.append((event.partition, event.value, greenlet.getcurrent()))
            if event.value % 10 == 0:     # a send back to its own topic, taken meanwhile
                app.send(numbers, key=f'again-{event.value}', value=event.value + 1001)
    with runner.testing.run(app) as t:
        for n in range(60):
            t.send(numbers, key=f'k{n % 7}', value=n)
        assert len(seen) == 66
        assert len({instance for _, _, instance in seen}) == 3
        for partition in range(3):
            values = [value for number, value, _ in seen if number == partition]
            first = [value for value in values if value < 1000]
            assert first == sorted(first)


def test_headers_and_timestamps_reach_the_agent_as_sent():
    app = runner.App('headers')
    notes = app.topic('notes', partitions=1, value_serializer='str')
    seen = []

    @app.agent(notes)
    def read(stream):
        seen.extend((event.headers, event.timestamp) for event in stream.events())
    with runner.testing.run(app) as t:
        t.send(notes, value='a', headers=[('trace', b'1')], timestamp=1234.5)
        t.send(notes, value='b')
        assert seen == [([('trace', b'1')], 1_234_500), ([], round(t.now * 1000))]


def test_a_send_to_a_topic_no_agent_reads_is_refused_naming_the_topics_agents_read():
    with runner.testing.run(counting_app()) as t:
        with pytest.raises(ValueError, match=r"no agent of app counting reads topic 'wrods'"
                                             r".*agents read: words"):
            t.send('wrods', key='cat', value='seen')
        assert t.table('counts')['cat'] == 0


def test_the_outputs_of_a_topic_the_app_does_not_know_are_refused_not_an_empty_list():
    with runner.testing.run(counting_app()) as t:
        t.send('words', key='cat', value='echo')
        assert [e.value for e in t.outputs('echoes')] == ['echo']
        assert t.outputs('words') == []                 # declared, nothing sent to it
        assert t.outputs('counting-count-dlq') == []    # the agent's dead letters: none
        with pytest.raises(ValueError, match=r"app counting has no topic 'echos' and sent "
                                             r"nothing to it.*echoes"):
            t.outputs('echos')


def test_a_topic_the_app_sends_to_without_declaring_it_has_outputs():
    app = runner.App('undeclared')

    @app.agent('source')
    def forward(stream):
        for key, value in stream.items():
            app.send('elsewhere', key=key, value=value)

    with runner.testing.run(app) as t:
        t.send('source', key='k', value=1)
        assert [(e.key, e.value) for e in t.outputs('elsewhere')] == [('k', 1)]


def test_a_second_run_while_one_is_open_is_refused_so_the_first_never_sends_to_kafka():
    first, second = counting_app(), counting_app()
    with runner.testing.run(first) as t:
        with pytest.raises(RuntimeError, match='one run at a time'), runner.testing.run(second):
            pass
        first.topics['words'].send(key='cat', value='seen')
        assert t.table('counts')['cat'] == 1
    with runner.testing.run(second) as u:                  # once the first is closed
        u.send('words', key='cat', value='seen')
        assert u.table('counts')['cat'] == 1


def test_the_fixture_refuses_a_second_run_until_the_first_is_closed(app_run):
    first = app_run(counting_app())
    with pytest.raises(RuntimeError, match='one run at a time'):
        app_run(counting_app())
    first.close()
    second = app_run(counting_app())
    second.send('words', key='cat', value='seen')
    assert second.table('counts')['cat'] == 1


def test_the_error_of_a_run_that_stops_says_its_reason_once_with_the_agent():
    with runner.testing.run(by_user_app(grouped=False)) as t:
        with pytest.raises(AgentError) as raised:
            for n in range(20):
                t.send('orders', key=f'order-{n}', value={'user': USERS[n * 7 % 12]})
        message = str(raised.value)
        assert message.startswith('agent total stopped: table ')
        assert message.count('re-key the stream') == 1


def test_a_table_the_app_does_not_have_is_refused_naming_its_tables():
    with runner.testing.run(counting_app()) as t, \
            pytest.raises(KeyError, match=r"app counting has no table 'count' \(its tables: "
                                          r"counts\)"):
        t.table('count')


def sending_app(**send):
    """An agent that sends each record on to ``out`` with the keyword arguments ``send``."""
    app = runner.App('sending')
    out = app.topic('out', partitions=1)

    @app.agent(app.topic('in', partitions=1), name='forward')
    def forward(stream):
        for _ in stream:
            out.send(**send)
    return app


@pytest.mark.parametrize('send, refusal', [
    ({'key': 'k', 'value': 1, 'headers': {'h': None}},
     TypeError('All headers items must be (str, bytes) tuples')),
    ({'key': None, 'value': None}, ValueError('Need at least one: key or value'))])
def test_a_send_kafka_pythons_producer_refuses_is_refused_as_in_a_slot(send, refusal):
    with runner.testing.run(sending_app(**send)) as t:
        with pytest.raises(AgentError) as raised:
            t.send('in', key='k', value=1)
        assert type(raised.value.error) is type(refusal)
        assert str(raised.value.error) == str(refusal)
        assert t.outputs('out') == []


def test_a_test_sends_headers_as_app_send_takes_them():
    app = runner.App('headers')
    seen = []

    @app.agent(app.topic('in', partitions=1))
    def take(stream):
        for event in stream.events():
            seen.append(event.headers)
    with runner.testing.run(app) as t:
        t.send('in', key='k', value=1, headers={'trace': 'abc', 'raw': b'\x00'})
        t.send('in', key='k', value=1, headers=[('n', 7)])
        assert seen == [[('trace', b'abc'), ('raw', b'\x00')], [('n', b'7')]]
        with pytest.raises(TypeError, match='All headers items must be'):
            t.send('in', key='k', value=1, headers={'none': None})


def test_a_timestamp_in_milliseconds_is_refused_as_seconds_are_asked_for():
    with runner.testing.run(counting_app()) as t:
        with pytest.raises(ValueError, match='in seconds since the epoch.*milliseconds'):
            t.send('words', key='cat', value='seen', timestamp=1_699_920_000_000)
        assert t.send('words', key='cat', value='seen', timestamp=t.now + 5).timestamp == \
            round((t.now + 5) * 1000)
