"""Inside an agent, a table key lives in the partition of the record being processed: a
key of another partition is refused, loudly, naming ``group_by``; keys of the record's own
partition, and the record's own key, are served."""

import contextvars
from types import SimpleNamespace

import pytest

import runner
from runner.app import context
from runner.app.layout import Layout
from runner.app.partitioners import murmur2_partition
from runner.errors import ConfigError
from runner.runtime.context import AgentContext, SlotContext
from runner.runtime.tasks import Task
from runner.state.partitions import ValueCache, partition_class

PARTITIONS = 4
app = runner.App('own')
clicks = app.topic('clicks', partitions=PARTITIONS)
counts = app.Table('counts', default=int)
per_minute = app.Table('per_minute', default=int).tumbling(60)


@app.agent(clicks)
def count(stream):
    for user in stream:
        counts[user] += 1
        per_minute[user] += 1


class EmptyStore:
    def get(self, key):
        return None

    def newest_window(self):
        return None


def key_in(partition, other_than=()):
    """A key murmur2 places in ``partition`` of PARTITIONS."""
    return next(key for key in (f'user-{n}' for n in range(1000)) if key not in other_than
                and murmur2_partition(key.encode(), PARTITIONS) == partition)


def processing(number=1, record_key=None):
    """An agent context inside a record of partition ``number`` of ``clicks``."""
    layout = Layout(app, {'clicks': PARTITIONS}, PARTITIONS)
    slot = SlotContext(layout, SimpleNamespace(transactional=False), None)
    task = Task(PARTITIONS, number, [counts, per_minute])
    task.partitions = {table.name: partition_class(table)(table, number, EmptyStore(), 'id',
                                                          ValueCache())
                       for table in (counts, per_minute)}
    agent_context = AgentContext(slot)
    agent_context.task = task
    agent_context.record = SimpleNamespace(
        key=(record_key or key_in(number)).encode(), timestamp=120_000, topic='clicks',
        partition=number, offset=7)
    return agent_context


def in_agent(agent_context, operation):
    """Run ``operation()`` as the agent thread bound to ``agent_context`` would."""
    def bound():
        context.bind(agent_context)
        return operation()
    return contextvars.copy_context().run(bound)


def test_a_write_of_a_key_of_the_records_partition_is_served():
    agent_context = processing(1)
    mine, neighbour = key_in(1), key_in(1, other_than=[key_in(1)])
    in_agent(agent_context, lambda: counts.__setitem__(mine, 3))
    in_agent(agent_context, lambda: counts.__setitem__(neighbour, 4))     # not the record's
    assert in_agent(agent_context, lambda: (counts[mine], counts[neighbour])) == (3, 4)


def test_a_write_of_a_key_of_another_partition_is_refused_naming_group_by():
    agent_context = processing(1)
    elsewhere = key_in(2)
    with pytest.raises(ConfigError) as refused:
        in_agent(agent_context, lambda: counts.__setitem__(elsewhere, 1))
    assert str(refused.value) == (
        f"table 'counts': key {elsewhere!r} belongs to partition 2, but the record being "
        f'processed (clicks[1]@7) is in partition 1; an agent reads and writes only keys of '
        f'its record\'s partition: re-key the stream with stream.group_by(key_fn) (or send '
        f'to a topic keyed by the table key)')
    assert agent_context.undone == [] and agent_context.task.partitions['counts'].dirty == {}


def test_a_read_of_a_key_of_another_partition_is_refused_too():
    agent_context = processing(1)
    elsewhere = key_in(3)
    for read in (lambda: counts[elsewhere], lambda: elsewhere in counts,
                 lambda: counts.get(elsewhere)):
        with pytest.raises(ConfigError, match=r'stream\.group_by\(key_fn\)'):
            in_agent(agent_context, read)


def test_the_records_own_key_is_served_wherever_its_producer_placed_it():
    misplaced = key_in(0)           # sent to partition 1 explicitly, say
    agent_context = processing(1, record_key=misplaced)
    in_agent(agent_context, lambda: counts.__setitem__(misplaced, 1))
    assert in_agent(agent_context, lambda: counts[misplaced]) == 1


def test_a_windowed_table_is_placed_by_the_key_not_the_window():
    agent_context = processing(1)
    mine, elsewhere = key_in(1), key_in(0)

    def add(key):
        per_minute[key] += 1
    in_agent(agent_context, lambda: add(mine))
    assert in_agent(agent_context, lambda: per_minute[mine].current()) == 1
    with pytest.raises(ConfigError, match=r"table 'per_minute': key .* belongs to partition 0"):
        in_agent(agent_context, lambda: add(elsewhere))
    with pytest.raises(ConfigError, match='group_by'):
        in_agent(agent_context, lambda: per_minute.windows(elsewhere))
