"""Agents: functions applied to a stream, each run on its own threads in a slot."""

import inspect
import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .errors import RunnerError
from .queues import Inbox
from .stream import Stream, current
from .topics import Topic

if TYPE_CHECKING:
    from .app import App
    from .producer import Producer

log = logging.getLogger(__name__)


class Agent:
    """A declared agent: ``fn(stream)`` over one topic, on ``concurrency`` threads.

    If ``fn`` is a generator function, every value it yields is sent to each
    sink with the key of the input record being processed.
    """

    def __init__(self, app: 'App', fn: Callable, topic: Topic, sinks: Iterable[Any] = (),
                 concurrency: int = 1, name: str | None = None) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError('concurrency must be a positive integer')
        self.app = app
        self.fn = fn
        self.topic = topic
        self.sinks = list(sinks)
        self.concurrency = concurrency
        self.name = name or f'{fn.__module__}.{fn.__qualname__}'

    def send(self, key: Any = None, value: Any = None, headers: list | None = None):
        """Send a record to the agent's topic."""
        return self.topic.send(key=key, value=value, headers=headers)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f'<Agent {self.name} topic={self.topic.name} concurrency={self.concurrency}>'


class AgentThreads:
    """The running instances of one agent inside a slot, one thread each."""

    def __init__(self, agent: Agent, inbox: Inbox, producer: 'Producer',
                 on_failure: Callable[..., None]) -> None:
        self.agent = agent
        self.inbox = inbox
        self._producer = producer
        self._on_failure = on_failure
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True,
                             name=f'agent-{agent.fn.__name__}-{i}')
            for i in range(agent.concurrency)]

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

    def _run(self, index: int) -> None:
        stream = Stream(self.agent.topic, self.inbox)
        try:
            result = self.agent.fn(stream)
            if inspect.isgenerator(result):
                for value in result:
                    self._forward(value)
        except Exception as exc:  # noqa: BLE001 - whatever user code raises stops the slot
            self._report_crash(exc)
            return
        if not self._stopping:
            self._on_failure(f'agent {self.agent.name} returned while its stream was open')

    def _forward(self, value: Any) -> None:
        record = getattr(current, 'record', None)
        key = record.key if record is not None else None
        for sink in self.agent.sinks:
            if isinstance(sink, Topic):
                self._producer.send(sink.name, key, sink.value_codec.dumps(value))
            elif isinstance(sink, Agent):
                self._producer.send(sink.topic.name, key, sink.topic.value_codec.dumps(value))
            else:
                sink(value)

    def _report_crash(self, exc: Exception) -> None:
        """Log where the agent failed and stop the slot; the record is not committed.

        A RunnerError (a mistake in how the app is set up, such as a table that is
        not co-partitioned) stops the slot with its own exit code and no traceback.
        """
        record = getattr(current, 'record', None)
        queue = getattr(current, 'partition', None)
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
