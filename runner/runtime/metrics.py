"""The slot's Prometheus metrics, served at ``GET /metrics`` (see ``docs/ops/observability.rst``).

Nothing here is touched per record.  Records processed are counted by each
:class:`runner.runtime.stream.Stream` per batch, in a plain dict; the error
policies keep their own counts; lag and queued records are read from the
consumer loop.  :class:`SlotCollector` reads all of it when Prometheus scrapes.
Events that happen once per checkpoint or rebalance update ordinary
``prometheus_client`` metrics of :class:`SlotMetrics`.
"""

import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from ..reports import LAST_EXIT_ENV, RESTARTS_ENV
from .status import SlotStatus

# No ``_created`` series beside each counter: they double the series and nothing reads them.
disable_created_metrics()

#: Checkpoint durations (seconds): commits take milliseconds, transactions up to seconds.
CHECKPOINT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Batch durations (seconds): a batch is up to max_poll_records records.
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Record ages at the end of their batch (seconds): from live traffic to a backlog of hours.
AGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
               3600.0)


class SlotMetrics:
    """The slot's registry and the metrics updated by checkpoints and rebalances."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.checkpoint_seconds = Histogram(
            'runner_checkpoint_duration_seconds', 'Time to commit a checkpoint (offsets, '
            'changelogs, and the transaction under exactly-once).', registry=registry,
            buckets=CHECKPOINT_BUCKETS)
        self.offsets_committed = Counter(
            'runner_offsets_committed_total', 'Partition offsets committed.', registry=registry)
        self.changelog_records = Counter(
            'runner_changelog_records_sent_total', 'Changelog records sent by checkpoints.',
            registry=registry)
        self.transactions = Counter(
            'runner_transactions_total', 'Transactions ended under exactly-once, by outcome.',
            ['outcome'], registry=registry)
        self.partitions_revoked = Counter(
            'runner_partitions_revoked_total', 'Partitions taken from this slot by rebalances.',
            registry=registry)
        self.partitions_kept = Counter(
            'runner_partitions_kept_total', 'Partitions a rebalance left with this slot.',
            registry=registry)
        self.handover_seconds = Histogram(
            'runner_rebalance_handover_seconds', 'How long the partitions a rebalance took '
            'from this slot paused while it handed them over (their last commit).',
            registry=registry, buckets=CHECKPOINT_BUCKETS)
        self.batch_seconds = Histogram(
            'runner_batch_duration_seconds', 'Time an agent took over a batch of records, from '
            'taking it to finishing it.', ['agent'], registry=registry, buckets=BATCH_BUCKETS)
        self.record_age = Histogram(
            'runner_record_age_seconds', 'End-to-end latency: the age (from its timestamp) of '
            'the last record of a batch when its agent finished the batch.', ['agent'],
            registry=registry, buckets=AGE_BUCKETS)
        self.partitions_assigned = Counter(
            'runner_partitions_assigned_total', 'Partitions given to this slot by rebalances.',
            registry=registry)

    def batch_timing(self, agent: str) -> 'BatchTiming':
        """What one agent's streams call once per batch they finish."""
        return BatchTiming(self.batch_seconds.labels(agent), self.record_age.labels(agent))

    def scrape(self) -> tuple[str, bytes]:
        """The content type and body of ``GET /metrics``."""
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)


class BatchTiming:
    """Observes, once per batch (never per record), how long an agent took over it and how
    old its last record was then."""

    def __init__(self, duration: Histogram, age: Histogram) -> None:
        self._duration = duration
        self._age = age

    def __call__(self, taken_at: float, timestamp_ms: int) -> None:
        """A batch taken at ``taken_at`` (monotonic) is finished; its last record has
        ``timestamp_ms`` (negative: none)."""
        self._duration.observe(time.monotonic() - taken_at)
        if timestamp_ms >= 0:
            self._age.observe(max(0.0, time.time() - timestamp_ms / 1000))


class SlotCollector(Collector):
    """Reads, at scrape time, what the slot counts anyway.

    ``agents`` returns the slot's :class:`runner.runtime.agents.AgentThreads`;
    ``consumer`` the consumer loop, ``state`` its
    :class:`runner.state.manager.StateManager` and ``global_tables`` its
    :class:`runner.state.globals.GlobalReader` (None before they start, or without
    tables).
    """

    def __init__(self, status: SlotStatus, agents: Callable[[], Iterable[Any]],
                 consumer: Callable[[], Any], state: Callable[[], Any] = lambda: None,
                 environ: dict[str, str] | None = None,
                 global_tables: Callable[[], Any] = lambda: None) -> None:
        self._status = status
        self._agents = agents
        self._consumer = consumer
        self._state = state
        self._global_tables = global_tables
        environ = os.environ if environ is None else environ
        self._restarts = int(environ.get(RESTARTS_ENV, '0'))
        self._last_exit = environ.get(LAST_EXIT_ENV)

    def describe(self) -> Iterable[Metric]:
        return []        # collected on every scrape: nothing fixed to describe

    def collect(self) -> Iterator[Metric]:
        yield from self._agent_metrics()
        yield from self._consumer_metrics()
        yield from self._table_metrics()
        yield from self._global_table_metrics()
        yield from self._slot_metrics()

    def _agent_metrics(self) -> Iterator[Metric]:
        processed = CounterMetricFamily(
            'runner_records_processed', 'Records processed by an agent (per batch).',
            labels=['agent', 'topic', 'partition'])
        policy = {what: CounterMetricFamily(f'runner_records_{what}', help_text,
                                            labels=['agent'])
                  for what, help_text in POLICY_COUNTS.items()}
        for threads in self._agents():
            name = threads.agent.name
            for tp, count in sorted(threads.processed().items()):
                processed.add_metric([name, tp.topic, str(tp.partition)], count)
            for what, count in dict(threads.policy.counts).items():
                policy[what].add_metric([name], count)
        yield processed
        yield from policy.values()

    def _consumer_metrics(self) -> Iterator[Metric]:
        consumer = self._consumer()
        if consumer is None:
            return
        yield per_partition('runner_consumer_lag_records', 'Log end offset (as last fetched) '
                            'minus committed offset, per partition.', consumer.lag())
        yield per_partition('runner_records_queued', "Records fetched and waiting in the "
                            "slot's queues (for its slowest agent).", consumer.backlog())
        yield CounterMetricFamily('runner_rebalances_total', 'Rebalances this slot went '
                                  'through.', value=consumer.rebalances)

    def _table_metrics(self) -> Iterator[Metric]:
        state = self._state()
        if state is None:
            return
        yield per_partition('runner_table_size_bytes', 'Bytes on disk of each table partition '
                            'open in the slot (active, standby or recovering).',
                            state.disk_usage(), 'table')
        recovering, remaining = state.recovering()
        yield GaugeMetricFamily('runner_table_partitions_recovering', 'Table partitions '
                                'being recovered from their changelogs.', value=len(recovering))
        if remaining is not None:
            yield GaugeMetricFamily('runner_table_recovery_remaining_records', 'Changelog '
                                    'records left to read before the recovering partitions '
                                    'are ready.', value=remaining)

    def _global_table_metrics(self) -> Iterator[Metric]:
        reader = self._global_tables()
        if reader is None:
            return
        read = CounterMetricFamily('runner_global_table_records_read', 'Changelog records a '
                                   'global table has read since the slot started.',
                                   labels=['table'])
        for name, count in sorted(dict(reader.read).items()):
            read.add_metric([name], count)
        yield read
        yield GaugeMetricFamily('runner_global_tables_loaded', '1 once the global tables have '
                                'read their changelogs to their ends as of the slot\'s start.',
                                value=1 if reader.loaded.is_set() else 0)

    def _slot_metrics(self) -> Iterator[Metric]:
        status = self._status
        yield GaugeMetricFamily('runner_kafka_reachable', '1 while the slot reaches Kafka.',
                                value=0 if status.kafka_lost is not None else 1)
        yield GaugeMetricFamily('runner_slot_ready', '1 while the slot is ready.',
                                value=1 if status.ready()[0] else 0)
        yield CounterMetricFamily('runner_slot_restarts', 'Times the main process restarted '
                                  'this slot number after an unexpected exit.',
                                  value=self._restarts)
        if self._last_exit is not None:
            exit_code = GaugeMetricFamily('runner_slot_last_exit_code', 'Exit code of the '
                                          'process this slot replaced (negative: killed by '
                                          'that signal).')
            exit_code.add_metric([], int(self._last_exit))
            yield exit_code


def per_partition(name: str, documentation: str, values: dict[tuple[str, int], int],
                  owner: str = 'topic') -> GaugeMetricFamily:
    """A gauge of ``values`` by (topic or table, partition number)."""
    gauge = GaugeMetricFamily(name, documentation, labels=[owner, 'partition'])
    for (of, number), value in sorted(values.items()):
        gauge.add_metric([of, str(number)], value)
    return gauge


#: The error policy's counts (:attr:`runner.runtime.policy.ErrorPolicy.counts`), exported.
POLICY_COUNTS = {
    'failed': 'Records an agent raised on (each try).',
    'retried': 'Records tried again after the agent raised.',
    'dead_lettered': 'Records sent to the dead-letter topic.',
    'skipped': 'Records skipped after the agent raised (on_error skip).',
}
