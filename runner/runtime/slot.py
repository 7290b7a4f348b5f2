"""One worker process (a slot): consumer thread, agent threads and web server.

The slot's main thread starts everything, then only waits for events (signals
and failure reports) and shuts down in order.  Everything holding a thread, a
socket or a lock is created here, never inherited across ``fork()``, but for the
web server's listening socket, which the main process passes (see
:mod:`runner.main.listeners`).
"""

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from kafka import TopicPartition
from kafka.coordinator.assignors.abstract import RebalanceProtocol
from kafka.errors import KafkaError

from .. import logs, platform
from ..app import context
from ..app.app import App
from ..app.layout import Layout
from ..app.loader import load_app
from ..app.timers import leader_topic
from ..config import Options, Settings
from ..errors import EX_OK, EX_SOFTWARE, BrokerUnavailable, RunnerError
from ..kafka import admin, fixes
from ..kafka.assignor import RunnerAssignor
from ..kafka.producer import Producer
from ..reports import Reporter
from ..state.globals import GlobalReader
from ..state.manager import StateManager
from ..state.recovery import ChangelogReader
from . import handover
from .agents import AgentThreads
from .consumer import ConsumerLoop
from .context import SlotContext
from .globals import GlobalQueries
from .metrics import SlotCollector, SlotMetrics
from .page import StatusPage
from .queries import TableQueries
from .queues import Dispatcher, Inbox
from .status import SlotStatus
from .tasks import Tasks
from .throughput import Throughput, summed
from .timers import Duty, Timers, check_timers
from .web import Response, WebServer, advertised, metrics_route, skip_route, status_routes

log = logging.getLogger(__name__)

#: Signals a slot handles; the main process owns INT (slots ignore it) and relays the rest.
#: TERM stops a slot for good (it leaves its group); USR2 stops it to be replaced by a
#: slot with the same data directory (it stays in the group, which so does not rebalance).
SLOT_SIGNALS = {signal.SIGTERM: 'warm', signal.SIGQUIT: 'cold', signal.SIGUSR1: 'dump',
                signal.SIGUSR2: 'handover'}
#: A cold stop and the last steps of any stop get this long.
COLD_GRACE = 1.0
#: Seconds between reports to the main process.
REPORT_INTERVAL = 0.25
#: How often a successor tries the data directory of the slot it replaces.
TAKEOVER_POLL = 0.02
#: Seconds between looks for local table state that is no longer used.
CLEANUP_EVERY = 60.0


class Failure(str):
    """An event: a thread of the slot failed; the slot stops and exits with ``code``."""

    def __new__(cls, reason: str, code: int = EX_SOFTWARE) -> Self:
        failure = super().__new__(cls, reason)
        failure.code = code
        return failure


class Slot:
    """Runs an App's agents in this process until a signal or a failure stops it."""

    def __init__(self, app: App, settings: Settings, index: int = 0,
                 report: Callable[[dict[str, Any]], None] | None = None,
                 successor: bool = False, listener: socket.socket | None = None) -> None:
        self.app = app
        self.successor = successor
        self._listener = listener
        self.settings = settings
        self.index = index
        self.status = SlotStatus(app.name, index, settings.stall_timeout)
        self.datadir = slot_dir(settings.datadir or f'{app.name}-data', index)
        self._report_to = report
        self._events = platform.SignalQueue()
        self._agents: list[AgentThreads] = []
        self._consumer: ConsumerLoop | None = None
        self._timers: Timers | None = None
        self._web: WebServer | None = None
        self._web_address: str | None = None
        self._handing_over = False      # it stops for its successor (USR2)
        self._queries: TableQueries | None = None
        self.metrics = SlotMetrics()
        self._throughput = Throughput(lambda: summed(threads.processed()
                                                     for threads in self._agents))
        self.status.rates = self._throughput.rates
        self._progress: dict[str, Any] = {}      # reported to the main process (see _report)
        self.metrics.registry.register(SlotCollector(
            self.status, lambda: self._agents, lambda: self._consumer, lambda: self._state,
            global_tables=lambda: self._global_tables))
        self._layout: Layout | None = None
        self._producer: Producer | None = None
        self._plain_producer: Producer | None = None    # exactly-once: for sends outside agents
        self._state: StateManager | None = None
        self._global_tables: GlobalReader | None = None
        self._global_queries: GlobalQueries | None = None
        #: When (monotonic) this slot last saw Kafka out of its reach.
        self._kafka_lost_seen = -float('inf')

    def run(self) -> int:
        """Work until stopped; returns the exit code.  Start-up errors raise RunnerError.

        A successor prepares its topics while the slot it replaces still works, then
        waits for that slot's data directory (and so for it to have stopped).
        """
        self._events.install(SLOT_SIGNALS)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SLOT_SIGNALS)
        fixes.install()
        check_timers(self.app, self.settings)
        lock = platform.DirLock(self.datadir)
        if self.successor:
            self._layout = self._prepare_topics()
            self.status.phase = 'prepared'
            if not self._take_over(lock):
                return EX_OK
        else:
            lock.acquire()
        try:
            web = self._web = self._open_web()
            owners = handover.take_owners(self.datadir)
            if self.successor:
                self.status.owners = owners
            else:
                self._start_web()
            self._report()
            try:
                return self._run_until_stopped()
            finally:
                web.stop(finish=self._handing_over)
                if self._handing_over:
                    handover.leave_owners(self.datadir, self.status.owners)
        finally:
            lock.release()

    def _open_web(self) -> WebServer:
        """The web server, on the socket the main process passed (or bound now), not
        serving yet."""
        settings = self.settings
        web = WebServer(settings.web_host, settings.web_port, settings.web_token,
                        self._listener)
        if not (web.loopback or settings.web_token):
            log.warning('the web server listens beyond loopback (%s) without a web_token: '
                        'whoever reaches it reads the state and tables of this slot',
                        settings.web_host)
        self._web_address = advertised(web.address, settings.web_advertise,
                                       settings.bootstrap_servers())
        log.info('other members reach this slot at http://%s/', self._web_address)
        self.status.web = self._web_address
        self._queries = TableQueries(self.app.tables, self.status, self._web_address,
                                     settings.web_token)
        self.status.tables = self._queries.summaries
        self._global_queries = GlobalQueries(self.app.global_tables, self.status,
                                             self._web_address)
        self.status.global_tables = self._global_queries.summaries
        return web

    def _start_web(self) -> None:
        self._web.start([*self._global_queries.routes(), *self._queries.routes(),
                         *status_routes(self.status, StatusPage()),
                         metrics_route(self.metrics.scrape), skip_route(self._skip)])

    def _take_over(self, lock: platform.DirLock) -> bool:
        """Wait for the data directory of the slot this one replaces, reporting meanwhile;
        False if asked to stop first.  Events are looked at before each try of the lock,
        so a successor told to stop (dismissed) never takes over once it has seen that."""
        log.info('slot %d prepared; waiting for the slot it replaces to hand over', self.index)
        next_report = 0.0
        while True:
            if time.monotonic() >= next_report:
                self._report()
                next_report = time.monotonic() + REPORT_INTERVAL
            if self._events.get(timeout=TAKEOVER_POLL) in ('warm', 'cold', 'handover'):
                log.info('stopped before taking over')
                return False
            if lock.acquire(raise_if_held=False):
                return True

    def _run_until_stopped(self) -> int:
        try:
            layout = self._layout or self._prepare_topics()
            stopped = self._load_global_tables(layout)
            if stopped is not None:
                return stopped
            self._start_threads(layout)
            if self.successor:      # connections waited in the backlog meanwhile
                self._start_web()
            self.status.phase = 'running'
            log.info('slot %d of %s running with data directory %s', self.index,
                     self.app.name, self.datadir)
            mode, code, leave = self._wait_for_stop()
            self._stop(mode, leave)
        finally:
            self._close()
        return code

    def _prepare_topics(self) -> Layout:
        """Partition counts of every topic and table; missing topics (changelogs too) created."""
        settings = self.settings
        declared = [*self.app.topics.values(), *(t.changelog for t in self.app.tables.values()),
                    *(t.changelog for t in self.app.global_tables.values()),
                    *(a.repartition for a in self.app.agents if a.repartition is not None)]
        client = admin.connect(settings.kafka_client(), settings.broker_timeout,
                               self._client_id())
        try:
            existing = admin.partition_counts(client, [topic.name for topic in declared])
            layout = Layout(self.app, existing, settings.topic_partitions)
            admin.create_missing(client, {topic.name: (layout.topics[topic.name], topic.config)
                                          for topic in declared},
                                 existing, settings.replication_factor)
        finally:
            client.close()
        return layout

    def _load_global_tables(self, layout: Layout) -> int | None:
        """Start following the global tables and wait until they have read their changelogs
        to the end as of now, reporting meanwhile; agents start only then (so a lookup never
        misses a key that was written before the slot started).  None once loaded, else the
        exit code of a stop asked for (or a failure) meanwhile."""
        if not self.app.global_tables:
            return None
        reader = self._global_tables = GlobalReader(
            self.settings, self._client_id(), self.app.global_tables.values(), self.datadir,
            layout.topics, self._fail)
        self.status.global_loading = reader.loading
        self.status.threads.append(reader.thread)
        self._global_queries.open(reader)
        reader.start()
        while not reader.loaded.is_set():
            self._report()
            event = self._events.get(timeout=REPORT_INTERVAL)
            if event == 'dump':
                platform.dump_stacks(f'slot {self.index}')
            elif isinstance(event, Failure):
                return self._failed(event, event.code)
            elif event is not None:
                log.info('%s shutdown requested while loading global tables', event)
                self._handing_over = event == 'handover'
                return EX_OK
        return None

    def _start_threads(self, layout: Layout) -> None:
        settings = self.settings
        identity = f'{self.app.name}-{platform.stable_identity(self.datadir)}'
        self._producer = self._start_producer(identity)
        self._state = self._start_state()
        slot_context = SlotContext(layout, self._producer, self._state,
                                   self._plain_producer or self._producer, self._global_tables)
        context.install(slot_context)
        routes: dict[str, list[Inbox]] = {}
        for agent in self.app.agents:
            inbox = Inbox()
            for topic in (agent.topic, agent.repartition):
                if topic is not None:
                    routes.setdefault(topic.name, []).append(inbox)
            self._agents.append(AgentThreads(agent, inbox, slot_context, self._fail,
                                             self.metrics.batch_timing(agent.name)))
        protocol = (RebalanceProtocol.COOPERATIVE if settings.assignor == 'cooperative'
                    else RebalanceProtocol.EAGER)
        assignor = RunnerAssignor(self._web_address, identity, settings.standby_replicas,
                                  protocol, lambda: slot_context.caught_up(settings.acceptable_lag),
                                  counts=layout.sources(), changelogs=layout.changelogs(),
                                  needs=layout.needs())
        tasks, duty = Tasks(assignor.counts, layout.tables_of), Duty(leader_topic(self.app))
        self._consumer = ConsumerLoop(settings, self.app.name, self._client_id(),
                                      Dispatcher(routes), tasks, slot_context, self.status,
                                      self._fail, assignor,
                                      identity if settings.static_membership else None,
                                      self.metrics, duty)
        self._timers = Timers(self.app.timers, slot_context, tasks, duty, self._fail)
        self._show(self._consumer, assignor)
        self.status.threads.append(self._consumer.thread)
        self._queries.open(slot_context)
        for agent_threads in self._agents:
            agent_threads.start()
        self._consumer.start()
        self._timers.start()

    def _show(self, consumer: ConsumerLoop, assignor: RunnerAssignor) -> None:
        """What ``GET /``, the status page and ``runner status`` read of the consumer
        loop, the assignor and the agents."""
        status = self.status
        status.offsets, status.stopped, status.lag = consumer.offsets, consumer.stopped, consumer.lag
        status.agents = lambda: {threads.agent.name: dict(threads.policy.counts)
                                 for threads in self._agents}
        status.errors = lambda: sorted((event for threads in self._agents
                                        for event in list(threads.policy.recent)),
                                       key=lambda event: event['at'])
        status.members = lambda: assignor.members
        status.rebalances = lambda: [change.describe() for change in list(assignor.changes)]
        status.timers = self._timers.describe

    def _start_producer(self, identity: str) -> Producer:
        """The slot's producer; under exactly-once a transactional one whose id is the
        slot's stable identity, so starting it fences every earlier incarnation of the slot
        (their open transaction is aborted, and they can commit nothing more)."""
        settings = self.settings
        exactly_once = settings.processing_guarantee == 'exactly_once'
        try:
            producer = Producer(settings, self._client_id(), identity if exactly_once else None)
            if exactly_once:
                producer.start_transactions()
                self._plain_producer = Producer(settings, f'{self._client_id()}-outside')
        except KafkaError as exc:
            raise BrokerUnavailable(f'cannot start the producer: {exc}') from None
        return producer

    def _start_state(self) -> StateManager | None:
        """Table state and its changelog reader thread (if the app has tables)."""
        if not self.app.tables:
            return None

        def reader(stores: Any, on_recovered: Callable) -> ChangelogReader:
            return ChangelogReader(self.settings, self._client_id(), stores, on_recovered,
                                   self._fail)
        state = StateManager(self.app.tables.values(), self.datadir, reader)
        state.reader.start()
        self.status.recovery = state.describe_recovering
        self.status.threads.append(state.reader.thread)
        return state

    def _skip(self, topic: str, partition: int, offset: int) -> Response:
        """``runner skip`` (on a web server thread): see :meth:`ConsumerLoop.skip`."""
        if self._consumer is None:
            return 503, {'error': 'the slot is not processing yet'}
        return self._consumer.skip(TopicPartition(topic, partition), offset)

    def _client_id(self) -> str:
        return f'{self.app.name}-slot{self.index}'

    def _fail(self, reason: str, code: int = EX_SOFTWARE) -> None:
        self._events.put(Failure(reason, code))

    def _wait_for_stop(self) -> tuple[str, int, bool]:
        """Handle events until one asks to stop; returns the stop mode, the exit code and
        whether to leave the group (a stop for good; not a failure, which a restart under
        the same identity follows, nor a handover)."""
        next_cleanup = time.monotonic() + CLEANUP_EVERY
        cleanup: threading.Thread | None = None
        while True:
            self._report()
            platform.reap_adopted()
            if self._state is not None and time.monotonic() >= next_cleanup and not (
                    cleanup and cleanup.is_alive()):     # deleting files must not delay reports
                cleanup = threading.Thread(target=self._state.remove_unused, name='cleanup',
                                           args=(self.settings.table_cleanup_delay,),
                                           daemon=True)
                cleanup.start()
                next_cleanup = time.monotonic() + CLEANUP_EVERY
            event = self._events.get(timeout=REPORT_INTERVAL)
            if event is None:
                if not self._consumer.thread.is_alive():
                    return 'cold', self._failed('the consumer thread stopped'), False
                stuck = self._stuck_agents()
                if stuck:
                    return 'cold', self._failed(stuck), False
            elif event == 'dump':
                platform.dump_stacks(f'slot {self.index}')
            elif isinstance(event, Failure):
                return 'cold', self._failed(event, event.code), False
            elif event == 'handover':
                log.info('warm shutdown requested, for a replacement')
                self._handing_over = True
                return 'warm', EX_OK, False
            else:
                log.info('%s shutdown requested', event)
                return event, EX_OK, True

    def _stuck_agents(self) -> str | None:
        """Log the stack of every agent thread stuck for ``stuck_timeout`` (no progress while
        records wait for it; time without Kafka does not count) and of every timer whose
        tick has run that long; the reason to stop, or None."""
        now = time.monotonic()
        if self.status.kafka_lost is not None:
            self._kafka_lost_seen = now
        since = now - self.settings.stuck_timeout
        if self._kafka_lost_seen >= since:
            return None
        stuck = [(agent_threads.agent.name, thread, place) for agent_threads in self._agents
                 for thread, place in agent_threads.stuck(since)]
        timers = self._timers.stuck(since) if self._timers is not None else []
        for name, thread, place in stuck:
            log.error('agent %s is stuck: thread %s has made no progress for %gs %s while '
                      'records wait; its stack:\n%s', name, thread.name,
                      self.settings.stuck_timeout, place, platform.stack_of(thread).rstrip())
        for name, thread in timers:
            log.error('timer %s is stuck: its tick has run for more than %gs; its stack:\n%s',
                      name, self.settings.stuck_timeout, platform.stack_of(thread).rstrip())
        reasons = [f'{kind} {", ".join(sorted(names))} stuck for {self.settings.stuck_timeout:g}s'
                   for kind, names in (('agent', {name for name, _, _ in stuck}),
                                       ('timer', {name for name, _ in timers})) if names]
        return '; '.join(reasons) or None

    def _failed(self, reason: str, code: int = EX_SOFTWARE) -> int:
        self.status.failure = reason
        log.error('slot %d is stopping: %s', self.index, reason)
        return code

    def _stop(self, mode: str, leave: bool) -> None:
        """Stop fetching, let agents finish (warm) or abandon (cold), checkpoint, and
        leave the group if ``leave``.  A stop for good (TERM) during a stop that keeps
        the membership (a handover, a failure) makes it leave: no successor or restart
        comes back under this identity then."""
        self.status.phase = 'stopping'
        logs.stopping()
        drain = mode == 'warm'
        deadline = time.monotonic() + (self.settings.graceful_timeout if drain else COLD_GRACE)
        self._finish_timers(drain, deadline)
        self._stop_workers(drain, deadline, leave)
        while self._consumer.thread.is_alive():
            self._report()
            event = self._events.get(timeout=0.05)
            if event == 'dump':
                platform.dump_stacks(f'slot {self.index}')
            elif event == 'warm' and not leave:
                log.info('stop for good requested: leaving the group after all')
                leave = True
                self._consumer.stop(drain, deadline, leave)
            elif drain and (event == 'cold' or isinstance(event, Failure)):
                log.warning('escalating to a cold shutdown')
                drain, deadline = False, time.monotonic() + COLD_GRACE
                self._stop_workers(drain, deadline, leave)
            if time.monotonic() > deadline + COLD_GRACE:
                log.error('the consumer did not stop in time; exiting anyway')
                break
        for agent_threads in self._agents:
            agent_threads.join(COLD_GRACE if drain else 0.0)
        self.status.phase = 'stopped'
        self._report()
        log.info('slot %d stopped', self.index)

    def _close(self) -> None:
        """Stop the changelog reader and the producer.  Stores close by themselves when
        their last reference goes; one still held (an agent stuck in user code, a web
        request) is let go by the process exit, which LevelDB survives."""
        logs.stopping()
        if self._state is not None:
            self._state.reader.stop()
            self._state.reader.thread.join(COLD_GRACE)
        if self._global_tables is not None:
            self._global_tables.stop()
            self._global_tables.thread.join(COLD_GRACE)
        for producer in (self._producer, self._plain_producer):
            if producer is not None:
                producer.close(COLD_GRACE)

    def _report(self) -> None:
        """Tell the main process how this slot is doing: its heartbeat, sent by the
        slot's main thread, which neither agents nor commits block."""
        self.status.tick()
        if self._throughput.sample():      # once a second: the status file changes no faster
            self._progress = self.status.progress()
        if self._report_to is None:
            return
        live, _ = self.status.live()
        ready, reason = self.status.ready()
        self._report_to({
            'phase': self.status.phase, 'live': live, 'ready': ready, 'reason': reason,
            'web': self._web_address, 'graceful_timeout': self.settings.graceful_timeout,
            'heartbeat_timeout': self.settings.heartbeat_timeout,
            'assignment': sorted(f'{tp.topic}:{tp.partition}' for tp in self.status.assignment),
            'stopped': self.status.stopped(),
            'progress': self._progress,
        })

    def _finish_timers(self, drain: bool, deadline: float) -> None:
        """No tick starts from now on; a warm stop waits (until ``deadline``) for the ticks
        under way, so their table writes are in the last checkpoint."""
        if self._timers is None:
            return
        self._timers.stop()
        pending = []           # events for the stop that follows
        while drain and self._timers.running() and time.monotonic() < deadline:
            self._report()
            event = self._events.get(timeout=REPORT_INTERVAL)
            if event == 'dump':
                platform.dump_stacks(f'slot {self.index}')
            elif event is not None:
                pending.append(event)
                if event == 'cold' or isinstance(event, Failure):
                    break
        for event in pending:
            self._events.put(event)
        if self._timers.running():
            log.warning('a timer tick is still running as the slot stops; its table writes '
                        'are not committed')

    def _stop_workers(self, drain: bool, deadline: float, leave: bool) -> None:
        for agent_threads in self._agents:
            agent_threads.stop(drain)
        self._consumer.stop(drain, deadline, leave)


def slot_dir(datadir: str, index: int) -> Path:
    """The data directory of slot ``index``: ``{datadir}/slot-{index}``."""
    return Path(datadir) / f'slot-{index}'


def boot(options: Options, index: int, report_fd: int, main_pid: int,
         successor: bool = False, web_fd: int | None = None) -> int:
    """Run slot ``index`` in a child just forked by the main process; returns its exit code.

    The app is imported here, after the fork, so a restarted slot runs the code
    deployed now.  Errors are reported to the main process, which speaks for them.
    A ``successor`` replaces a running slot (see :mod:`runner.main.rolling`).
    ``web_fd``: the listening socket its web server serves (see
    :mod:`runner.main.listeners`).
    """
    platform.die_with_parent(main_pid)
    platform.mark_slot()
    reporter = Reporter(report_fd)
    logs.retag('slot', index)
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: platform.dump_stacks(
        f'slot {index} loading the app'))           # the slot's own handler replaces it
    try:
        app = load_app(options.app)
        settings = options.settings_for(app.settings, index)
        reporter.send({'loaded': True})             # the import timeout no longer applies
        logs.setup(settings.loglevel, settings.logfile, 'slot', settings.secrets(),
                   settings.log_format, index)
        platform.set_title(f'runner: slot {index} {app.name}')
        listener = None if web_fd is None else socket.socket(fileno=web_fd)
        return Slot(app, settings, index, reporter.send, successor, listener).run()
    except RunnerError as exc:
        log.debug('slot %d could not start: %s', index, exc)
        reporter.send({'error': str(exc), 'code': exc.exit_code})
        return exc.exit_code
    except BaseException:
        log.exception('slot %d crashed', index)
        return EX_SOFTWARE
    finally:
        logging.shutdown()

