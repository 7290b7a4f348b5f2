"""Workarounds for two kafka-python 3.0.x bugs that stall a consumer; applied on import.

1. A paused partition whose fetched records were only partly returned is
   parked; ``Fetcher.fetch_records`` restores parked records only when its
   "next records" slot is ``None``, but a drained batch stays in that slot,
   so after ``resume()`` the partition is never fetched again.  Back-pressure
   pauses exactly such partitions.  Fix: a drained batch counts as empty.
2. When the group leader notices changed metadata, ``need_rejoin()`` is true
   only until the leader's own assignment records that metadata; a ``poll()``
   that times out between JoinGroup and SyncGroup then never completes the
   join, leaving the member's partitions marked as being revoked.  Fix: a
   join in progress is always a reason to keep joining.
"""

from kafka.consumer.fetcher import Fetcher
from kafka.coordinator.consumer import ConsumerCoordinator


def _forget_drained_records() -> None:
    fetch_records = Fetcher.fetch_records
    if getattr(fetch_records, 'runner_fix', False):
        return

    def patched(fetcher: Fetcher, *args, **kwargs):
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


_forget_drained_records()
_keep_joining_until_done()
