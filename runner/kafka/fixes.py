"""Workarounds for kafka-python bugs that stall a consumer, the private parts of
kafka-python the runner relies on, and its leaner reading of fetched records
(:mod:`.records`).

All of them touch kafka-python's private attributes, so they are applied only to the
versions they were verified on (:data:`VERIFIED`); :func:`install` refuses any
other version with a one-line error instead of patching code that may have
changed.  ``tests/integration/test_kafka_fixes.py`` reproduces each bug.

1. A paused partition whose fetched records were only partly returned is
   parked; ``Fetcher.fetch_records`` restores parked records only when its
   "next records" slot is ``None``, but a drained batch stays in that slot, so
   after ``resume()`` the partition is never fetched again.  Back-pressure
   pauses exactly such partitions.  Fix: a drained batch counts as empty.
2. When the group leader notices changed metadata, ``need_rejoin()`` is true
   only until the leader's own assignment records that metadata; a ``poll()``
   that times out between JoinGroup and SyncGroup then never completes the
   join, leaving the member's partitions marked as being revoked.  Fix: a join
   in progress is always a reason to keep joining.
3. A static member whose group instance id another member has taken over (its
   data directory was copied) is told so by its heartbeat, which then stops;
   but ``poll()`` goes on returning records, and only a commit would fail.  The
   member works on, unaware, writing to changelogs that are no longer its own.
   Fix: once fenced, the coordinator's ``poll()`` raises ``FencedInstanceIdError``.
4. Not a stall but a cost: every wait for a socket (each send and fetch) registers
   it with the IO loop's selector, which first looks it up with ``get_key``; for a
   socket not yet registered that raises a KeyError whose message formats the
   socket's ``repr`` (about 10 µs, a few per cent of a busy slot).  Fix: a socket
   not in the selector is registered without the failed look-up.
5. A cost too: every ``poll()`` asks the IO thread whether the group coordinator is
   known (``ensure_coordinator_ready``), a round trip between threads even when it
   is known and connected, which is then the answer.  Fix: that case is answered on
   the calling thread; the IO thread still looks for a coordinator that is unknown
   or disconnected.
6. The changelog's batches are built in bulk (:mod:`.batches`), with no future per
   record; a batch the broker finds too large is split by kafka-python, which moves
   each record's future to the smaller batches.  Fix: such a batch is given its
   futures per record just before kafka-python splits it.
"""

import selectors
from typing import Any

import kafka
from kafka.consumer.fetcher import Fetcher
from kafka.coordinator.base import BaseCoordinator
from kafka.coordinator.consumer import ConsumerCoordinator
from kafka.errors import FencedInstanceIdError
from kafka.net.selector import NetworkSelector, Task
from kafka.producer.record_accumulator import RecordAccumulator

from ..errors import ConfigError
from . import batches, records

#: kafka-python versions these workarounds were verified on.
VERIFIED = ('3.0.12',)


def install(lean_reading: bool = True) -> None:
    """Check the installed kafka-python and patch it (once per process); with
    ``lean_reading``, records are also read by :mod:`.records` (a benchmark of raw
    kafka-python leaves that out)."""
    if kafka.__version__ not in VERIFIED:
        raise ConfigError(f'kafka-python {kafka.__version__} is installed, but runner is '
                          f'verified with {", ".join(VERIFIED)} only: pip install '
                          f'"kafka-python=={VERIFIED[-1]}"')
    _forget_drained_records()
    _keep_joining_until_done()
    _raise_once_fenced()
    _register_sockets_without_lookup_errors()
    _known_coordinator_is_ready()
    if lean_reading:
        records.install()
    _split_bulk_batches_by_record()


def _forget_drained_records() -> None:
    fetch_records = Fetcher.fetch_records
    if getattr(fetch_records, 'runner_fix', False):
        return

    def patched(fetcher: Fetcher, *args: Any, **kwargs: Any) -> Any:
        pending = fetcher._next_partition_records
        if pending is not None and not pending:
            fetcher._next_partition_records = None
        return fetch_records(fetcher, *args, **kwargs)
    patched.runner_fix = True
    Fetcher.fetch_records = patched


def _keep_joining_until_done() -> None:
    need_rejoin = ConsumerCoordinator.need_rejoin
    if getattr(need_rejoin, 'runner_fix', False):
        return

    def patched(coordinator: ConsumerCoordinator) -> bool:
        return coordinator.rejoining or need_rejoin(coordinator)
    patched.runner_fix = True
    ConsumerCoordinator.need_rejoin = patched


def _raise_once_fenced() -> None:
    send_heartbeat = BaseCoordinator._send_heartbeat_request
    if getattr(send_heartbeat, 'runner_fix', False):
        return

    async def remembering(coordinator: BaseCoordinator) -> Any:
        try:
            return await send_heartbeat(coordinator)
        except FencedInstanceIdError:
            coordinator.runner_fenced = True
            raise
    remembering.runner_fix = True
    BaseCoordinator._send_heartbeat_request = remembering
    poll = ConsumerCoordinator.poll

    def raising(coordinator: ConsumerCoordinator, *args: Any, **kwargs: Any) -> Any:
        if getattr(coordinator, 'runner_fenced', False):
            raise FencedInstanceIdError(f'group instance id {coordinator.group_instance_id} '
                                        'was taken over by another member')
        return poll(coordinator, *args, **kwargs)
    ConsumerCoordinator.poll = raising


def _register_sockets_without_lookup_errors() -> None:
    register_event = NetworkSelector.register_event
    if getattr(register_event, 'runner_fix', False):
        return

    def patched(net: NetworkSelector, fileobj: Any, event: int, task: Any) -> None:
        if _registered(net._selector, fileobj):
            register_event(net, fileobj, event, task)
            return
        task = task if isinstance(task, Task) else Task(task)
        net._selector.register(fileobj, event, (task, None) if event == selectors.EVENT_READ
                               else (None, task))
    patched.runner_fix = True
    NetworkSelector.register_event = patched


def _registered(selector: selectors.BaseSelector, fileobj: Any) -> bool:
    """Whether ``fileobj`` is in ``selector``, without the KeyError of ``get_key``."""
    try:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
    except (AttributeError, ValueError, OSError):
        return True             # let kafka-python's own look-up decide
    return fd in selector._fd_to_key


def _known_coordinator_is_ready() -> None:
    ensure_ready = BaseCoordinator.ensure_coordinator_ready
    if getattr(ensure_ready, 'runner_fix', False):
        return

    def answered_here(coordinator: BaseCoordinator, *args: Any, **kwargs: Any) -> bool:
        node = coordinator.coordinator_id
        if node is not None and coordinator._client.connected(node):
            return True
        return ensure_ready(coordinator, *args, **kwargs)
    answered_here.runner_fix = True
    BaseCoordinator.ensure_coordinator_ready = answered_here
def _split_bulk_batches_by_record() -> None:
    split = RecordAccumulator.split_and_reenqueue
    if getattr(split, 'runner_fix', False):
        return

    def patched(accumulator: RecordAccumulator, batch: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(batch, 'runner_follow', None) is not None:
            batches.split_into_records(batch)
        return split(accumulator, batch, *args, **kwargs)
    patched.runner_fix = True
    RecordAccumulator.split_and_reenqueue = patched


def reaches_kafka(consumer: kafka.KafkaConsumer) -> bool:
    """Whether the consumer knows its group coordinator: a member that cannot reach the
    cluster loses it at its next failed heartbeat (every fraction of a second)."""
    return not consumer._coordinator.coordinator_unknown()


def request_rebalance(consumer: kafka.KafkaConsumer) -> None:
    """Ask the group for a rebalance at the next poll (a member that has warmed a task up
    asks for it this way); kafka-python's coordinator does the same after a cooperative
    revocation."""
    consumer._coordinator.request_rejoin()


async def io_sleep(consumer: kafka.KafkaConsumer, seconds: float) -> None:
    """Sleep inside a rebalance listener without stopping the consumer's IO loop.

    kafka-python has no public sleep for listener coroutines; its coordinator
    awaits the IO loop's own sleep the same way.
    """
    await consumer._net.sleep(seconds)
