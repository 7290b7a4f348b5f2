"""Partition counts and co-partition groups, from declarations and what the broker has."""

import pytest

import runner
from runner.app.layout import Layout
from runner.errors import ConfigError


def make_app():
    app = runner.App('lay')
    clicks = app.topic('clicks', partitions=8)
    orders = app.topic('orders')
    totals = app.Table('totals', default=int)
    idle = app.Table('idle', default=int)

    @app.agent(clicks, name='click')
    def click(stream):
        for _ in stream:
            pass

    @app.agent(orders, name='order')
    def order(stream):
        for customer in stream:
            totals[customer] += 1
    return app, totals, idle


def test_a_table_gets_the_partition_count_of_the_topics_that_update_it():
    app, totals, idle = make_app()
    layout = Layout(app, {'orders': 4}, default_partitions=6)
    assert layout.partitions(totals) == 4 and layout.partitions(idle) == 6
    assert layout.topics == {'clicks': 8, 'orders': 4, 'lay-totals-changelog': 4,
                             'lay-idle-changelog': 6, 'lay-click-dlq': 6, 'lay-order-dlq': 6}
    assert layout.sources() == {'clicks': 8, 'orders': 4}
    assert layout.tables_of(4) == [totals] and layout.tables_of(8) == []


def test_a_declared_count_must_match_the_source_topic():
    app = runner.App('lay')
    words = app.topic('words', partitions=4)
    counts = app.Table('counts', default=int, partitions=3)

    @app.agent(words)
    def count(stream):
        for word in stream:
            counts[word] += 1
    with pytest.raises(ConfigError, match="^table 'counts' has 3 partitions but agent "
                                          ".*count updates it from topic 'words' with 4; tables "
                                          'must be co-partitioned with their source topics$'):
        Layout(app, {}, 8)


def test_a_table_used_from_topics_of_different_counts_is_refused():
    app = runner.App('lay')
    a, b = app.topic('a', partitions=2), app.topic('b', partitions=3)
    counts = app.Table('counts', default=int)

    @app.agent(a)
    def one(stream):
        for word in stream:
            counts[word] += 1

    @app.agent(b)
    def two(stream):
        for word in stream:
            counts[word] += 1
    with pytest.raises(ConfigError, match="used by agents of topics with different partition "
                                          "counts: 'a' \\(2\\), 'b' \\(3\\)"):
        Layout(app, {}, 8)


def test_existing_topics_must_have_the_declared_counts():
    app, _, _ = make_app()
    with pytest.raises(ConfigError, match="topic 'clicks' has 4 partitions but the app "
                                          'declares 8'):
        Layout(app, {'clicks': 4}, 8)
    with pytest.raises(ConfigError, match="changelog topic 'lay-totals-changelog' has 2 "
                                          "partitions but table 'totals' has 4"):
        Layout(app, {'orders': 4, 'lay-totals-changelog': 2}, 8)
