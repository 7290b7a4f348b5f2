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
from collections.abc import Callable
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


def _patch(owner: type, name: str, wrap: Callable[[Any], Any]) -> None:
    """Replace ``owner.name`` by ``wrap(original)``, once per process: a second install
    finds the patched one (marked ``runner_fix``) and leaves it."""
    original = getattr(owner, name)
    if getattr(original, 'runner_fix', False):
        return
    patched = wrap(original)
    patched.runner_fix = True
    setattr(owner, name, patched)


def _forget_drained_records() -> None:
    def wrap(fetch_records: Callable[..., Any]) -> Callable[..., Any]:
        def patched(fetcher: Fetcher, *args: Any, **kwargs: Any) -> Any:
            pending = fetcher._next_partition_records
            if pending is not None and not pending:
                fetcher._next_partition_records = None
            return fetch_records(fetcher, *args, **kwargs)
        return patched
    _patch(Fetcher, 'fetch_records', wrap)


def _keep_joining_until_done() -> None:
    def wrap(need_rejoin: Callable[..., bool]) -> Callable[..., bool]:
        def patched(coordinator: ConsumerCoordinator) -> bool:
            return coordinator.rejoining or need_rejoin(coordinator)
        return patched
    _patch(ConsumerCoordinator, 'need_rejoin', wrap)


def _raise_once_fenced() -> None:
    def remember(send_heartbeat: Callable[..., Any]) -> Callable[..., Any]:
        async def remembering(coordinator: BaseCoordinator) -> Any:
            try:
                return await send_heartbeat(coordinator)
            except FencedInstanceIdError:
                coordinator.runner_fenced = True
                raise
        return remembering

    def raise_once_known(poll: Callable[..., Any]) -> Callable[..., Any]:
        def raising(coordinator: ConsumerCoordinator, *args: Any, **kwargs: Any) -> Any:
            if getattr(coordinator, 'runner_fenced', False):
                raise FencedInstanceIdError(f'group instance id {coordinator.group_instance_id} '
                                            'was taken over by another member')
            return poll(coordinator, *args, **kwargs)
        return raising
    _patch(BaseCoordinator, '_send_heartbeat_request', remember)
    _patch(ConsumerCoordinator, 'poll', raise_once_known)


def _register_sockets_without_lookup_errors() -> None:
    def wrap(register_event: Callable[..., None]) -> Callable[..., None]:
        def patched(net: NetworkSelector, fileobj: Any, event: int, task: Any) -> None:
            if _registered(net._selector, fileobj):
                register_event(net, fileobj, event, task)
                return
            task = task if isinstance(task, Task) else Task(task)
            net._selector.register(fileobj, event, (task, None) if event == selectors.EVENT_READ
                                   else (None, task))
        return patched
    _patch(NetworkSelector, 'register_event', wrap)


def _registered(selector: selectors.BaseSelector, fileobj: Any) -> bool:
    """Whether ``fileobj`` is in ``selector``, without the KeyError of ``get_key``."""
    try:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
    except (AttributeError, ValueError, OSError):
        return True             # let kafka-python's own look-up decide
    return fd in selector._fd_to_key


def _known_coordinator_is_ready() -> None:
    def wrap(ensure_ready: Callable[..., bool]) -> Callable[..., bool]:
        def answered_here(coordinator: BaseCoordinator, *args: Any, **kwargs: Any) -> bool:
            node = coordinator.coordinator_id
            if node is not None and coordinator._client.connected(node):
                return True
            return ensure_ready(coordinator, *args, **kwargs)
        return answered_here
    _patch(BaseCoordinator, 'ensure_coordinator_ready', wrap)


def _split_bulk_batches_by_record() -> None:
    def wrap(split: Callable[..., Any]) -> Callable[..., Any]:
        def patched(accumulator: RecordAccumulator, batch: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(batch, 'runner_follow', None) is not None:
                batches.split_into_records(batch)
            return split(accumulator, batch, *args, **kwargs)
        return patched
    _patch(RecordAccumulator, 'split_and_reenqueue', wrap)


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
