"""``stream.group_by``: the repartition topic an agent gets for it, its partition count, and
how a grouped stream forwards the records of its topic and hands out those read back."""

import json
from types import SimpleNamespace

import pytest
from kafka import TopicPartition

import runner
from runner.app.layout import Layout
from runner.errors import ConfigError
from runner.runtime.context import AgentContext
from runner.runtime.queues import Dispatcher, Inbox
from runner.runtime.stream import Stream
from runner.state.checkpoint import Guard

REPARTITION = 're-total-repartition'


def regrouping_app(table_partitions=None):
    """Orders keyed by order id, totalled per user through ``group_by``."""
    app = runner.App('re')
    orders = app.topic('orders', partitions=4)
    totals = app.Table('totals', default=int, partitions=table_partitions)

    @app.agent(orders, name='total')
    def total(stream):
        for order in stream.group_by(lambda order: order['user']):
            totals[order['user']] += 1
    return app, totals


def test_an_agent_that_calls_group_by_reads_a_repartition_topic_of_its_tables_count():
    app, totals = regrouping_app(table_partitions=3)
    [agent] = app.agents
    assert agent.repartition.name == REPARTITION
    assert agent.repartition.key_codec is totals.key_codec
    assert agent.repartition.value_codec is agent.topic.value_codec
    layout = Layout(app, {'orders': 4}, default_partitions=6)
    assert layout.partitions(totals) == 3              # not the 4 of the orders topic
    assert layout.topics[REPARTITION] == 3
    assert layout.sources() == {'orders': 4, REPARTITION: 3}
    assert layout.needs() == {REPARTITION: 3}
    assert layout.tables_of(3) == [totals] and layout.tables_of(4) == []


def test_a_repartition_topic_takes_the_count_of_the_tables_other_sources_else_the_default():
    app, totals = regrouping_app()
    assert Layout(app, {'orders': 4}, default_partitions=6).topics[REPARTITION] == 6
    clicks = app.topic('clicks', partitions=2)

    @app.agent(clicks, name='click')
    def click(stream):
        for user in stream:
            totals[user] += 1
    layout = Layout(app, {'orders': 4, 'clicks': 2}, default_partitions=6)
    assert layout.topics[REPARTITION] == 2 and layout.partitions(totals) == 2


def test_an_existing_repartition_topic_of_another_count_than_the_table_is_refused():
    app, _ = regrouping_app(table_partitions=3)
    with pytest.raises(ConfigError, match=f"^table 'totals' has 3 partitions but agent total "
                                          f"updates it from topic '{REPARTITION}' with 2; "):
        Layout(app, {'orders': 4, REPARTITION: 2}, default_partitions=6)


def test_an_agent_that_does_not_call_group_by_has_no_repartition_topic():
    app = runner.App('re')

    @app.agent(app.topic('orders'), name='plain')
    def plain(stream):
        for _ in stream:
            pass
    assert app.agents[0].repartition is None
    assert app.agents[0].table_topic is app.agents[0].topic


def test_tables_placed_differently_cannot_share_a_repartition_topic():
    app = runner.App('re')
    by_name = app.Table('by_name', default=int)
    by_id = app.Table('by_id', default=int, key_serializer='json')

    @app.agent(app.topic('orders'), name='both')
    def both(stream):
        for order in stream.group_by(lambda order: order['user']):
            by_name[order['user']] += 1
            by_id[order['user']] += 1
    with pytest.raises(ConfigError, match="^agent both re-keys its stream for tables 'by_id', "
                                          "'by_name', which encode or place their keys"):
        Layout(app, {}, default_partitions=4)


def test_one_inbox_fed_by_two_topics_counts_once():
    inbox = Inbox()
    dispatcher = Dispatcher({'orders': [inbox], REPARTITION: [inbox]})
    assert dispatcher.topics == ['orders', REPARTITION]
    dispatcher.assign(TopicPartition('orders', 0), SimpleNamespace(), held=False)
    assert len(dispatcher.queues()) == 1


# -- the grouped stream --------------------------------------------------------------

ORDERS, GROUPED = TopicPartition('orders', 1), TopicPartition(REPARTITION, 2)


class World:
    """A stream of ``orders`` whose agent re-keys it; sends are recorded, not sent."""

    def __init__(self):
        app, _ = regrouping_app()
        self.agent = app.agents[0]
        self.sent = []
        self.guarded = []           # whether the task's guard was held at each send
        slot = SimpleNamespace(producer=SimpleNamespace(transactional=False),
                               send_processed=self._send_processed)
        self.task = SimpleNamespace(enter=lambda: None, leave=lambda: None, cut_in=5,
                                    finished=False, guard=Guard(cut=None))
        self.inbox = Inbox()
        self.queues = {tp: self.inbox.assign(tp, self.task, held=False)
                       for tp in (ORDERS, GROUPED)}
        self.stream = Stream(self.agent.topic, self.inbox, AgentContext(slot), policy=None,
                             repartition=self.agent.repartition)

    def _send_processed(self, topic, key, value, headers, partition, dropped, after,
                        timestamp_ms):
        self.sent.append((topic.name, key, value, headers, partition, after, timestamp_ms))
        self.guarded.append(self.task.guard._lock.locked())

    def put(self, tp, *values, key=b'order-1'):
        self.inbox.put(tp, [SimpleNamespace(
            topic=tp.topic, partition=tp.partition, offset=offset, key=key,
            value=json.dumps(value).encode(), headers=[('trace', b'x')], timestamp=1000 + offset)
            for offset, value in enumerate(values)])


def test_a_grouped_stream_forwards_its_topics_records_under_the_new_key_and_hands_out_the_rest():
    world = World()
    world.put(ORDERS, {'user': 'ann'}, {'user': 'bob'})
    world.put(GROUPED, {'user': 'ann'}, key=b'ann')
    grouped = world.stream.group_by(lambda order: order['user'])
    assert next(iter(grouped)) == {'user': 'ann'}       # read back from the repartition topic
    assert world.sent == [
        (REPARTITION, b'ann', b'{"user": "ann"}', [('trace', b'x')], None, 5, 1000),
        (REPARTITION, b'bob', b'{"user": "bob"}', [('trace', b'x')], None, 5, 1001)]
    assert world.queues[ORDERS].processed == 1          # both forwarded: processed
    assert world.stream.holding.topic == REPARTITION


def test_a_grouped_streams_items_carry_the_new_key():
    world = World()
    world.put(GROUPED, {'user': 'ann'}, key=b'ann')
    assert next(iter(world.stream.group_by(lambda order: order['user']).items())) == (
        'ann', {'user': 'ann'})


def test_a_key_function_that_raises_leaves_its_record_to_the_agents_error_policy():
    world = World()
    world.put(ORDERS, {'user': 'ann'}, {'name': 'no user'}, {'user': 'cid'})
    with pytest.raises(KeyError):
        next(iter(world.stream.group_by(lambda order: order['user'])))
    assert [sent[1] for sent in world.sent] == [b'ann']
    assert world.stream.unfinished.offset == 1          # the policy's to retry or set aside
    assert world.queues[ORDERS].processed == 0


def test_a_key_function_that_returns_none_is_refused():
    world = World()
    world.put(ORDERS, {'user': None})
    with pytest.raises(TypeError, match='the key function of group_by returned None'):
        next(iter(world.stream.group_by(lambda order: order['user'])))
    assert world.sent == [] and world.stream.unfinished.offset == 0


def test_group_by_outside_the_agents_own_function_is_a_config_error():
    world = World()
    context = AgentContext(SimpleNamespace(producer=SimpleNamespace(transactional=False)))
    plain = Stream(world.agent.topic, Inbox(), context, policy=None)
    with pytest.raises(ConfigError, match="outside the agent's own function"):
        plain.group_by(lambda order: order['user'])


def test_records_are_forwarded_holding_their_tasks_guard_so_no_cut_falls_inside_one():
    world = World()
    world.put(ORDERS, {'user': 'ann'}, {'user': 'bob'})
    world.put(GROUPED, {'user': 'ann'}, key=b'ann')
    next(iter(world.stream.group_by(lambda order: order['user'])))
    assert world.guarded == [True, True]       # a checkpoint waits for the record's end
    assert not world.task.guard._lock.locked()   # let go at the end of the batch
