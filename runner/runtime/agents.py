"""The running instances of a declared agent inside a slot, one thread each."""

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..app import context
from ..app.agents import Agent
from ..app.topics import Topic
from ..errors import RunnerError
from .context import AgentContext, SlotContext
from .queues import Inbox
from .stream import Stream

log = logging.getLogger(__name__)


class AgentThreads:
    """``agent.concurrency`` threads, each calling ``agent.fn(stream)`` on its own stream."""

    def __init__(self, agent: Agent, inbox: Inbox, slot: SlotContext,
                 on_failure: Callable[..., None]) -> None:
        self.agent = agent
        self.inbox = inbox
        self._slot = slot
        self._on_failure = on_failure
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._run, daemon=True, name=f'agent-{agent.fn.__name__}-{i}')
            for i in range(agent.concurrency)]

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, drain: bool) -> None:
        """Close the stream: with ``drain``, queued records are processed first."""
        self._stopping = True
        self.inbox.close(drain)

    def join(self, timeout: float) -> bool:
        """Wait for the threads; True when all have finished."""
        for thread in self._threads:
            thread.join(timeout)
        return not any(thread.is_alive() for thread in self._threads)

    def _run(self) -> None:
        agent_context = AgentContext(self._slot)
        context.bind(agent_context)
        stream = Stream(self.agent.topic, self.inbox, agent_context)
        try:
            result = self.agent.fn(stream)
            if inspect.isgenerator(result):
                for value in result:
                    self._forward(agent_context, value)
        except Exception as exc:  # noqa: BLE001 - whatever user code raises stops the slot
            self._report_crash(agent_context, exc)
            return
        if not self._stopping:
            self._on_failure(f'agent {self.agent.name} returned while its stream was open')

    def _forward(self, agent_context: AgentContext, value: Any) -> None:
        if agent_context.dropping:
            return
        record = agent_context.record
        key = record.key if record is not None else None
        for sink in self.agent.sinks:
            if isinstance(sink, (Topic, Agent)):
                topic = sink if isinstance(sink, Topic) else sink.topic
                agent_context.send(topic, key, topic.value_codec.dumps(value))
            else:
                sink(value)

    def _report_crash(self, agent_context: AgentContext, exc: Exception) -> None:
        """Log where the agent failed and stop the slot; the record is not committed.

        The partition stays leased (and its task's guard held), so neither
        another thread nor a checkpoint gets past the failed record.  A
        RunnerError (a mistake in how the app is set up, such as a table that
        is not co-partitioned) stops the slot with its own exit code and no
        traceback.
        """
        record, queue = agent_context.record, agent_context.queue
        if queue is not None:
            self.inbox.fail(queue)
        where = (f'{record.topic}[{record.partition}]@{record.offset}'
                 if record is not None else 'no record')
        if isinstance(exc, RunnerError):
            log.error('agent %s stopped on %s: %s', self.agent.name, where, exc)
            self._on_failure(str(exc), exc.exit_code)
            return
        log.exception('agent %s raised while processing %s; stopping the slot so the '
                      'record is retried', self.agent.name, where)
        self._on_failure(f'agent {self.agent.name} raised on {where}')
