"""Global tables without a broker: any agent reads any key (the other-partition rule of
tables does not apply), only the agent of the source topic writes (through the changelog),
every other writer is refused with one clear line, and the store finds keys of every
partition."""

import contextvars
import json
from types import SimpleNamespace

import pytest
from kafka.errors import KafkaConnectionError

import runner
from runner.app import context
from runner.app.context import MISSING
from runner.app.layout import Layout
from runner.app.partitioners import murmur2_partition
from runner.errors import ConfigError
from runner.runtime.context import AgentContext, SlotContext
from runner.runtime.globals import GlobalQueries
from runner.runtime.outside import OutsideContext
from runner.runtime.queries import TableQueries
from runner.runtime.status import SlotStatus
from runner.runtime.tasks import Task
from runner.state import globals as globals_state
from runner.state.globals import GlobalReader, GlobalStore
from runner.state.partitions import ValueCache, partition_class

PARTITIONS = 4
app = runner.App('globals-unit')
orders = app.topic('orders', partitions=PARTITIONS)
price_updates = app.topic('price-updates', partitions=PARTITIONS)
prices = app.GlobalTable('prices', default=int, source=price_updates, partitions=3)
rates = app.GlobalTable('rates')
spent = app.Table('spent', default=int)


@app.agent(price_updates)
def set_price(stream):
    for item, price in stream.items():
        prices[item] = price


@app.agent(orders)
def total(stream):
    for customer, order in stream.items():
        spent[customer] += prices[order['item']]


class EmptyStore:
    def get(self, key):
        return None


class Producer:
    """Records what the slot sends."""

    transactional = False
    max_request_size = 1 << 20

    def __init__(self):
        self.sent = []

    def partition_count(self, topic):
        return 3

    def send(self, topic, key, value, headers, partition, *_):
        self.sent.append((topic, key, value, partition))
        return SimpleNamespace()


def item_in(partition, count=3):
    """A key murmur2 places in ``partition`` of ``count``."""
    return next(key for key in (f'item-{n}' for n in range(1000))
                if murmur2_partition(key.encode(), count) == partition)


@pytest.fixture
def reader(tmp_path):
    """The slot's global tables, filled without Kafka: one key in each changelog partition."""
    tables = GlobalReader(SimpleNamespace(processing_guarantee='at_least_once'), 'c',
                          app.global_tables.values(), tmp_path,
                          {prices.changelog.name: 3, rates.changelog.name: 1}, print)
    store = tables.stores['prices']
    for number in range(3):
        store.apply(number, [(item_in(number).encode(), json.dumps(10 + number).encode())],
                    'topic-id', 5)
    return tables


def processing(reader, topic='orders', number=1):
    """An agent context inside a record of partition ``number`` of ``topic``."""
    producer = Producer()
    layout = Layout(app, {'orders': PARTITIONS, 'price-updates': PARTITIONS}, PARTITIONS)
    slot = SlotContext(layout, producer, None, global_tables=reader)
    task = Task(PARTITIONS, number, [spent])
    task.partitions = {'spent': partition_class(spent)(spent, number, EmptyStore(), 'id',
                                                       ValueCache())}
    agent_context = AgentContext(slot)
    agent_context.task = task
    agent_context.record = SimpleNamespace(key=b'customer', timestamp=0, topic=topic,
                                           partition=number, offset=7)
    return agent_context


def in_agent(agent_context, operation):
    """Run ``operation()`` as the agent thread bound to ``agent_context`` would."""
    def bound():
        context.bind(agent_context)
        return operation()
    return contextvars.copy_context().run(bound)


def test_an_agent_reads_keys_of_every_partition_whatever_its_records_partition(reader):
    agent_context = processing(reader, number=1)
    found = in_agent(agent_context, lambda: [prices[item_in(n)] for n in range(3)])
    assert found == [10, 11, 12]
    assert in_agent(agent_context, lambda: (prices['never-written'], 'never-written' in prices,
                                            prices.get('never-written', 'none'))) == (0, False,
                                                                                      'none')
    assert dict(in_agent(agent_context, lambda: list(prices.items()))) == {
        item_in(n): 10 + n for n in range(3)}


def test_the_agent_of_the_source_topic_writes_through_the_changelog(reader):
    agent_context = processing(reader, topic='price-updates')
    item = item_in(2)
    in_agent(agent_context, lambda: prices.__setitem__(item, 99))
    in_agent(agent_context, lambda: prices.__delitem__('gone'))
    assert agent_context.slot.producer.sent == [
        (prices.changelog.name, item.encode(), b'99', 2),
        (prices.changelog.name, b'gone', None, murmur2_partition(b'gone', 3))]
    assert in_agent(agent_context, lambda: prices[item]) == 12   # seen once read back


def test_a_write_from_an_agent_of_another_topic_is_refused_naming_the_source(reader):
    agent_context = processing(reader, topic='orders')
    with pytest.raises(ConfigError) as refused:
        in_agent(agent_context, lambda: prices.__setitem__('item-1', 5))
    assert str(refused.value) == (
        "global table 'prices' is written only by the agent of its source topic "
        "'price-updates', not by one processing a record of 'orders': send the change to "
        "'price-updates', or produce it to the changelog 'globals-unit-prices-changelog'")
    assert agent_context.slot.producer.sent == []


def test_a_global_table_without_a_source_is_written_by_no_agent(reader):
    for topic in ('orders', 'price-updates'):
        with pytest.raises(ConfigError, match=r"'rates' has no source topic, so no agent "
                                              r"writes it .* 'globals-unit-rates-changelog'"):
            in_agent(processing(reader, topic), lambda: rates.__setitem__('eur', 1.1))


def test_writes_outside_a_record_are_refused(reader):
    slot = processing(reader).slot
    with pytest.raises(RuntimeError, match="changed by the agent of its source topic"):
        in_agent(slot, lambda: prices.__setitem__('item-1', 5))
    with pytest.raises(RuntimeError, match='lives in the worker slots'):
        in_agent(OutsideContext(), lambda: prices['item-1'])
    with pytest.raises(TypeError, match='None cannot be stored'):
        in_agent(processing(reader, 'price-updates'), lambda: prices.__setitem__('x', None))


def test_other_threads_of_the_slot_read_any_key(reader):
    slot = processing(reader).slot
    assert in_agent(slot, lambda: [prices[item_in(n)] for n in range(3)]) == [10, 11, 12]


def test_the_source_topic_must_be_read_by_exactly_one_agent():
    lonely = runner.App('lonely')
    lonely.GlobalTable('prices', source='updates')
    with pytest.raises(ConfigError, match=r"exactly one agent must read it \(none does\)"):
        Layout(lonely, {}, 4)
    crowded = runner.App('crowded')
    updates = crowded.topic('updates')
    crowded.GlobalTable('prices', source=updates)
    for name in ('one', 'two'):
        crowded.agent(updates, name=name)(lambda stream: None)
    with pytest.raises(ConfigError, match=r'exactly one agent must read it \(one, two\)'):
        Layout(crowded, {}, 4)


def test_a_global_table_and_a_table_cannot_share_a_name():
    clash = runner.App('clash')
    clash.Table('prices')
    with pytest.raises(ConfigError, match="table 'prices' is declared twice"):
        clash.GlobalTable('prices')


def test_the_store_keeps_each_partitions_position_with_its_values(tmp_path):
    store = GlobalStore(tmp_path / 'prices')
    store.apply(0, [(b'a', b'1'), (b'b', b'2')], 'id', 2)
    store.apply(2, [(b'a', None), (b'c', b'3')], 'id', 9)
    assert store.positions() == {0: ('id', 2), 2: ('id', 9)}
    assert [(key, value) for key, value in store.items()] == [(b'b', b'2'), (b'c', b'3')]
    assert store.value(prices, 'a') is MISSING and store.value(prices, 'c') == 3
    store.clear()
    assert store.positions() == {} and list(store.items()) == []


def test_a_slot_is_not_ready_while_its_global_tables_load(reader):
    status = SlotStatus('globals-unit', 0, 30)
    status.phase = 'running'
    status.global_loading = reader.loading
    loading = 'loading global tables prices, rates: reading where their changelogs end'
    assert status.ready() == (False, loading)
    reader.loaded.set()
    assert status.ready()[1] != loading


class Changelog:
    """What the reader asks a consumer about a changelog: where its partitions start and
    end."""

    def __init__(self, start, end):
        self.start, self.end = start, end

    def beginning_offsets(self, tps):
        return dict.fromkeys(tps, self.start)

    def end_offsets(self, tps):
        return dict.fromkeys(tps, self.end)


@pytest.mark.parametrize(('topic_id', 'start', 'end', 'offsets'), [
    ('topic-id', 0, 9, {0: 5, 1: 5, 2: 5}),        # trusted: only the tail is read
    ('topic-id', 0, 4, {0: 0, 1: 0, 2: 0}),        # the changelog ends before the state
    ('topic-id', 7, 9, {0: 7, 1: 7, 2: 7}),        # truncated past the state
    ('other-id', 0, 9, {0: 0, 1: 0, 2: 0}),        # deleted and created again
])
def test_local_state_is_read_on_from_its_offsets_only_when_it_belongs_to_the_changelog(
        reader, topic_id, start, end, offsets):
    reader._followed = reader._follow(Changelog(start, end), prices, topic_id)
    followed = {f.tp.partition: f.offset for f in reader._followed.values()}
    assert followed == offsets
    kept = dict(reader.items(prices))
    assert kept == ({item_in(n): 10 + n for n in range(3)} if offsets[0] == 5 else {})
    assert reader.remaining() == sum(end - offset for offset in offsets.values())


def query(queries, path, **params):
    """The answer of ``GET path?params`` among the global tables' routes."""
    for pattern, handler, *_ in queries.routes():
        match = pattern.fullmatch(path)
        if match:
            return handler(match, params)
    return None


def test_lookups_say_try_again_for_a_key_not_found_while_loading_and_404_once_loaded(reader):
    queries = GlobalQueries(app.global_tables, SlotStatus('globals-unit', 2, 30), 'here:1')
    assert query(queries, '/tables/prices/x')[0] == 503          # not open yet
    queries.open(reader)
    item = item_in(1)
    assert query(queries, f'/tables/prices/{item}') == (200, {
        'table': 'prices', 'key': item, 'global': True, 'slot': 2, 'served_by': 'here:1',
        'stale': True, 'value': 11})
    status, body = query(queries, '/tables/prices/never-written')
    assert (status, body['stale']) == (503, True)
    reader.loaded.set()
    assert query(queries, f'/tables/prices/{item}')[1]['stale'] is False
    assert query(queries, '/tables/prices/never-written')[0] == 404
    assert query(queries, '/tables/prices/caf\u00c3\u00a9')[0] == 400
    assert query(queries, '/tables/spent/x') is None            # a partitioned table's route


def test_pages_walk_every_key_of_every_partition_once(reader):
    queries = GlobalQueries(app.global_tables, SlotStatus('globals-unit', 0, 30), 'here:1')
    queries.open(reader)
    first = query(queries, '/tables/prices', limit='2')[1]
    assert (first['global'], first['partitions'], len(first['keys'])) == (True, 3, 2)
    rest = query(queries, '/tables/prices', limit='2', after=first['next'])[1]
    assert first['keys'] + rest['keys'] == sorted(item_in(n) for n in range(3))
    assert rest['next'] is None
    assert query(queries, '/tables/prices', limit='0')[0] == 400


def test_global_tables_are_listed_loading_then_loaded_with_the_records_read(reader):
    status = SlotStatus('globals-unit', 0, 30)
    queries = GlobalQueries(app.global_tables, status, 'here:1')
    status.global_tables = queries.summaries
    listing = TableQueries(app.tables, status, 'here:1')
    assert listing.list_tables(None, None, {}) == (200, {'tables': [], 'global_tables': []})
    queries.open(reader)
    reader.read['prices'] = 3
    assert [(table['name'], table['global'], table['loaded'], table['read_since_start'])
            for table in listing.list_tables(None, None, {})[1]['global_tables']] == [
        ('prices', True, False, 3), ('rates', True, False, 0)]
    reader.loaded.set()
    assert all(table['loaded'] for table in status.describe()['global_tables'])


def test_a_reader_that_cannot_create_its_consumer_reports_the_failure(reader, monkeypatch):
    def refused(**_):
        raise KafkaConnectionError('no broker')
    monkeypatch.setattr(globals_state, 'KafkaConsumer', refused)
    failures = []
    reader._on_failure = lambda reason, *code: failures.append(reason)
    reader._settings = SimpleNamespace(kafka_client=dict, broker_timeout=1)
    reader.start()
    reader.thread.join(10)
    assert failures == ['the global table reader failed: KafkaConnectionError: no broker']


def test_a_context_without_global_tables_says_so():
    slot = SlotContext(Layout(app, {}, PARTITIONS), Producer(), None)
    with pytest.raises(RuntimeError, match="global table 'prices' is not held here"):
        in_agent(slot, lambda: prices['item-1'])
