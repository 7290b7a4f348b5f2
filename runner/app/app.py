"""The application: what a user declares (topics, agents, tables, settings)."""

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..config import check_settings
from ..errors import ConfigError
from .agents import Agent
from .codecs import Codec
from .context import current
from .globals import GlobalTable
from .partitioners import Partitioner
from .tables import Table
from .timers import Cron, Interval, Timer
from .topics import Topic, check_topic_name


class App:
    """A stream-processing application.

    ``App('proj')`` joins consumer group ``proj``.  Keyword arguments are
    settings (see :class:`runner.config.Settings`); the config file and the
    command line override them.
    """

    def __init__(self, name: str, broker: str | None = None, **settings: Any) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f'invalid app name {name!r}: it must be a non-empty string')
        self.name = check_topic_name(name)   # it names the group and the changelog topics
        given = dict(settings, broker=broker) if broker is not None else dict(settings)
        self.settings = check_settings(given, f'App({name!r})')
        self.topics: dict[str, Topic] = {}
        self.agents: list[Agent] = []
        self.tables: dict[str, Table] = {}
        self.global_tables: dict[str, GlobalTable] = {}
        self.timers: list[Timer] = []

    def topic(self, name: str, partitions: int | None = None, key_serializer: str | Codec = 'str',
              value_serializer: str | Codec = 'json', config: Mapping[str, str] | None = None,
              partitioner: str | Partitioner = 'murmur2') -> Topic:
        """Declare a topic; it is created on start when missing.  ``partitioner`` says how
        its producers place keys: ``murmur2`` (Java clients, kafka-python), ``crc32``
        (librdkafka clients) or a function."""
        topic = Topic(self, name, partitions, key_serializer, value_serializer, dict(config or {}),
                      partitioner)
        known = self.topics.get(name)
        if known is not None:
            if (known.partitions, known.key_codec, known.value_codec, known.partitioner) != (
                    topic.partitions, topic.key_codec, topic.value_codec, topic.partitioner):
                raise ConfigError(f'topic {name!r} is declared twice with different settings')
            return known
        self.topics[name] = topic
        return topic

    def Table(self, name: str, default: Callable[[], Any] | None = None,
              partitions: int | None = None, key_serializer: str | Codec = 'str',
              value_serializer: str | Codec = 'json',
              partitioner: str | Partitioner | None = None) -> Table:
        """Declare a table; its changelog topic ``{app}-{name}-changelog`` is created on start.

        ``partitions`` and ``partitioner`` default to those of the topics whose
        agents use the table, and must match them when given.
        """
        if name in self.tables or name in self.global_tables:
            raise ConfigError(f'table {name!r} is declared twice')
        table = self.tables[name] = Table(self, name, default, partitions, key_serializer,
                                          value_serializer, partitioner)
        return table

    def GlobalTable(self, name: str, default: Callable[[], Any] | None = None,
                    source: Topic | str | None = None, partitions: int | None = None,
                    key_serializer: str | Codec = 'str', value_serializer: str | Codec = 'json',
                    partitioner: str | Partitioner = 'murmur2') -> GlobalTable:
        """Declare a table every slot holds whole (see :class:`runner.app.globals.GlobalTable`):
        agents read any key of it, whatever their record's partition; the one agent that
        reads ``source`` writes it, and so may any producer of its changelog topic
        ``{app}-{name}-changelog``."""
        if name in self.tables or name in self.global_tables:
            raise ConfigError(f'table {name!r} is declared twice')
        if isinstance(source, str):
            source = self.topic(source)
        table = self.global_tables[name] = GlobalTable(
            self, name, default, source, partitions, key_serializer, value_serializer,
            partitioner)
        return table

    def agent(self, topic: Topic | str, sink: Iterable[Any] | Any = None, concurrency: int = 1,
              name: str | None = None, on_error: str = 'stop', retries: int = 0,
              retry_backoff: float = 0.5) -> Callable[[Callable], Agent]:
        """Decorate ``fn(stream)`` to run it over ``topic`` in every slot; ``on_error``,
        ``retries`` and ``retry_backoff`` say what happens when it raises on a record (see
        :class:`runner.app.agents.Agent`)."""
        source = topic if isinstance(topic, Topic) else self.topic(topic)
        sinks = [] if sink is None else list(sink) if isinstance(sink, (list, tuple)) else [sink]

        def register(fn: Callable) -> Agent:
            agent = Agent(self, fn, source, sinks, concurrency, name, on_error, retries,
                          retry_backoff)
            if any(known.name == agent.name for known in self.agents):
                raise ConfigError(f'two agents are named {agent.name!r}; give one a name=')
            self.agents.append(agent)
            self.topics.setdefault(agent.dead_letter_topic.name, agent.dead_letter_topic)
            return agent
        return register

    def timer(self, interval: float, on_leader: bool = False, name: str | None = None,
              on_error: str = 'log') -> Callable[[Callable[[], Any]], Timer]:
        """Decorate ``fn()`` to run it every ``interval`` seconds in every slot, or in the
        app's one leader slot with ``on_leader`` (see :class:`runner.app.timers.Timer`)."""
        return self._timer(Interval(interval), on_leader, name, on_error)

    def crontab(self, cron: str, timezone: str | None = None, on_leader: bool = False,
                name: str | None = None, on_error: str = 'log'
                ) -> Callable[[Callable[[], Any]], Timer]:
        """Decorate ``fn()`` to run it at the times the cron expression ``cron`` names, in
        ``timezone`` (a zoneinfo name; UTC by default), as :meth:`timer` does."""
        return self._timer(Cron(cron, timezone), on_leader, name, on_error)

    def _timer(self, schedule: Interval | Cron, on_leader: bool, name: str | None,
               on_error: str) -> Callable[[Callable[[], Any]], Timer]:
        def register(fn: Callable[[], Any]) -> Timer:
            timer = Timer(self, fn, schedule, on_leader, name, on_error)
            if any(known.name == timer.name for known in self.timers):
                raise ConfigError(f'two timers are named {timer.name!r}; give one a name=')
            self.timers.append(timer)
            return timer
        return register

    def send(self, topic: Topic | str, key: Any = None, value: Any = None,
             headers: Mapping[str, Any] | list | None = None, partition: int | None = None) -> Any:
        """Send one record; works inside agents and from plain code.

        Returns kafka-python's future (``.get(timeout)`` waits for the write).
        Outside a worker, a producer is created on first use and flushed at exit.
        """
        if not isinstance(topic, Topic):
            topic = self.topics.get(topic) or Topic(self, topic)
        return current().send(topic, topic.key_codec.dumps(key),
                              topic.value_codec.dumps(value), header_list(headers), partition)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every record sent from this process is written."""
        current().flush(timeout)

    def __repr__(self) -> str:
        return f'<App {self.name} topics={sorted(self.topics)} agents={len(self.agents)}>'


def header_list(headers: Mapping[str, Any] | list | None) -> list | None:
    """Headers as Kafka takes them: ``(name, bytes)`` pairs, from a mapping or pairs whose
    values are bytes, None or anything else (sent as its ``str``, UTF-8)."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), v if isinstance(v, bytes) or v is None else str(v).encode())
            for k, v in items]
