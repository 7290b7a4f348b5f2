"""How an app's topics and tables line up: partition counts and co-partition groups.

Once the broker has said how many partitions each existing topic has, every
topic and table of the app has a partition count, and falls into the
*co-partition group* of that count.  Partition ``p`` of every member of a
group belongs together: it is one *task*, owned by one slot at a time, so a
record and the table state its key updates are in the same slot whichever
co-partitioned topic the record came from.  Topics with other partition
counts are groups of their own and work beside them.

A table's partition count is its declared one, else the count of the topics
whose agents use it, else the ``topic_partitions`` setting; its partitioner
(how its keys are placed, for lookups) likewise, else ``murmur2``.  A table
used by agents of a topic with another count or partitioner is refused at
start (exit 78).  Lookups hash a key encoded as those topics' producers
encode it (their key serializer), which may differ from the table's own.

An agent that re-keys its stream (``stream.group_by``) updates its tables from
its repartition topic, not from its own: its own topic may have any count,
and a missing repartition topic is created with its tables' count.

Global tables are in no group: every slot reads all of their changelog.  The
layout gives their changelogs a count and names the one agent that may write
each (the agent of its ``source`` topic).
"""

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .codecs import Codec
from .globals import GlobalTable
from .partitioners import Partitioner, murmur2_partition
from .tables import Table, tables_used_by

if TYPE_CHECKING:
    from .agents import Agent
    from .app import App
    from .topics import Topic

#: Keys whose partition a layout remembers, per table: murmur2 is pure Python (about 2 µs
#: a key) and agents place every key they read or write.  Only keys of these exact types
#: are remembered (``1``, ``1.0`` and ``True`` are one dict key but encode apart).
PLACEMENT_CACHE = 10_000
_REMEMBERED = frozenset((str, int, bytes))


class Layout:
    """The partition count of every topic and table of an app, and its groups.

    ``existing`` holds the partition counts of the app's topics that exist
    (changelogs included); the others get their declared count or
    ``default_partitions`` when created.
    """

    def __init__(self, app: 'App', existing: Mapping[str, int], default_partitions: int) -> None:
        self.app = app
        #: Every topic of the app (changelogs included) → its partition count.
        self.topics: dict[str, int] = {}
        #: Table name → partition count.
        self.tables: dict[str, int] = {}
        #: Table name → how its keys are placed, and encoded to be placed.
        self.partitioners: dict[str, Partitioner] = {}
        self.placement_codecs: dict[str, Codec] = {}
        #: Table name → (routing) key → its partition, for the last keys placed.
        self._placed: dict[str, dict[Any, int]] = {name: {} for name in app.tables}
        for topic in app.topics.values():
            self.topics[topic.name] = _count(topic, existing, default_partitions)
        for agent in app.agents:
            if agent.repartition is not None:
                self.topics[agent.repartition.name] = existing.get(
                    agent.repartition.name) or self._repartition_count(agent, default_partitions)
        for table in app.tables.values():
            users = [agent for agent in app.agents if table in tables_used_by(agent.fn)]
            self.partitioners[table.name] = _table_partitioner(table, users)
            self.placement_codecs[table.name] = _placement_codec(table, users)
            count = self._table_count(table, users, default_partitions)
            changelog = table.changelog.name
            if existing.get(changelog, count) != count:
                raise ConfigError(f'changelog topic {changelog!r} has {existing[changelog]} '
                                  f'partitions but table {table.name!r} has {count}')
            self.tables[table.name] = self.topics[changelog] = count
        #: Global table name → the topics whose records may write it (its writer agent's).
        self.global_writers: dict[str, frozenset[str]] = {}
        for table in app.global_tables.values():
            self.topics[table.changelog.name] = _count(table.changelog, existing,
                                                       default_partitions)
            self.global_writers[table.name] = _writer_topics(table, app.agents)

    def _repartition_count(self, agent: 'Agent', default_partitions: int) -> int:
        """The partition count a missing repartition topic is created with: that of the
        tables its agent uses (declared, else of the other topics that update them)."""
        for table in tables_used_by(agent.fn):
            if table.partitions is not None:
                return table.partitions
            for other in self.app.agents:
                if other is not agent and table in tables_used_by(other.fn) \
                        and other.table_topic.name in self.topics:
                    return self.topics[other.table_topic.name]
        return default_partitions

    def _table_count(self, table: Table, users: list, default_partitions: int) -> int:
        for agent in users:
            count = self.topics[agent.table_topic.name]
            if table.partitions is not None and count != table.partitions:
                raise ConfigError(
                    f'table {table.name!r} has {table.partitions} partitions but agent '
                    f'{agent.name} updates it from topic {agent.table_topic.name!r} with '
                    f'{count}; tables must be co-partitioned with their source topics')
        counts = {self.topics[agent.table_topic.name]: agent for agent in users}
        if len(counts) > 1:
            named = ', '.join(f'{agent.table_topic.name!r} ({count})'
                              for count, agent in sorted(counts.items()))
            raise ConfigError(f'table {table.name!r} is used by agents of topics with different '
                              f'partition counts: {named}; tables must be co-partitioned with '
                              'their source topics')
        return table.partitions or next(iter(counts), None) or default_partitions

    def partitions(self, table: Table) -> int:
        return self.tables[table.name]

    def partition_of(self, table: Table, key: Any) -> int:
        """The partition of ``table`` a (routing) key lives in.  Safe from any thread: a
        key placed twice at once, or forgotten when the cache is emptied, costs a hash."""
        if type(key) not in _REMEMBERED:
            return self._place(table, key)
        placed = self._placed[table.name]
        number = placed.get(key)
        if number is None:
            if len(placed) >= PLACEMENT_CACHE:
                placed.clear()
            number = placed[key] = self._place(table, key)
        return number

    def _place(self, table: Table, key: Any) -> int:
        encoded = self.placement_codecs[table.name].dumps(key)
        return self.partitioners[table.name](encoded, self.tables[table.name])

    def sources(self) -> dict[str, int]:
        """The topics agents read (repartition topics included), with their partition
        counts."""
        return {topic.name: self.topics[topic.name] for agent in self.app.agents
                for topic in (agent.topic, agent.repartition) if topic is not None}

    def needs(self) -> dict[str, int]:
        """The topics whose records update tables, with the partition count they must keep
        (their tables')."""
        return {agent.table_topic.name: self.tables[table.name] for agent in self.app.agents
                for table in tables_used_by(agent.fn) if table.name in self.tables}

    def changelogs(self) -> dict[str, int]:
        """The tables' changelog topics, with their partition counts."""
        return {table.changelog.name: self.tables[table.name]
                for table in self.app.tables.values()}

    def tables_of(self, group: int) -> list[Table]:
        """The tables of the co-partition group of ``group`` partitions."""
        return [table for table in self.app.tables.values() if self.tables[table.name] == group]


def _writer_topics(table: GlobalTable, agents: list['Agent']) -> frozenset[str]:
    """The topics the records of a global table's writer come from: those of the one agent
    that reads its source topic (none without a source)."""
    if table.source is None:
        return frozenset()
    writers = [agent for agent in agents if agent.topic.name == table.source.name]
    if len(writers) != 1:
        named = ', '.join(agent.name for agent in writers) or 'none does'
        raise ConfigError(f'global table {table.name!r} is written by the agent of its source '
                          f'topic {table.source.name!r}, and exactly one agent must read it '
                          f'({named})')
    return frozenset({writers[0].topic.name, writers[0].table_topic.name})


def _table_partitioner(table: Table, users: list) -> Partitioner:
    """The declared partitioner, else that of the topics whose agents use the table."""
    placed = {agent.table_topic.partitioner: agent.table_topic.name for agent in users}
    if table.partitioner is not None:
        placed.setdefault(table.partitioner, f'table {table.name!r}')
    if len(placed) > 1:
        raise ConfigError(f'table {table.name!r} and the topics that update it place keys with '
                          f'different partitioners ({", ".join(sorted(placed.values()))}); '
                          'declare the same partitioner on them')
    return next(iter(placed), murmur2_partition)


def _placement_codec(table: Table, users: list) -> Codec:
    """How the keys of ``table`` are encoded where they are placed: by its source topics'
    key serializer (they must agree), else its own."""
    codecs = {agent.table_topic.key_codec: agent.table_topic.name for agent in users}
    if len(codecs) > 1:
        raise ConfigError(f'table {table.name!r} is updated from topics with different key '
                          f'serializers ({", ".join(sorted(codecs.values()))}); its keys '
                          'cannot be placed one way')
    return next(iter(codecs), table.key_codec)


def _count(topic: 'Topic', existing: Mapping[str, int], default_partitions: int) -> int:
    count = existing.get(topic.name)
    if count is None:
        return topic.partitions or default_partitions
    if topic.partitions is not None and topic.partitions != count:
        raise ConfigError(f'topic {topic.name!r} has {count} partitions but the app declares '
                          f'{topic.partitions}; change the declaration or the topic')
    return count
