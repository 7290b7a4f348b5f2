"""Testing an app without Kafka: its agents and tables run in the test's own thread.

::

    import runner.testing

    def test_counts_words():
        with runner.testing.run(app) as t:
            t.send('sentences', value='the cat and the hat')
            assert t.table('counts')['the'] == 2
            assert [e.value for e in t.outputs('words')] == ['the', 'cat', 'and', 'the', 'hat']

A run is one slot that owns every partition, built from the slot's own parts:
the app's layout (partition counts, co-partitioning), its agent instances
(:class:`runner.runtime.agents.AgentThreads`: streams, generator agents and
sinks, ``group_by``, the ``on_error`` policy with its retries and dead
letters), the processing contexts of :mod:`runner.runtime.context` (table
defaults, deletes, windows, the refusal of a key of another partition), table
partitions over LevelDB stores in a temporary directory, and the checkpoint
(:mod:`runner.state.checkpoint`) with its changelog records and window expiry.
Only Kafka (:mod:`runner.testing.broker`: topics in memory, records placed by
the topics' own partitioners, so a key lands where a Java or kafka-python
producer puts it) and the threads (:mod:`runner.testing.greenlets`: each agent
instance is a greenlet that runs until it waits for records) are replaced.
:meth:`AppDriver.send` returns once every record it caused is processed.
"""

import contextlib
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import greenlet
from kafka import TopicPartition

from ..app import context
from ..app.agents import Agent
from ..app.app import App, header_list
from ..app.context import Event
from ..app.layout import Layout
from ..app.tables import Table
from ..app.timers import leader_topic
from ..app.topics import Topic
from ..config import build, check_settings
from ..errors import EX_SOFTWARE
from ..runtime.agents import AgentThreads
from ..runtime.context import SlotContext, placed
from ..runtime.policy import error_text, where
from ..runtime.queues import Dispatcher, Inbox, Stopped
from ..runtime.stream import decoded_events
from ..runtime.tasks import Tasks
from ..runtime.timers import Duty, ManualClock, Timers, check_timers
from ..state.checkpoint import Checkpoint
from ..state.manager import StateManager
from ..state.stores import Key, PartitionStore, Stores
from .broker import Broker, TestProducer, check_record
from .greenlets import Greenlets, SteppedInbox

__all__ = ['START', 'AgentError', 'AppDriver', 'run']

#: Where a run's clock starts, in seconds since the epoch (2023-11-14 00:00 UTC): a whole
#: day, so windows of up to a day start with the run.
START = 1_699_920_000.0
#: The changelog topic id a run's table stores are written with.
TOPIC_ID = 'runner.testing'
#: The run open in this process, if any: a second one is refused, as its slot context
#: would replace the first's (whose sends would then go to a real Kafka).
_open: list['AppDriver'] = []


class AgentError(Exception):
    """An agent raised on a record and its ``on_error`` policy stopped there: the record's
    partition is stopped at it (``on_error='stop'``, once its retries are spent), or the
    slot would stop (the agent raised a :class:`runner.errors.RunnerError`, such as
    reading a key of another partition, or its function returned).

    ``agent`` is the agent's name (None for a timer, see :ref:`timers`), ``record`` the
    record as a :class:`runner.Event`
    (decoded as its topic decodes it; None if it was raised outside any record) and
    ``error`` what the agent raised (also the exception's ``__cause__``).
    """

    def __init__(self, message: str, agent: str | None, record: Event | None,
                 error: BaseException | None) -> None:
        super().__init__(message)
        self.agent = agent
        self.record = record
        self.error = error


@contextlib.contextmanager
def run(app: App, datadir: str | Path | None = None, partitions: Mapping[str, int] | None = None,
        **settings: Any) -> Iterator['AppDriver']:
    """Run ``app`` in this thread for the block: see :class:`AppDriver`.

    ``datadir`` holds the table stores (a temporary directory by default, removed
    afterwards); ``partitions`` gives the partition counts of topics as if they
    existed already (others have their declared count, else ``topic_partitions``);
    keyword arguments are settings, over the app's own (``topic_partitions=2``,
    ``processing_guarantee='exactly_once'``...).
    """
    driver = AppDriver(app, datadir, partitions, **settings)
    try:
        yield driver
    finally:
        driver.close()


class AppDriver:
    """One app run in the test's thread, fed and read by the test (see :func:`run`).

    :attr:`now` is the run's clock (seconds since the epoch), the timestamp of
    the records sent without one; it moves only with :meth:`advance`.
    :attr:`errors` holds every :class:`AgentError` of the run, in order;
    :attr:`committed` the offset committed per source partition.
    """

    def __init__(self, app: App, datadir: str | Path | None = None,
                 partitions: Mapping[str, int] | None = None, **settings: Any) -> None:
        if _open:
            raise RuntimeError(f'runner.testing runs one run at a time in a process: the run '
                               f'of app {_open[0].app.name} is still open (close it first)')
        self.app = app
        self.settings = build(app.settings, check_settings(settings, 'runner.testing.run'), {})
        check_timers(app, self.settings)
        self.now = START
        self.errors: list[AgentError] = []
        self.committed: dict[TopicPartition, int] = {}
        #: What falls due as time passes (timers): :meth:`advance` calls each with the
        #: clock before and after, and processes what they send before it returns.
        self.on_advance: list[Callable[[float, float], None]] = []
        self.layout = Layout(app, dict(partitions or {}), self.settings.topic_partitions)
        self._topics = self._decodable_topics()
        self._raised = 0
        self._failure: AgentError | None = None
        self._next_commit = self.now + self.settings.commit_interval
        self._main = greenlet.getcurrent()
        self._temporary = None
        if datadir is None:
            self._temporary = tempfile.TemporaryDirectory(prefix=f'runner-test-{app.name}-')
            datadir = self._temporary.name
        self._state = StateManager(app.tables.values(), Path(datadir), _RecoveredAtOnce) \
            if app.tables else None
        self._broker = Broker(self._partition_count, self._deliver)
        self._producer = TestProducer(
            self._broker, self.settings.max_request_size,
            self.settings.processing_guarantee == 'exactly_once', lambda: self.now)
        self._slot = SlotContext(self.layout, self._producer, self._state)
        self._greenlets = Greenlets()
        routes: dict[str, list[Inbox]] = {}
        self._agents = [self._agent_threads(agent, routes) for agent in app.agents]
        self._dispatcher = Dispatcher(routes)
        self._read = frozenset(routes)        # the topics agents read
        self._tasks = Tasks(self.layout.sources(), self.layout.tables_of)
        self._timers = self._timers_led_here()
        self.on_advance.append(self._run_timers)
        context.install(self._slot)
        _open.append(self)
        try:
            self._assign_every_partition()
            for agent_threads in self._agents:
                agent_threads.start()
            self._process()
        except BaseException:
            self.close()
            raise

    # -- what a test does ----------------------------------------------------

    def send(self, topic: Topic | Agent | str, key: Any = None, value: Any = None,
             partition: int | None = None, timestamp: float | None = None,
             headers: Mapping[str, Any] | list | None = None) -> Event:
        """Send one record to ``topic`` and process it, and all it causes, before returning.

        Key and value are encoded by the topic's serializers (``bytes`` are sent as
        they are, to send what they cannot decode); the record goes to ``partition``,
        else where the topic's partitioner puts its key (the partitions in turn for
        no key).  ``timestamp`` is in seconds (default: :attr:`now`).  Returns the
        record as written, with its partition and offset.  Raises
        :class:`AgentError` if an agent's policy stops at a record meanwhile, and
        ``ValueError`` for a topic no agent reads (a typo would otherwise test nothing).
        """
        self._check_running()
        declared = self._topic(topic)
        if declared.name not in self._read:
            raise ValueError(f'no agent of app {self.app.name} reads topic {declared.name!r} '
                             f'(agents read: {", ".join(sorted(self._read))})')
        raw_key = key if isinstance(key, bytes) else declared.key_codec.dumps(key)
        raw_value = value if isinstance(value, bytes) else declared.value_codec.dumps(value)
        headers = header_list(headers)
        check_record(raw_key, raw_value, headers)
        if partition is None:
            partition = self._broker.unkeyed(declared.name) if raw_key is None else placed(
                declared, raw_key, None, self._producer)
        record = self._broker.append(declared.name, partition, raw_key, raw_value, headers,
                                     _milliseconds(self.now if timestamp is None else timestamp),
                                     produced=False)
        return self._decoded(record)

    def outputs(self, topic: Topic | Agent | str) -> list[Event]:
        """What the app sent to ``topic`` (agents' sinks and sends, dead letters, changelog
        records), in the order it was sent, decoded as the topic decodes it.  A topic the
        app neither declares nor sent to raises ``ValueError`` (a typo is not ``[]``)."""
        name = self._topic(topic).name
        if name not in self._topics and name not in self._broker.produced:
            known = sorted({*self._topics, *self._broker.produced})
            raise ValueError(f'app {self.app.name} has no topic {name!r} and sent nothing to it '
                             f'(its topics: {", ".join(known)})')
        return [self._decoded(record) for record in self._broker.produced.get(name, ())]

    def table(self, name: str) -> Table:
        """The app's table ``name``, read as the slot's web server reads it: ``t.table(
        'counts')[key]`` (its default for a missing key), ``.get``, ``in``, ``.items()``;
        windowed: ``.windows(key)`` and ``.value_at(key, timestamp)``."""
        if name not in self.app.tables:
            raise KeyError(f'app {self.app.name} has no table {name!r} (its tables: '
                           f'{", ".join(sorted(self.app.tables)) or "none"})')
        return self.app.tables[name]

    def advance(self, seconds: float) -> None:
        """Move :attr:`now` on by ``seconds``: what :attr:`on_advance` runs is processed,
        then a checkpoint is taken if ``commit_interval`` has passed since the last."""
        before, self.now = self.now, self.now + seconds
        for due in list(self.on_advance):
            due(before, self.now)
        self._process()
        if self.now >= self._next_commit:
            self.commit()

    def commit(self) -> None:
        """Take a checkpoint now, as a slot does every ``commit_interval``: offsets, the
        tables' changelog records (see :meth:`outputs`), their stores, and window expiry
        (of windows past ``expires`` before the newest event of their partition)."""
        self._next_commit = self.now + self.settings.commit_interval
        checkpoint = Checkpoint(self._next_commit)
        checkpoint.request(self._tasks.active())
        checkpoint.close()              # a task whose agent crashed inside a record is left
        if checkpoint.empty:
            return
        for step, offsets in checkpoint.steps(self._producer):
            if step == 'commit':
                self.committed.update(offsets)
                checkpoint.committed()

    def skip(self, topic: str, partition: int, offset: int) -> None:
        """Go on after the record a partition stopped at (``runner skip``): it is
        dead-lettered first, then the partition is processed on."""
        if not self._dispatcher.skip(TopicPartition(topic, partition), offset):
            raise ValueError(f'{topic}[{partition}] is not stopped at offset {offset}')
        self._process()

    def stopped(self) -> dict[TopicPartition, int]:
        """The partitions stopped at a record, and the offset of that record."""
        return {tp: stop.record.offset for tp, stop in self._dispatcher.stopped().items()}

    def counts(self) -> dict[str, dict[str, int]]:
        """Per agent, its records failed, retried, dead-lettered and skipped (as ``GET /``
        shows them)."""
        return {threads.agent.name: dict(threads.policy.counts) for threads in self._agents}

    def close(self) -> None:
        """Stop the agents and close the tables (:func:`run` does it at the end)."""
        for agent_threads in self._agents:
            agent_threads.stop(drain=False)
            agent_threads.join(0.0)
        if self._state is not None:
            for key in list(self._slot.active):
                self._state.stores.release(key)
            self._slot.active.clear()
        context.uninstall(self._slot)
        if self in _open:
            _open.remove(self)
        if self._temporary is not None:
            self._temporary.cleanup()

    # -- the run's slot ------------------------------------------------------

    def _agent_threads(self, agent: Agent, routes: dict[str, list[Inbox]]) -> AgentThreads:
        inbox = SteppedInbox(self._greenlets, self._stopped_at)
        for topic in (agent.topic, agent.repartition):
            if topic is not None:
                routes.setdefault(topic.name, []).append(inbox)
        agent_threads = AgentThreads(
            agent, inbox, self._slot, lambda reason, code=EX_SOFTWARE: self._crashed(
                agent_threads, reason), threads=self._greenlets)
        return agent_threads

    def _assign_every_partition(self) -> None:
        """Every partition of every topic the agents read, in tasks of this run (as the
        consumer loop creates them on assignment), their tables recovered at once."""
        tps = [TopicPartition(topic, number) for topic, count in self.layout.sources().items()
               for number in range(count)]
        tasks = self._tasks.assign(tps)
        for tp in sorted(tps):
            task = self._tasks.task_of(tp)
            task.queues += self._dispatcher.assign(tp, task, held=not task.ready)
        if self._state is not None:
            self._state.recover([key for task in tasks for key in task.keys])
            by_key = {key: task for task in tasks for key in task.keys}
            for key, table_partition in self._state.take_recovered():
                by_key[key].partitions[table_partition.table.name] = table_partition
                self._slot.active[key] = table_partition
            self._dispatcher.unhold([queue for task in tasks for queue in task.queues])

    def _timers_led_here(self) -> Timers:
        """The app's timers on the run's clock; the run owns every partition, so it leads."""
        duty = Duty(leader_topic(self.app))
        if duty.partition is not None:
            duty.assigned({duty.partition}, generation=0)
        return Timers(self.app.timers, self._slot, self._tasks, duty, self._timer_failed,
                      ManualClock(self.now))

    def _run_timers(self, _before: float, now: float) -> None:
        """The ticks due up to ``now``, each in a greenlet of its own, as on a thread of its
        own: what it sends is processed once it is done (by :meth:`advance`)."""
        if self._failure is None:
            self._timers.run_until(now, lambda tick: greenlet.greenlet(tick).switch())

    def _timer_failed(self, reason: str, code: int = EX_SOFTWARE) -> None:
        """A timer stopped the slot (``on_error='stop'``, or a mistake in the app)."""
        self._failure = AgentError(reason, None, None, sys.exception())
        self.errors.append(self._failure)
        for agent_threads in self._agents:
            agent_threads.stop(drain=False)

    def _partition_count(self, topic: str) -> int:
        return self.layout.topics.get(topic) or self.settings.topic_partitions

    def _deliver(self, tp: TopicPartition, records: list) -> None:
        """Hand records to their agents; one sent by the test itself (``t.send``,
        ``app.send``) is processed before the send returns."""
        if tp.topic in self._read:
            self._dispatcher.dispatch(tp, records)
            if greenlet.getcurrent() is self._main:
                self._process()

    def _process(self) -> None:
        """Let the agents work until none has a record to take; raise the first error."""
        self._greenlets.run_until_idle()
        if len(self.errors) > self._raised:
            error, self._raised = self.errors[self._raised], len(self.errors)
            raise error from error.error

    def _check_running(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f'the run has stopped, as a slot would: {self._failure}')

    def _stopped_at(self, stopped: Stopped, error: BaseException | None) -> None:
        record = stopped.record
        self.errors.append(AgentError(
            f'agent {stopped.agent} raised on {where(record)} (key {stopped.describe()["key"]!r}'
            f'): {stopped.error}; its partition is stopped at the record (skip it with '
            f't.skip({record.topic!r}, {record.partition}, {record.offset}))',
            stopped.agent, self._decoded(record), error))

    def _crashed(self, agent_threads: AgentThreads, reason: str) -> None:
        """The agent failed as a slot stops for (the caller is inside its ``except``, if
        it raised): every agent stops taking records, as in a slot's cold stop (one of
        them could otherwise wait for the guard the failed one keeps)."""
        error = sys.exception()
        held = agent_threads.holding()
        if error is None:
            text = reason
        elif reason == str(error):          # a RunnerError: its reason is its text
            text = f'agent {agent_threads.agent.name} stopped: {reason}'
        else:
            text = f'{reason}: {error_text(error)}'
        self._failure = AgentError(text, agent_threads.agent.name,
                                   self._decoded(held[0]) if held else None, error)
        self.errors.append(self._failure)
        for other in self._agents:
            other.stop(drain=False)

    # -- records -------------------------------------------------------------

    def _topic(self, topic: Topic | Agent | str) -> Topic:
        if isinstance(topic, Agent):
            return topic.topic
        if isinstance(topic, Topic):
            return topic
        return self._topics.get(topic) or Topic(self.app, topic)   # as app.send makes it

    def _decodable_topics(self) -> dict[str, Topic]:
        """Every topic of the app by name, each decoding as its records are encoded:
        declared topics, repartition topics and changelogs (keys as stored)."""
        topics = dict(self.app.topics)
        for agent in self.app.agents:
            if agent.repartition is not None:
                topics[agent.repartition.name] = agent.repartition
        for table in self.app.tables.values():
            topics[table.changelog.name] = Topic(
                self.app, table.changelog.name, key_serializer=table.stored_key_codec,
                value_serializer=table.value_codec)
        return topics

    def _decoded(self, record: Any) -> Event:
        """The record as its topic decodes it (as bytes, where it cannot be decoded)."""
        try:
            return decoded_events(self._topic(record.topic))(record)
        except ValueError:
            return Event(record.key, record.value, list(record.headers), record.topic,
                         record.partition, record.offset, record.timestamp)


#: A timestamp in seconds beyond this (the year 5138) is taken for one in milliseconds.
LATEST_SECONDS = 1e11


def _milliseconds(timestamp: float) -> int:
    """A record's timestamp given in seconds, in Kafka's milliseconds."""
    if timestamp > LATEST_SECONDS:
        raise ValueError(f'a timestamp is in seconds since the epoch (as t.now): {timestamp!r} '
                         f'looks like milliseconds')
    return round(timestamp * 1000)


class _RecoveredAtOnce:
    """The changelog reader, replaced: a run's tables start from their stores (empty in a
    new data directory), so a partition is handed over as soon as its store is open."""

    def __init__(self, stores: Stores,
                 on_recovered: Callable[[Key, int, PartitionStore, str], None]) -> None:
        self._stores = stores
        self._on_recovered = on_recovered

    def recover(self, keys: list[Key], request: int) -> None:
        for key in keys:
            self._on_recovered(key, request, self._stores.open(key), TOPIC_ID)

