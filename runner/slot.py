"""One worker process (a slot): consumer thread, agent threads and web server.

The slot's main thread starts everything, then only waits for events (signals
and failure reports) and shuts down in order.  Everything holding a thread, a
socket or a lock is created here, never inherited across ``fork()``.
"""

import logging
import signal
import time
from collections.abc import Mapping

from kafka.errors import KafkaError

from . import admin
from .agents import AgentThreads
from .app import App
from .config import Settings
from .consumer import ConsumerLoop
from .datadir import DirLock, slot_dir
from .errors import EX_OK, EX_SOFTWARE, BrokerUnavailable
from .producer import Producer
from .queues import Dispatcher, Inbox
from .signals import SignalQueue, dump_stacks
from .status import SlotStatus
from .web import WebServer, status_routes

log = logging.getLogger(__name__)

#: Signals of a slot run on its own (in the foreground); a second INT turns warm into cold.
FOREGROUND_SIGNALS = {signal.SIGTERM: 'warm', signal.SIGINT: 'interrupt',
                      signal.SIGQUIT: 'cold', signal.SIGUSR1: 'dump'}
#: A cold stop and the last steps of any stop get this long.
COLD_GRACE = 1.0


class Failure(str):
    """An event: a thread of the slot failed and the slot must stop with EX_SOFTWARE."""


class Slot:
    """Runs an App's agents in this process until a signal or a failure stops it."""

    def __init__(self, app: App, settings: Settings, index: int = 0,
                 signals: Mapping[signal.Signals, str] = FOREGROUND_SIGNALS) -> None:
        self.app = app
        self.settings = settings
        self.index = index
        self.status = SlotStatus(app.name, index)
        self.datadir = slot_dir(settings.datadir or f'{app.name}-data', index)
        self._signals = signals
        self._events = SignalQueue()
        self._agents: list[AgentThreads] = []
        self._consumer: ConsumerLoop | None = None
        self._producer: Producer | None = None

    def run(self) -> int:
        """Work until stopped; returns the exit code.  Start-up errors raise RunnerError."""
        self._events.install(self._signals)
        lock = DirLock(self.datadir)
        lock.acquire()
        try:
            web = WebServer(self.settings.web_host, self.settings.web_port,
                            status_routes(self.status))
            web.start()
            try:
                return self._run_until_stopped()
            finally:
                web.stop()
        finally:
            lock.release()

    def _run_until_stopped(self) -> int:
        try:
            self._prepare_topics()
            self._start_threads()
            self.status.phase = 'running'
            log.info('slot %d of %s running with data directory %s', self.index,
                     self.app.name, self.datadir)
            mode, code = self._wait_for_stop()
            self._stop(mode)
        finally:
            if self._producer is not None:
                self._producer.close(COLD_GRACE)
        return code

    def _prepare_topics(self) -> None:
        settings = self.settings
        client = admin.connect(settings.bootstrap_servers(), settings.broker_timeout,
                               self._client_id())
        try:
            admin.ensure_topics(client, self.app.topics.values(), settings.topic_partitions,
                                settings.replication_factor)
        finally:
            client.close()

    def _start_threads(self) -> None:
        settings = self.settings
        try:
            self._producer = Producer(settings.bootstrap_servers(), self._client_id(),
                                      settings.broker_timeout)
        except KafkaError as exc:
            raise BrokerUnavailable(f'cannot start the producer: {exc}') from None
        self.app.use_producer(self._producer)
        routes: dict[str, list[Inbox]] = {}
        for agent in self.app.agents:
            inbox = Inbox()
            routes.setdefault(agent.topic.name, []).append(inbox)
            self._agents.append(AgentThreads(agent, inbox, self._producer, self._fail))
        self._consumer = ConsumerLoop(settings, self.app.name, self._client_id(),
                                      Dispatcher(routes), self._producer, self.status, self._fail)
        self.status.offsets = self._consumer.offsets
        self.status.threads = [self._consumer.thread]
        for agent_threads in self._agents:
            agent_threads.start()
        self._consumer.start()

    def _client_id(self) -> str:
        return f'{self.app.name}-slot{self.index}'

    def _fail(self, reason: str) -> None:
        self._events.put(Failure(reason))

    def _wait_for_stop(self) -> tuple[str, int]:
        """Handle events until one asks to stop; returns the stop mode and the exit code."""
        while True:
            event = self._events.get(timeout=1.0)
            if event is None:
                if not self._consumer.thread.is_alive():
                    return 'cold', self._failed('the consumer thread stopped')
            elif event == 'dump':
                dump_stacks(f'slot {self.index}')
            elif isinstance(event, Failure):
                return 'cold', self._failed(event)
            else:
                mode = 'cold' if event == 'cold' else 'warm'
                log.info('%s shutdown requested', mode)
                return mode, EX_OK

    def _failed(self, reason: str) -> int:
        self.status.failure = reason
        log.error('slot %d is stopping: %s', self.index, reason)
        return EX_SOFTWARE

    def _stop(self, mode: str) -> None:
        """Stop fetching, let agents finish (warm) or abandon (cold), commit, close."""
        self.status.phase = 'stopping'
        drain = mode == 'warm'
        deadline = time.monotonic() + (self.settings.shutdown_timeout if drain else COLD_GRACE)
        self._stop_workers(drain, deadline)
        while self._consumer.thread.is_alive():
            event = self._events.get(timeout=0.05)
            if event == 'dump':
                dump_stacks(f'slot {self.index}')
            elif drain and (event in ('interrupt', 'cold') or isinstance(event, Failure)):
                log.warning('escalating to a cold shutdown')
                drain, deadline = False, time.monotonic() + COLD_GRACE
                self._stop_workers(drain, deadline)
            if time.monotonic() > deadline + COLD_GRACE:
                log.error('the consumer did not stop in time; exiting anyway')
                break
        for agent_threads in self._agents:
            agent_threads.join(COLD_GRACE if drain else 0.0)
        log.info('slot %d stopped', self.index)

    def _stop_workers(self, drain: bool, deadline: float) -> None:
        for agent_threads in self._agents:
            agent_threads.stop(drain)
        self._consumer.stop(drain, deadline)
