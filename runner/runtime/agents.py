"""The running instances of a declared agent inside a slot, one thread each."""

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition

from ..app import context
from ..app.agents import Agent
from ..app.topics import Topic
from ..errors import OutputRefused, RunnerError
from .context import AgentContext, SlotContext
from .policy import ErrorPolicy, error_text, where
from .queues import Inbox, Stopped
from .stream import Stream
from .throughput import summed

log = logging.getLogger(__name__)


class AgentThreads:
    """``agent.concurrency`` threads, each calling ``agent.fn(stream)`` on its own stream.

    ``threads`` makes them: anything with the ``Thread`` and ``Event`` of the
    :mod:`threading` module (the default); :mod:`runner.testing` gives ones that run each
    instance as a greenlet of the test's thread.
    """

    def __init__(self, agent: Agent, inbox: Inbox, slot: SlotContext,
                 on_failure: Callable[..., None],
                 timing: Callable[[float, int], None] | None = None,
                 threads: Any = threading) -> None:
        self.agent = agent
        self.inbox = inbox
        self._on_failure = on_failure
        self._stopping = False
        self._stopped = threads.Event()
        self.policy = ErrorPolicy(agent)
        contexts = [AgentContext(slot) for _ in range(agent.concurrency)]
        self._streams = [Stream(agent.topic, inbox, agent_context, self.policy,
                                agent.repartition, timing) for agent_context in contexts]
        self._threads = [
            threads.Thread(target=self._run, args=(agent_context, stream), daemon=True,
                           name=f'agent-{agent.fn.__name__}-{i}')
            for i, (agent_context, stream) in enumerate(zip(contexts, self._streams))]

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    def processed(self) -> dict[TopicPartition, int]:
        """Records its threads have processed, per partition (read at a metrics scrape)."""
        return summed(dict(stream.processed) for stream in self._streams)

    def holding(self) -> list[Any]:
        """The records its threads are inside of (a thread that crashed keeps its own)."""
        return [stream.holding for stream in self._streams if stream.holding is not None]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, drain: bool) -> None:
        """Close the stream: with ``drain``, queued records are processed first."""
        self._stopping = True
        self._stopped.set()
        self.inbox.close(drain)

    def join(self, timeout: float) -> bool:
        """Wait for the threads; True when all have finished."""
        for thread in self._threads:
            thread.join(timeout)
        return not any(thread.is_alive() for thread in self._threads)

    def stuck(self, since: float) -> list[tuple[threading.Thread, str]]:
        """Its threads that have made no progress since ``since`` (monotonic) while records
        wait for them (see :meth:`runner.runtime.stream.Stream.stuck`), each with where it
        is: inside which record, or outside its stream."""
        return [(thread, 'outside its stream' if stream.holding is None
                 else f'inside record {where(stream.holding)}')
                for thread, stream in zip(self._threads, self._streams)
                if thread.is_alive() and stream.stuck(since)]

    def _run(self, agent_context: AgentContext, stream: Stream) -> None:
        context.bind(agent_context)
        retry = Retry(self.agent)
        while True:
            try:
                self._call(agent_context, stream)
            except Exception as exc:  # noqa: BLE001 - whatever user code raises meets the policy
                try:
                    if self._deal_with(agent_context, stream, retry, exc):
                        continue
                except Exception as failure:  # noqa: BLE001 - such as a dead letter not sent
                    exc = failure
                self._report_crash(agent_context, stream, exc)
                return
            break
        if not self._stopping:
            self._on_failure(f'agent {self.agent.name} returned while its stream was open')

    def _call(self, agent_context: AgentContext, stream: Stream) -> None:
        result = self.agent.fn(stream)
        if inspect.isgenerator(result):
            for value in result:
                self._forward(agent_context, value)

    def _deal_with(self, agent_context: AgentContext, stream: Stream, retry: 'Retry',
                   exc: Exception) -> bool:
        """Apply the agent's error policy to the record it raised on; True to call the agent
        again (it goes on with the same record, the one after, or another partition's),
        False to stop the slot."""
        record = stream.unfinished
        if record is None or isinstance(exc, RunnerError):
            return False
        agent_context.undo()
        self.policy.raised()
        if isinstance(exc, OutputRefused):
            self.policy.set_aside(agent_context, record, exc, 'refused')
            return True
        if retry.again(record):
            self.policy.retried(record, exc, retry.attempt)
            if self._stopped.wait(retry.backoff()):
                return False
            stream.retry()
            return True
        if self.agent.on_error == 'stop':
            self._stop_partition(stream, record, exc)
            return True
        self.policy.set_aside(agent_context, record, exc, 'raised')
        return True

    def _stop_partition(self, stream: Stream, record: Any, exc: Exception) -> None:
        """``on_error='stop'``: the record's partition stops at it, loudly; the slot goes on."""
        stopped = Stopped(self.agent.name, record, error_text(exc))
        log.error('agent %s raised on %s (key %r): partition %s:%d stopped at offset %d; the '
                  'slot goes on with its other partitions. Deploy a fix (restart) or skip the '
                  'record to the dead-letter topic: runner skip %s %d %d', self.agent.name,
                  where(record), stopped.describe()['key'], record.topic, record.partition,
                  record.offset, record.topic, record.partition, record.offset, exc_info=exc)
        stream.stop_partition(stopped)

    def _forward(self, agent_context: AgentContext, value: Any) -> None:
        """Send what the agent yielded to its sinks, under the key of the record it came
        from, encoded as each sink's topic encodes keys."""
        if agent_context.dropping:
            return
        record = agent_context.record
        key = record.key if record is not None else None
        for sink in self.agent.sinks:
            if isinstance(sink, (Topic, Agent)):
                topic = sink if isinstance(sink, Topic) else sink.topic
                agent_context.send(topic, self._sink_key(topic, key),
                                   topic.value_codec.dumps(value))
            else:
                sink(value)

    def _sink_key(self, topic: Topic, key: bytes | None) -> bytes | None:
        """The source record's key as ``topic`` encodes keys (the same bytes when both
        topics encode keys alike)."""
        source = self.agent.topic.key_codec
        if key is None or topic.key_codec is source:
            return key
        return topic.key_codec.dumps(source.loads(key))

    def _report_crash(self, agent_context: AgentContext, stream: Stream,
                      exc: Exception) -> None:
        """Log where the agent failed and stop the slot; the record is not committed.

        The partition stays leased (and its task's guard held), so neither
        another thread nor a checkpoint gets past the failed record.  A
        RunnerError (a mistake in how the app is set up, such as a table that
        is not co-partitioned) stops the slot with its own exit code and no
        traceback.
        """
        record = agent_context.record
        stream.give_up()
        place = 'no record' if record is None else where(record)
        if isinstance(exc, RunnerError):
            log.error('agent %s stopped on %s: %s', self.agent.name, place, exc)
            self._on_failure(str(exc), exc.exit_code)
            return
        log.error('agent %s raised while processing %s; stopping the slot so the record is '
                  'retried', self.agent.name, place, exc_info=exc)
        self._on_failure(f'agent {self.agent.name} raised on {place}')


class Retry:
    """How often one thread has tried the record it keeps failing on, and how long to wait."""

    #: The longest wait between two tries, in seconds.
    MAX_BACKOFF = 10.0

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._record: tuple | None = None
        self.attempt = 0

    def again(self, record: Any) -> bool:
        """Count a failure on ``record``; True while it has tries left."""
        failed = (record.topic, record.partition, record.offset)
        self.attempt = self.attempt + 1 if failed == self._record else 1
        self._record = failed
        return self.attempt <= self._agent.retries

    def backoff(self) -> float:
        return min(self._agent.retry_backoff * 2 ** (self.attempt - 1), self.MAX_BACKOFF)
