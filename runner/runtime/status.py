"""Liveness, readiness and progress of one slot, as the web server reports them (as JSON,
and as the status page: :mod:`runner.runtime.page`) and the main process shows them."""

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka.structs import MemberState

#: A slot is not ready once Kafka has been out of its reach, or its transaction has not
#: ended, for this long (seconds).
KAFKA_GRACE = 2.0
#: The slot's main thread comes round four times a second; a longer gap than this means
#: the process was frozen (stopped with SIGSTOP, swapped out, starved).
FROZEN_GAP = 2.0


class SlotStatus:
    """Written by the slot's threads, read by the web server; every field is a plain value."""

    def __init__(self, app: str, slot: int, stall_timeout: float) -> None:
        self.app = app
        self.slot = slot
        #: The consumer loop is stuck when it has not come round for this long.
        self.stall_timeout = stall_timeout
        self.pid = os.getpid()
        self.started = time.time()
        self.phase = 'starting'            # starting → running → stopping
        self.group_state = MemberState.UNJOINED
        self.generation = -1
        self.assignment: frozenset = frozenset()
        self.failure: str | None = None
        self.last_beat = time.monotonic()
        #: Since when (monotonic) the process has run without being frozen.
        self.awake_since = time.monotonic()
        self._last_tick = time.monotonic()
        self.threads: list[threading.Thread] = []
        self.offsets: Callable[[], dict[str, Any]] = dict
        #: ``topic:partition`` → the record it is stopped at and why (see
        #: :meth:`runner.runtime.queues.Stopped.describe`).
        self.stopped: Callable[[], dict[str, dict[str, Any]]] = dict
        #: Agent name → records it dead-lettered, skipped and tried again.
        self.agents: Callable[[], dict[str, dict[str, int]]] = dict
        #: Table partitions still recovering (as ``table[p]``), and changelog records left
        #: (None until known).
        self.recovery: Callable[[], tuple[list[str], int | None]] = lambda: ([], 0)
        #: Why the slot's global tables keep it from being ready (still loading), or None.
        self.global_loading: Callable[[], str | None] = lambda: None
        #: Per global table: its changelog offsets here, whether it is loaded and the
        #: records read since the start (see ``GET /tables``).
        self.global_tables: Callable[[], list[dict[str, Any]]] = list
        #: Changelog topic → web address of the owner of each partition (last rebalance).
        self.owners: dict[str, list[str | None]] = {}
        #: This slot's web address, as the other members reach it.
        self.web: str | None = None
        #: The web addresses of the group's members, this slot's included.
        self.members: Callable[[], list[str]] = list
        #: Log end offset (as last fetched) minus committed offset, per partition.
        self.lag: Callable[[], dict[Any, int]] = dict
        #: Records processed per second over the last minute, per partition (those it
        #: had in that minute: ``GET /`` shows the assigned ones, and counts all in its total).
        self.rates: Callable[[], dict[Any, float]] = dict
        #: Per table: its partitions here, active, recovering and standby (see ``GET /tables``).
        self.tables: Callable[[], list[dict[str, Any]]] = list
        #: The last rebalances, oldest first (see :meth:`runner.kafka.assignor.Change.describe`).
        self.rebalances: Callable[[], list[dict[str, Any]]] = list
        #: The last records retried, skipped or dead-lettered, oldest first (see
        #: :attr:`runner.runtime.policy.ErrorPolicy.recent`).
        self.errors: Callable[[], list[dict[str, Any]]] = list
        #: Why the group left topics of this slot unassigned (their partition count changed
        #: away from their tables'), or None.
        self.unassigned: str | None = None
        #: Whether this slot leads the app, and each timer's ticks, skipped and failed ticks.
        self.timers: Callable[[], dict[str, Any]] = dict
        #: Since when (monotonic) this slot cannot reach Kafka, or None.
        self.kafka_lost: float | None = None
        #: Since when (monotonic) the consumer loop waits for a transaction to end, or None.
        self.committing: float | None = None

    def tick(self) -> None:
        """Called by the slot's main thread every time it comes round."""
        now = time.monotonic()
        if now - self._last_tick > FROZEN_GAP:
            self.awake_since = now
        self._last_tick = now

    def beat(self) -> None:
        """Called by the consumer loop on every round."""
        self.last_beat = time.monotonic()

    def live(self) -> tuple[bool, str]:
        if self.failure:
            return False, self.failure
        dead = [thread.name for thread in self.threads if not thread.is_alive()]
        if dead and self.phase == 'running':
            return False, f'threads stopped: {", ".join(dead)}'
        stalled = time.monotonic() - self.last_beat
        if self.phase == 'running' and stalled > self.stall_timeout:
            return False, f'consumer loop stalled for {stalled:.0f}s'
        return True, self.phase

    def ready(self) -> tuple[bool, str]:
        live, reason = self.live()
        if not live:
            return False, reason
        waiting = (self.global_loading() or self._starting() or self._waiting_for_kafka()
                   or self._joining() or self.unassigned or self._recovering())
        if waiting:
            return False, waiting
        return True, 'processing'

    def _starting(self) -> str | None:
        """The phase, while it is not ``running``."""
        return self.phase if self.phase != 'running' else None

    def _waiting_for_kafka(self) -> str | None:
        """Why the slot waits on Kafka: unreachable, or a commit that takes too long."""
        lost = self.kafka_lost
        if lost is not None and time.monotonic() - lost >= KAFKA_GRACE:
            return f'waiting for Kafka ({time.monotonic() - lost:.0f}s)'
        committing = self.committing
        if committing is not None and time.monotonic() - committing >= KAFKA_GRACE:
            return (f'waiting for the commit of the transaction '
                    f'({time.monotonic() - committing:.0f}s)')
        return None

    def _joining(self) -> str | None:
        """Why the slot is not a stable member of its consumer group, if it is not."""
        if self.group_state != MemberState.STABLE or self.generation < 0:
            return 'joining the consumer group' if self.generation < 0 else 'rebalancing'
        return None

    def _recovering(self) -> str | None:
        """Which tables are still recovering from their changelogs, and how far."""
        recovering, remaining = self.recovery()
        if not recovering:
            return None
        left = ('reading where their changelogs end' if remaining is None
                else f'{remaining} changelog records remaining')
        return f'recovering tables {", ".join(recovering)}: {left}'

    def describe(self) -> dict[str, Any]:
        live, _ = self.live()
        ready, reason = self.ready()
        rates = self.rates()
        assigned = {f'{tp.topic}:{tp.partition}' for tp in self.assignment}
        return {
            'app': self.app,
            'slot': self.slot,
            'pid': self.pid,
            'phase': self.phase,
            'live': live,
            'ready': ready,
            'reason': reason,
            'uptime': round(time.time() - self.started, 3),
            'group': {'state': self.group_state.strip('<>'), 'generation': self.generation},
            'assignment': sorted(f'{tp.topic}:{tp.partition}' for tp in self.assignment),
            **self.offsets(),
            'stopped': self.stopped(),
            'agents': self.agents(),
            **self.timers(),
            'web': self.web,
            'members': self.members(),
            'lag': _named(self.lag()),
            'rates': {tp: round(rate, 2) for tp, rate in _named(rates).items()
                      if tp in assigned},
            'rate': round(sum(rates.values()), 2),
            'tables': self.tables(),
            'global_tables': self.global_tables(),
            'recovery': self._recovery(),
            'rebalance_history': self.rebalances(),
            'errors': self.errors(),
        }

    def progress(self) -> dict[str, Any]:
        """What ``runner status`` shows of this slot beside its state: records per second
        over the last minute, lag, recovery and the last rebalance (its time and cause)."""
        last = (self.rebalances() or [None])[-1]
        return {'rate': round(sum(self.rates().values()), 2), 'lag': sum(self.lag().values()),
                'recovery': self._recovery(),
                'rebalanced': last and {'at': last['at'], 'cause': last['cause']}}

    def _recovery(self) -> dict[str, Any]:
        """Table partitions recovering (as ``table[p]``) and changelog records remaining
        (None until known)."""
        recovering, remaining = self.recovery()
        return {'partitions': recovering, 'remaining': remaining}


def _named(by_partition: dict[Any, Any]) -> dict[str, Any]:
    """``TopicPartition`` keys as ``topic:partition``, in order."""
    return {f'{tp.topic}:{tp.partition}': value for tp, value in sorted(by_partition.items())}
